"""What one running service holds: the current model (hot-swappable), the batcher, recent predictions, the shipper.

The model is swapped by replacing one reference after the new one is fully loaded, so a
request in flight finishes on the model it started with and no request ever fails at a switch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from app.config import Settings
from app.events import schema as events
from app.model.registry import current_adapter_dir
from app.model.vqa import VQAModel
from app.serving.batching import Batcher
from app.serving.receipts import Receipts
from app.threads import SupervisedThread

log = logging.getLogger(__name__)


class ModelHolder:
    """Loads the model in the background and swaps in newly promoted adapters."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.current: VQAModel | None = None
        self.error: str | None = None
        self.loaded_adapter: Path | None = None
        self._reload_lock = threading.Lock()
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._loop: SupervisedThread | None = None
        self.on_switch = None  # callable(old_versions, new_versions), set by the app

    def start(self) -> None:
        """Load the model, then watch `CURRENT`, in a supervised thread (a crash restarts the loop)."""
        if self._loop is None:
            self._loop = SupervisedThread("adapter-reload", self._run, stop_requested=self._stop.is_set)
            self._loop.start()

    def wait_ready(self, timeout: float = 120.0) -> bool:
        return self._ready.wait(timeout) and self.current is not None

    def stop(self) -> None:
        self._stop.set()
        if self._loop is not None:
            self._loop.join(timeout=5)

    def health(self) -> tuple[str, str]:
        """The reload loop's state for /readyz: ok, degraded (crashed and restarted lately) or failing."""
        if self._loop is None:
            return "ok", "not started"
        if self.settings.reload_poll_seconds <= 0 or self.settings.adapter_dir:
            return "ok", "adapter watching is off (VQA_RELOAD_POLL_SECONDS=0 or VQA_ADAPTER_DIR set)"
        return self._loop.health()

    def _run(self) -> None:
        if not self._ready.is_set():
            try:
                self.reload()
            finally:
                self._ready.set()
        if self.settings.reload_poll_seconds > 0 and not self.settings.adapter_dir:
            while not self._stop.wait(self.settings.reload_poll_seconds):
                self.reload_if_changed()

    def reload_if_changed(self) -> bool:
        try:
            wanted = current_adapter_dir(self.settings)
        except OSError as exc:
            log.warning("cannot read the adapter pointer: %s", exc)
            return False
        if self.current is None:  # the first load failed: keep trying, a fixed model dir then loads
            return self.reload()
        if wanted == self.loaded_adapter:
            return False
        return self.reload()

    def reload(self) -> bool:
        """Load base + the current adapter and swap it in; on failure keep serving the old one."""
        with self._reload_lock:
            adapter = current_adapter_dir(self.settings)
            try:
                fresh = VQAModel.load(self.settings.model_dir, adapter,
                                      max_answer_tokens=self.settings.max_answer_tokens)
            except Exception as exc:  # whatever breaks a candidate (bad files, PEFT, torch), the old one serves on
                error = f"cannot load model {self.settings.model_dir} / adapter {adapter}: {exc}"
                if error != self.error:  # a model dir that stays broken is retried every poll, logged once
                    log.error(error, exc_info=not isinstance(exc, (OSError, ValueError)))
                self.error = error
                if self.current is not None:
                    self.loaded_adapter = adapter  # do not retry a broken adapter every poll
                return False
            old = self.current
            self.current, self.loaded_adapter, self.error = fresh, adapter, None
            if old is not None and self.on_switch is not None:
                self.on_switch(old, fresh)
            return True


class RecentPredictions:
    """A bounded memory of answered requests, so feedback can be checked against them."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._items: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, doc: dict[str, Any]) -> None:
        with self._lock:
            self._items[doc[events.REQUEST_ID]] = doc
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def get(self, request_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self._items.get(request_id)


class Service:
    """Everything a running app holds, kept in `app.extensions["vqa"]`."""

    def __init__(self, settings: Settings, shipper, metrics):
        self.settings = settings
        self.models = ModelHolder(settings)
        self.recent = RecentPredictions(settings.recent_predictions)
        self.shipper = shipper
        self.metrics = metrics
        self.metrics.watch_shipper(shipper)
        self.batcher = Batcher(
            lambda: self.models.current, max_batch=settings.max_batch, wait_ms=settings.batch_wait_ms,
            queue_size=settings.queue_size, timeout_s=settings.request_timeout_s, on_batch=metrics.observe_batch,
            thread_setup=self._torch_threads if settings.torch_threads > 0 else None,
        )
        self.receipts = Receipts(settings.receipt_key)
        self.started = time.time()
        self._es = None
        self.models.on_switch = self._log_switch

    def _torch_threads(self) -> None:
        # PyTorch's thread count (OpenMP's) is per thread: set in the main thread, it does not reach the
        # threads that run the model, which would use every core (docs/BENCHMARKS.md, "Load").
        import torch

        torch.set_num_threads(self.settings.torch_threads)

    def start(self, *, load_model: bool = True) -> None:
        """Start the model thread and, unless told not to, the background model load."""
        self.batcher.start()
        if load_model:
            self.models.start()

    def emit(self, doc: dict[str, Any]) -> None:
        """Log the event line and hand it to the shipper (never waits for Elasticsearch)."""
        events.log_event(doc)
        self.shipper.submit(doc)

    def lookup_prediction(self, request_id: str) -> dict[str, Any] | None:
        """The inference event of `request_id`: from memory, else from Elasticsearch, else None."""
        doc = self.recent.get(request_id)
        if doc is not None or not self.settings.es_url:
            return doc
        from elasticsearch import ApiError, TransportError

        from app.events.elastic import make_client

        try:
            if self._es is None:
                self._es = make_client(self.settings)
            found = self._es.search(
                index=events.index_pattern(self.settings.es_index_prefix), size=1,
                query={"bool": {"filter": [{"ids": {"values": [request_id]}},
                                           {"term": {events.EVENT: events.INFERENCE}}]}},
            )
        except (ApiError, TransportError) as exc:
            log.warning("feedback lookup of %s in Elasticsearch failed: %s", request_id, exc)
            return None
        hits = found["hits"]["hits"]
        return hits[0]["_source"] if hits else None

    def close(self) -> None:
        """Answer what is queued, stop watching for adapters, and flush the shipper."""
        self.batcher.stop()
        self.models.stop()
        self.shipper.close()

    def _log_switch(self, old: VQAModel, new: VQAModel) -> None:
        self.emit(events.make_event(
            events.RELOAD, model_version=new.model_version, adapter_version=new.adapter_version,
            reason=f"switched from {old.model_version}/{old.adapter_version}",
        ))
