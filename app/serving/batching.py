"""Dynamic batching inside one worker: request threads queue validated inputs, one model thread answers them.

A lone request on an idle service is answered at once on its own thread; requests that arrive while
the model is busy are answered together in one preprocess + generate, each with its own answer,
quality and drift score.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from app.threads import SupervisedThread

if TYPE_CHECKING:
    from PIL import Image

    from app.model.vqa import Prediction, VQAModel

log = logging.getLogger(__name__)

RESTART_BACKOFF_S = (0.05, 2.0)  # first and longest wait before restarting a crashed model loop
MODEL_THREAD = "vqa-batcher"


class BatchingError(RuntimeError):
    """A queued request could not be answered; `status` is the HTTP code, `retry_after` seconds (or None)."""

    status = 503
    retry_after: int | None = 1


class QueueFull(BatchingError):
    """The worker's queue is full: it is overloaded and the client should retry shortly."""


class WaitedTooLong(BatchingError):
    """The request waited longer than `VQA_REQUEST_TIMEOUT_S` for the model."""


class ModelUnavailable(BatchingError):
    """No model is loaded yet."""

    retry_after = 5


class ModelFailed(BatchingError):
    """The model raised on this request: a fault of ours, logged with its traceback."""

    status = 500
    retry_after = None


@dataclass(eq=False)
class Job:
    """One request's input and, once `done` is set, its prediction (or error) and how it was served."""

    image: Image.Image
    question: str
    enqueued: float
    deadline: float
    done: threading.Event = field(default_factory=threading.Event)
    prediction: Prediction | None = None
    model: VQAModel | None = None  # the model that answered: its versions go into the event
    error: BatchingError | None = None
    batch_size: int = 0
    queue_wait: float = 0.0
    abandoned: bool = False  # its request gave up waiting: the model thread skips it

    def finish(self, *, prediction: Prediction | None = None, model: VQAModel | None = None,
               error: BatchingError | None = None) -> None:
        self.prediction, self.model, self.error = prediction, model, error
        self.done.set()


