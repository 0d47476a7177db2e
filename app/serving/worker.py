"""The service's gunicorn worker: gthread, except that a thread keeps a keep-alive connection for a moment.

gunicorn's gthread worker hands every request across threads: its main thread polls the sockets and passes
a readable one to a pool thread, which answers and passes the connection back through a pipe, three
thread wake-ups per request. Here the thread that answered a request waits up to
`VQA_KEEPALIVE_LINGER_MS` on the same connection; a client that sends its next request in that time (one
that works in a loop, as a load balancer's or a pipeline's client does) is answered by the same thread
with no hand-off. Otherwise the connection goes back to the main thread as in gthread. What it changes
is measured by `python -m scripts.bench_load` (the service with lingering off is one of its reference
servers; docs/BENCHMARKS.md, "Load").

A thread lingers only while the pool has another idle thread, so new connections and readable kept-alive
ones are not left waiting for a thread. gunicorn's own checks stay in place: a stopping worker (`alive`
false), `max_requests`, a response that closes the connection (the balancing in app/serving/balance.py)
and HTTP/2 all end the lingering.

gunicorn's ThreadWorker is not a public API. This relies on `handle(conn)` returning True for a
connection to keep alive, as in gunicorn 27; with any other return value the worker behaves exactly as
gthread, and tests/test_worker.py, which checks that the installed gunicorn lingers, fails.
"""

from __future__ import annotations

import select
import threading

from gunicorn.workers.gthread import ThreadWorker

from app.config import Settings

WORKER_CLASS = "app.serving.worker.LingeringThreadWorker"
_thread = threading.local()


def lingered() -> bool:
    """Was the request on this thread read by a thread that waited for it (no hand-off)? For tests."""
    return getattr(_thread, "lingered", False)


class LingeringThreadWorker(ThreadWorker):
    """gthread whose pool threads wait briefly for the next request on the connection they just answered."""

    def init_process(self) -> None:
        self.linger_s = max(0.0, Settings.from_env().keepalive_linger_ms) / 1000.0
        self._busy = 0
        self._busy_lock = threading.Lock()
        super().init_process()

    def handle(self, conn):
        with self._busy_lock:
            self._busy += 1
        try:
            _thread.lingered = False
            result = super().handle(conn)
            while result is True and self._next_request_here(conn):
                _thread.lingered = True
                result = super().handle(conn)
            return result
        finally:
            _thread.lingered = False
            with self._busy_lock:
                self._busy -= 1

    def _next_request_here(self, conn) -> bool:
        """Has `conn`'s next request arrived (or come within `linger_s`) while this thread may wait for it?"""
        if not (self.linger_s and self.alive and not getattr(conn, "is_http2", False)):
            return False
        if self._busy >= self.cfg.threads:  # no idle thread left: do not hold this one
            return False
        if conn.parser.unreader.buf.getvalue():  # read ahead with the last request's body
            return True
        try:
            readable, _, _ = select.select([conn.sock], [], [], self.linger_s)
        except (OSError, ValueError):  # closed meanwhile
            return False
        return bool(readable)
