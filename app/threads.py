"""Background threads that cannot die quietly: a crash is logged with its traceback and the loop restarts.

The shipper's delivery loop and each worker's adapter-reload loop run under `SupervisedThread`;
`/readyz` reports each one's `health()`, so a loop that keeps crashing, or is gone, is named there.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

BACKOFF_START = 0.5
BACKOFF_MAX = 30.0
RECENT_SECONDS = 60.0  # a crash this recent makes health() "degraded"


class SupervisedThread:
    """Runs `target()` in a daemon thread until it returns; if it raises, restarts it after a backoff.

    `target` is a loop that returns when its own stop signal is set; `stop_requested` tells the
    supervisor not to restart it after that.
    """

    def __init__(self, name: str, target: Callable[[], None], *, stop_requested: Callable[[], bool],
                 backoff_start: float = BACKOFF_START, backoff_max: float = BACKOFF_MAX):
        self.name = name
        self._target = target
        self._stop_requested = stop_requested
        self._backoff = (backoff_start, backoff_max)
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self.restarts = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.finished = False

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._supervise, name=self.name, daemon=True)
            self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _supervise(self) -> None:
        delay = self._backoff[0]
        while True:
            try:
                self._target()
                self.finished = True
                return
            except Exception as exc:  # any crash of the loop: logged with its traceback, loop restarted
                self.restarts += 1
                self.last_error = f"{exc.__class__.__name__}: {exc}"
                self.last_error_at = time.monotonic()
                log.exception("background loop %s crashed (restart %d in %.1fs)", self.name, self.restarts, delay)
            if self._stop_requested():
                self.finished = True
                return
            self._wake.wait(delay)
            delay = min(delay * 2, self._backoff[1])

    def health(self) -> tuple[str, str]:
        """("ok" | "degraded" | "failing", detail): failing if the thread is gone while it should run."""
        if self._thread is None:
            return "ok", "not started"
        if not self._thread.is_alive() and not self.finished:
            return "failing", f"{self.name} is not running (last error: {self.last_error or 'none'})"
        if self.last_error_at is not None and time.monotonic() - self.last_error_at < RECENT_SECONDS:
            return "degraded", f"{self.name} crashed {self.restarts} time(s), restarted; last: {self.last_error}"
        detail = f"running; {self.restarts} restart(s), last: {self.last_error}" if self.restarts else "running"
        return "ok", detail