class Batcher:
    """A bounded queue and one supervised model thread, per worker process.

    `current_model()` returns the model to use (None while loading). A batch runs on the one
    reference it took, so a hot adapter switch never splits a batch or fails a request.
    `on_batch(jobs)` is called after each answered batch (metrics).
    """

    def __init__(self, current_model: Callable[[], VQAModel | None], *, max_batch: int, wait_ms: float,
                 queue_size: int, timeout_s: float, on_batch: Callable[[list[Job]], None] | None = None,
                 inline_when_idle: bool = True, thread_setup: Callable[[], None] | None = None):
        if max_batch < 1 or queue_size < 1:
            raise ValueError("max_batch and queue_size must be at least 1")
        self.current_model = current_model
        self.max_batch = max_batch
        self.wait_s = max(0.0, wait_ms) / 1000.0
        self.queue_size = queue_size
        self.timeout_s = timeout_s
        self.on_batch = on_batch
        self.thread_setup = thread_setup
        self._thread_state = threading.local()
        self._jobs: deque[Job] = deque()
        self._cond = threading.Condition()
        self._arriving = 0  # requests being parsed: they will join the queue in a moment
        self._stopping = False
        self._busy = False  # a batch is being answered, by the model thread or inline by a request thread
        self.inline_when_idle = inline_when_idle
        self._thread: SupervisedThread | None = None
        self._taken: list[Job] = []  # the batch in progress: failed, not left hanging, if the loop crashes
        self._last_size, self._last_end = 0, float("-inf")
        self.batches = 0

    # --- the request side -------------------------------------------------------------------
    @contextlib.contextmanager
    def admission(self) -> Iterator[Callable[[Image.Image, str], Job]]:
        """Wrap the parsing of one request; yields `submit(image, question)` for when it is valid.

        While a request is being parsed the model thread knows one more is coming and may wait
        for it (at most `wait_ms`) to join the batch. A request that fails validation never joins.
        """
        with self._cond:
            self._arriving += 1
        pending = True

        def submit(image: Image.Image, question: str) -> Job:
            nonlocal pending
            pending = False
            return self._enqueue(image, question, announced=True)

        try:
            yield submit
        finally:
            if pending:
                with self._cond:
                    self._arriving -= 1
                    self._cond.notify()

    def submit(self, image: Image.Image, question: str) -> Job:
        """Queue one validated input; raises QueueFull rather than let the queue grow without bound."""
        return self._enqueue(image, question, announced=False)

    def wait(self, job: Job) -> Job:
        """Block until `job` is answered or its deadline passes; raises its BatchingError."""
        if not job.done.wait(max(0.0, job.deadline - time.perf_counter())):
            job.abandoned = True
            raise self._too_long()
        if job.error is not None:
            raise job.error
        return job

    def answer(self, image: Image.Image, question: str) -> Job:
        """submit + wait: the finished job, with `.prediction`, `.model` and `.batch_size`."""
        return self.wait(self.submit(image, question))

    def _enqueue(self, image: Image.Image, question: str, *, announced: bool) -> Job:
        self.ensure_running()
        now = time.perf_counter()
        job = Job(image, question, enqueued=now, deadline=now + self.timeout_s)
        with self._cond:
            if announced:
                self._arriving -= 1
            alone = self.inline_when_idle and not (self._jobs or self._busy or self._arriving or self._returning(now))
            if alone:
                self._busy = True  # the model is this thread's until it has answered
            else:
                self._cond.notify()
                if len(self._jobs) >= self.queue_size:
                    raise QueueFull(f"the service is overloaded ({self.queue_size} requests are waiting); "
                                    "retry shortly")
                self._jobs.append(job)
        if alone:
            # Nothing queued, nothing running, nothing coming: answering here saves the two thread
            # hand-offs to the model thread and back, which cost milliseconds when the cores are busy.
            try:
                self._run([job])
            except Exception:  # as on the model thread: this request fails, the batcher goes on
                log.exception("answering a request inline failed")
                if not job.done.is_set():
                    job.finish(error=ModelFailed("internal error while answering; the service logged the details"))
            finally:
                self._release(1)
        return job

    def _returning(self, now: float) -> int:
        """Clients of the last batch that may be about to come back: its size if it had several and just ended."""
        return self._last_size if self._last_size > 1 and now - self._last_end < self.wait_s else 0

    def _release(self, answered: int) -> None:
        with self._cond:
            self._busy = False
            self._last_size, self._last_end = answered, time.perf_counter()
            self._cond.notify()

    def _too_long(self) -> WaitedTooLong:
        return WaitedTooLong(f"the request waited more than {self.timeout_s:g} s for the model; retry shortly")

    # --- lifecycle and health ------------------------------------------------------------------
    def start(self) -> None:
        self.ensure_running()

    def stop(self, timeout: float = 10.0) -> None:
        """Answer what is queued, then end the model thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def ensure_running(self) -> None:
        """Start the model thread on first use, and start a new one if it died (not merely crashed:
        SupervisedThread restarts a loop that raises; this covers a thread that is gone)."""
        if self.alive() or self._stopping:
            return
        with self._cond:
            if self.alive() or self._stopping:
                return
            if self._thread is not None:
                log.error("the model thread is dead (last error: %s); starting a new one", self._thread.last_error)
            self._thread = SupervisedThread(MODEL_THREAD, self._loop_failing_its_batch,
                                            stop_requested=lambda: self._stopping,
                                            backoff_start=RESTART_BACKOFF_S[0], backoff_max=RESTART_BACKOFF_S[1])
            self._thread.start()

    def health(self) -> tuple[str, str]:
        """('ok' | 'degraded' | 'failing', detail) of the model thread for /readyz; starts a dead one again."""
        if self._stopping:
            return "failing", "the model thread is stopped (the worker is shutting down)"
        if self._thread is None or not self._thread.is_alive():
            detail = f"the model thread is dead (last error: {self._thread.last_error if self._thread else None})"
            self.ensure_running()
            return "failing", f"{detail}; starting a new one"
        status, detail = self._thread.health()
        with self._cond:
            queued = len(self._jobs)
        return status, f"{detail}; {self.batches} batches answered, {queued}/{self.queue_size} requests queued"

    # --- the model thread --------------------------------------------------------------------
    def _loop_failing_its_batch(self) -> None:
        """The loop; if it raises, the requests of the batch in hand get a 500 instead of hanging."""
        try:
            self._loop()
        except Exception:
            for job in self._taken:
                if not job.done.is_set():
                    job.finish(error=ModelFailed("internal error while batching; the service logged the details"))
            self._taken = []
            raise

    def _loop(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            self._taken = batch
            try:
                self._run(batch)
            finally:
                self._release(len(batch))
            self._taken = []

    def _take(self) -> list[Job] | None:
        """Up to max_batch jobs, waiting (at most wait_ms) for more only when more are expected.

        More are expected while requests are being parsed, and right after a batch: its clients
        tend to come back, so the next batch waits for them as well as for what is queued. (Without
        that, concurrent clients settle into two cohorts answered in alternate half-size batches.)
        An idle service, whose last batch was one request or ended a while ago, never waits.
        """
        with self._cond:
            while (not self._jobs or self._busy) and not self._stopping:
                self._cond.wait()
            while self._busy:  # stopping: let a request thread finish its inline answer first
                self._cond.wait()
            if not self._jobs:
                return None  # stopping, and nothing left to answer
            self._busy = True
            now = time.perf_counter()
            expected = min(self.max_batch, self._returning(now) + len(self._jobs))
            until = now + self.wait_s
            batch = self._pop(self.max_batch)
            while len(batch) < self.max_batch and (self._arriving > 0 or len(batch) < expected):
                if self._jobs:
                    batch += self._pop(self.max_batch - len(batch))
                    continue
                left = until - time.perf_counter()
                if left <= 0 or self._stopping:
                    break
                self._cond.wait(left)
            return batch

    def _pop(self, n: int) -> list[Job]:
        out: list[Job] = []
        while self._jobs and len(out) < n:
            job = self._jobs.popleft()
            if not job.abandoned:
                out.append(job)
        return out

    def _run(self, batch: list[Job]) -> None:
        if self.thread_setup is not None and not getattr(self._thread_state, "ready", False):
            self.thread_setup()  # once per thread that runs the model (the model thread, request threads)
            self._thread_state.ready = True
        started = time.perf_counter()
        live = []
        for job in batch:
            if started > job.deadline:
                job.finish(error=self._too_long())
            else:
                job.queue_wait = started - job.enqueued
                live.append(job)
        if not live:
            return
        vqa = self.current_model()  # one reference for the whole batch: a hot swap cannot split it
        if vqa is None:
            for job in live:
                job.finish(error=ModelUnavailable("the model is not loaded yet; retry when /readyz is ok"))
            return
        try:
            predictions = vqa.answer([job.image for job in live], [job.question for job in live])
        except Exception:  # find the request that breaks the model, answer the others
            if len(live) == 1:
                log.exception("the model failed on a request")
                live[0].finish(error=ModelFailed("the model failed on this request; the service logged the details"))
                return
            log.exception("the model failed on a batch of %d; answering its requests one by one", len(live))
            predictions = [self._answer_alone(vqa, job) for job in live]
            size = 1
        else:
            size = len(live)
        for job, prediction in zip(live, predictions, strict=True):
            job.batch_size = size
            if prediction is not None:
                job.finish(prediction=prediction, model=vqa)
        self.batches += 1
        if self.on_batch is not None:
            self.on_batch(live)

    @staticmethod
    def _answer_alone(vqa: VQAModel, job: Job) -> Prediction | None:
        try:
            return vqa.answer([job.image], [job.question])[0]
        except Exception:  # a fault of ours on this input: this request answers 500
            log.exception("the model failed on a request")
            job.finish(error=ModelFailed("the model failed on this request; the service logged the details"))
            return None
