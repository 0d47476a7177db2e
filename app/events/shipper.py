"""Ships LOG_EVENTs to Elasticsearch in the background: bounded queue, bulk, retry, disk spool, replay.

`submit()` sits on the /predict path: it never blocks, raises or waits for Elasticsearch. Delivery
is at-least-once and idempotent (each event has a fixed `_id`), so replays never duplicate.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import queue
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import ConnectionTimeout, TransportError
from elasticsearch import ApiError, Elasticsearch

from app.config import Settings
from app.events import schema as events
from app.events.elastic import install_index_template, make_client, public_url
from app.threads import SupervisedThread

log = logging.getLogger(__name__)

STAT_KEYS = ("shipped", "retried", "spooled", "dropped", "queued", "replayed")
REQUEST_TIMEOUT = 5.0
ITEM_RETRIES = 3  # bulk items answered 429/5xx are resent this often before they go to the spool
BACKOFF_START = 0.5
BACKOFF_MAX = 30.0
SPOOL_ROTATE_BYTES = 16 * 1024 * 1024

SEALED = ".jsonl"  # complete spool file, ready to replay
ACTIVE = ".part"  # file a live process appends to (it holds an flock on it)
CLAIMED = ".claimed"  # file a process is replaying (it holds an flock on it)
_WAKE = object()


class _Unavailable(Exception):
    """Elasticsearch could not take a request at all (network, auth, overload): spool and back off."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Spool:
    """JSON-lines files in a directory that several processes (gunicorn workers) may share.

    Each process appends to its own `<host>-<pid>-<token>.part`, holding an flock on it; a file is
    sealed by renaming it to `.jsonl`; a replayer claims a sealed file by renaming it (atomic: one
    process wins) and locks it while it replays. A `.part` or claimed file whose lock is free was left
    by a dead process and is sealed again by the next scan, so no spooled event is lost.
    """

    def __init__(self, directory: str | os.PathLike[str]):
        self.dir = Path(directory)
        self._lock = threading.Lock()
        self._fh: IO[bytes] | None = None
        self._path: Path | None = None
        self._tag = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self._seq = 0

    def append(self, lines: list[bytes]) -> None:
        """Write serialized events (each one JSON line) to this process's active file."""
        with self._lock:
            if self._fh is None:
                self._open()
            assert self._fh is not None
            self._fh.write(b"".join(lines))
            self._fh.flush()
            if self._fh.tell() >= SPOOL_ROTATE_BYTES:
                self._seal_locked()

    def _open(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._seq += 1
        final = self.dir / f"{self._tag}-{self._seq:05d}{ACTIVE}"
        staging = final.with_suffix(ACTIVE + ".new")  # invisible to scans until it is locked
        fh = open(staging, "xb")  # noqa: SIM115 - kept open while this process appends
        fcntl.flock(fh, fcntl.LOCK_EX)
        staging.rename(final)
        self._fh, self._path = fh, final

    def seal(self) -> None:
        """Close the active file and make it replayable (by this or any other process)."""
        with self._lock:
            self._seal_locked()

    def _seal_locked(self) -> None:
        if self._fh is None or self._path is None:
            return
        empty = self._fh.tell() == 0
        if empty:
            self._path.unlink(missing_ok=True)
        else:
            self._path.rename(self._path.with_suffix(SEALED))
        self._fh.close()
        self._fh, self._path = None, None

    def has_active(self) -> bool:
        with self._lock:
            return self._fh is not None and self._fh.tell() > 0

    def has_pending(self) -> bool:
        """Anything to replay here: sealed files, orphaned ones, or this process's own active file."""
        if self.has_active():
            return True
        try:
            with os.scandir(self.dir) as it:
                return any(e.name.endswith((SEALED, ACTIVE)) or CLAIMED in e.name for e in it)
        except FileNotFoundError:
            return False

    def recover_orphans(self) -> int:
        """Seal files whose writer or replayer died (its flock is free); returns how many."""
        recovered = 0
        try:
            entries = list(os.scandir(self.dir))
        except FileNotFoundError:
            return 0
        for entry in entries:
            path = Path(entry.path)
            if path == self._path:
                continue
            if entry.name.endswith(ACTIVE):
                target = path.with_suffix(SEALED)
            elif CLAIMED in entry.name:
                target = path.with_name(entry.name.split(CLAIMED)[0])
            else:
                continue
            if self._lock_free(path):
                try:
                    path.rename(target)
                    recovered += 1
                except FileNotFoundError:
                    pass
        return recovered

    @staticmethod
    def _lock_free(path: Path) -> bool:
        try:
            with open(path, "rb") as fh:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return False
                fcntl.flock(fh, fcntl.LOCK_UN)
                return True
        except FileNotFoundError:
            return False

    def claim(self) -> Iterator[tuple[Path, IO[bytes]]]:
        """Yield sealed files this process won, each open and locked; delete or release each one."""
        try:
            names = sorted(e.name for e in os.scandir(self.dir) if e.name.endswith(SEALED))
        except FileNotFoundError:
            return
        for name in names:
            claimed = self.dir / f"{name}{CLAIMED}-{self._tag}"
            try:
                (self.dir / name).rename(claimed)
            except FileNotFoundError:
                continue  # another process claimed it first
            fh = open(claimed, "rb")  # noqa: SIM115 - closed by done()/release()
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield claimed, fh

    @staticmethod
    def done(path: Path, fh: IO[bytes]) -> None:
        path.unlink(missing_ok=True)
        fh.close()

    @staticmethod
    def release(path: Path, fh: IO[bytes]) -> None:
        """Give a claimed file back (its events go out on a later replay)."""
        path.rename(path.with_name(path.name.split(CLAIMED)[0]))
        fh.close()


class EventShipper:
    """Background delivery of events to `<prefix>-YYYY.MM.DD` indices.

    With an empty `es_url` the shipper is disabled: events reach stdout only (Filebeat's source in
    Kubernetes) and nothing is spooled, so a service without Elasticsearch never fills its disk.
    """

    def __init__(self, settings: Settings, *, backoff_max: float = BACKOFF_MAX):
        self.settings = settings
        self.enabled = bool(settings.es_url)
        self.url = public_url(settings.es_url) if self.enabled else ""
        self.spool = Spool(settings.spool_dir)
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, settings.ship_queue_size))
        self._batch_size = max(1, settings.ship_batch_size)
        self._flush_seconds = max(0.01, settings.ship_flush_seconds)
        self._backoff_max = backoff_max
        self._counts = dict.fromkeys(STAT_KEYS, 0)
        self._counts_lock = threading.Lock()
        self.on_count: Callable[[str, int], None] | None = None  # metrics hook, called from the delivery thread
        self._stop = threading.Event()
        self._thread: SupervisedThread | None = None
        self._client: Elasticsearch | None = None
        self._template_done = False
        self._failures = 0
        self._retry_at = 0.0
        self._status = ("degraded", f"not yet connected to {self.url}")
        self._closed = False

    # --- the request path -----------------------------------------------------------------
    def submit(self, doc: dict[str, Any]) -> None:
        """Hand one event over; returns at once whatever Elasticsearch is doing."""
        if not self.enabled:
            return
        if not self._closed:
            try:
                self._queue.put_nowait(doc)
                return
            except queue.Full:
                pass
        self._spool_docs([doc])

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start the delivery thread (it first replays what earlier processes left in the spool)."""
        if not self.enabled:
            log.info("event shipping disabled: ES_URL is empty, events go to stdout only")
            return
        if self._thread is not None:
            return
        self._thread = SupervisedThread("event-shipper", self._run, stop_requested=self._stop.is_set)
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Deliver (or spool) everything queued, then stop; anything left after `timeout` is spooled."""
        if self._closed:
            return
        self._closed = True
        if self._thread is None:
            self._drain_to_spool()
            self.spool.seal()
            return
        self._stop.set()
        try:
            self._queue.put_nowait(_WAKE)
        except queue.Full:
            pass
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("event shipper did not finish within %.0fs; spooling what is still queued", timeout)
        self._drain_to_spool()
        self.spool.seal()
        if self._client is not None and not self._thread.is_alive():
            self._client.close()

    def stats(self) -> dict[str, int]:
        """Counters since start: shipped (accepted by ES, replays included), retried, spooled, dropped,
        replayed (accepted from the spool), and queued (waiting in memory now)."""
        with self._counts_lock:
            out = dict(self._counts)
        out["queued"] = self._queue.qsize()
        return out

    def health(self) -> tuple[str, str]:
        """("ok" | "degraded" | "disabled", what is going on), never with a secret in it."""
        if not self.enabled:
            return "disabled", "ES_URL is empty: events go to stdout only (not shipped, not spooled)"
        if self._thread is not None:
            thread_status, detail = self._thread.health()
            if thread_status != "ok":
                return thread_status, f"{detail}; events are spooled meanwhile"
        return self._status

    # --- the delivery thread -------------------------------------------------------------------
    def _run(self) -> None:
        recovered = self.spool.recover_orphans()
        if recovered:
            log.info("found %d spool file(s) left by stopped processes in %s", recovered, self.spool.dir)
        while True:
            batch = self._collect()
            if batch:
                try:
                    self._deliver(batch)
                except Exception:  # a fault of ours: keep the batch, let the supervisor log and restart the loop
                    self._spool_docs(batch)
                    raise
            if self._due() and self.spool.has_pending():
                self._replay()
            if self._stop.is_set() and self._queue.empty():
                break
        self.spool.seal()  # also when close() gave up waiting: the last batch must be replayable

    def _collect(self) -> list[dict[str, Any]]:
        batch: list[dict[str, Any]] = []
        deadline = time.monotonic() + self._flush_seconds
        while len(batch) < self._batch_size:
            try:
                if self._stop.is_set():
                    item = self._queue.get_nowait()
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    item = self._queue.get(timeout=remaining)
            except queue.Empty:
                break
            if item is not _WAKE:
                batch.append(item)
        return batch

    def _deliver(self, batch: list[dict[str, Any]]) -> None:
        if not self._due():
            self._spool_docs(batch)
            return
        try:
            left = self._bulk(batch)
        except _Unavailable as exc:
            self._failed(exc.reason)
            self._spool_docs(batch)
            return
        self._succeeded()
        if left:
            self._spool_docs(left)

    def _replay(self) -> None:
        self.spool.seal()
        self.spool.recover_orphans()
        for path, fh in self.spool.claim():
            docs = self._read_spool(fh)
            try:
                for start in range(0, len(docs), self._batch_size):
                    left = self._bulk(docs[start:start + self._batch_size])
                    if left:
                        raise _Unavailable(f"{len(left)} events refused for now (overloaded)")
            except _Unavailable as exc:
                self.spool.release(path, fh)
                self._failed(exc.reason)
                return
            self.spool.done(path, fh)
            self._count("replayed", len(docs))
            log.info("replayed %d spooled events from %s", len(docs), path.name)
            self._succeeded()

    def _read_spool(self, fh: IO[bytes]) -> list[dict[str, Any]]:
        docs = []
        for line in fh:
            try:
                doc = json.loads(line)
            except ValueError:
                self._count("dropped", 1)  # a torn last line after a crash
                continue
            if isinstance(doc, dict):
                docs.append(doc)
        return docs

    def _bulk(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Index `docs`; returns those refused for now (429/5xx) after item retries. Poison docs drop."""
        client = self._ready_client()
        pending = docs
        for attempt in range(ITEM_RETRIES + 1):
            operations: list[Any] = []
            for doc in pending:
                index = events.index_name(self.settings.es_index_prefix, doc)
                operations.append({"index": {"_index": index, "_id": events.document_id(doc)}})
                operations.append(doc)
            try:
                resp = client.bulk(operations=operations)
            except (ApiError, TransportError) as exc:
                raise _Unavailable(self._describe(exc)) from exc
            retry: list[dict[str, Any]] = []
            accepted = 0
            for doc, item in zip(pending, resp["items"], strict=True):
                result = item.get("index", {})
                status = int(result.get("status", 500))
                if status < 300:
                    accepted += 1
                elif status == 429 or status >= 500:
                    retry.append(doc)
                else:
                    self._count("dropped", 1)
                    log.warning("Elasticsearch rejected event %s (%s): %s", result.get("_id"), status,
                                (result.get("error") or {}).get("reason", "no reason given"))
            self._count("shipped", accepted)
            if not retry:
                return []
            if attempt == ITEM_RETRIES or self._stop.wait(BACKOFF_START * 2 ** attempt):
                return retry
            self._count("retried", len(retry))
            pending = retry
        return pending

    def _ready_client(self) -> Elasticsearch:
        if self._client is None:
            self._client = make_client(self.settings, request_timeout=REQUEST_TIMEOUT, max_retries=0)
        if not self._template_done:
            try:
                install_index_template(self._client, self.settings)
            except ApiError as exc:
                if exc.meta.status == 401:
                    raise _Unavailable(self._describe(exc)) from exc
                log.warning("could not install the index template (shipping anyway): %s", self._describe(exc))
            except TransportError as exc:
                raise _Unavailable(self._describe(exc)) from exc
            self._template_done = True
        return self._client

    # --- bookkeeping ---------------------------------------------------------------------------
    def _spool_docs(self, docs: list[dict[str, Any]]) -> None:
        lines = []
        for doc in docs:
            try:
                lines.append(json.dumps(doc, separators=(",", ":")).encode() + b"\n")
            except (TypeError, ValueError):
                self._count("dropped", 1)
        if not lines:
            return
        try:
            self.spool.append(lines)
        except OSError as exc:
            self._count("dropped", len(lines))
            log.error("cannot write the event spool in %s, %d events lost: %s", self.spool.dir, len(lines), exc)
            return
        self._count("spooled", len(lines))

    def _drain_to_spool(self) -> None:
        left = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _WAKE:
                left.append(item)
        if left:
            self._spool_docs(left)

    def _count(self, key: str, n: int) -> None:
        if n:
            with self._counts_lock:
                self._counts[key] += n
            if self.on_count is not None:
                self.on_count(key, n)

    def _due(self) -> bool:
        return time.monotonic() >= self._retry_at

    def _failed(self, reason: str) -> None:
        self._failures += 1
        delay = min(self._backoff_max, BACKOFF_START * 2 ** (self._failures - 1))
        self._retry_at = time.monotonic() + delay
        message = f"{reason}; events wait in the spool {self.spool.dir}"
        if self._status != ("degraded", message):
            log.warning("event shipping degraded: %s (next try in %.1fs)", reason, delay)
        self._status = ("degraded", message)

    def _succeeded(self) -> None:
        if self._failures:
            log.info("event shipping to %s recovered after %d failed attempt(s)", self.url, self._failures)
        self._failures = 0
        self._retry_at = 0.0
        self._status = ("ok", f"shipping to {self.url}")

    def _describe(self, exc: Exception) -> str:
        """What went wrong, for people: names the URL and user, never the password or API key."""
        s = self.settings
        if isinstance(exc, ApiError):
            status = exc.meta.status
            if status == 401:
                if s.es_api_key:
                    text = f"API key rejected by {self.url} (401)"
                elif s.es_username:
                    text = f"authentication failed for user '{s.es_username}' (401)"
                else:
                    text = f"{self.url} requires authentication (401): set ES_USERNAME/ES_PASSWORD or ES_API_KEY"
            elif status == 403:
                who = "the API key" if s.es_api_key else f"user '{s.es_username}'"
                text = f"{who} may not write {s.es_index_prefix}-* at {self.url} (403)"
            else:
                text = f"{self.url} answered {status}: {str(exc.message)[:200]}"
        elif isinstance(exc, ConnectionTimeout):
            text = f"cannot reach {self.url}: no answer within {REQUEST_TIMEOUT:.0f}s"
        elif isinstance(exc, TransportConnectionError):
            raw = f"{exc.message} {exc.__cause__ or ''}"
            if "refused" in raw.lower():
                text = f"cannot reach {self.url}: connection refused"
            elif any(m in raw for m in ("Name or service not known", "Failed to resolve", "nodename nor servname")):
                text = f"cannot reach {self.url}: host name not found"
            else:
                text = f"cannot reach {self.url}: {str(exc.message)[:200]}"
        else:
            text = f"{self.url}: {type(exc).__name__}: {str(exc)[:200]}"
        for secret in (s.es_password, s.es_api_key):
            if secret:
                text = text.replace(secret, "***")
        return text
