"""Keep-alive connections spread evenly over a pod's gunicorn workers.

Every worker accepts from the one listening socket, and an HTTP/1.1 client keeps its connection, so
which worker serves a client is settled once, when it connects, by whichever worker accepts first.
With 16 keep-alive clients (`hey -c 16`) on two workers, three runs by hand split them 7/9, 2/14
and 0/16: the loaded worker batches for everyone while the other idles, and throughput follows the
split (`python -m scripts.bench_load` measures the service with and without balancing).

So each worker publishes how many connections it holds in a table in shared memory (made by the
gunicorn master before it forks), and a worker holding more than its share, ceil(all / live workers),
answers a request with `Connection: close` (the response itself is whole). The client reconnects,
and the new connection goes to whichever worker accepts first. Repeated, the spread evens out; then
nothing is closed any more. That is nginx's `keepalive_requests` or Envoy's
`max_requests_per_connection`, done only when it is needed.

The requests of one batch arrive together, and a connection marked for closing still counts until
its response is out, so a worker counts what it has already marked. Without that, every request of
a batch was told to close and the clients moved back and forth as a crowd; with it, a c16 run
settles at 8/8 after a handful of closes.

The gunicorn side is `gunicorn.conf.py`'s `pre_request` hook. It reads the gthread worker's
`nr_conns` (connections it holds), an attribute of gunicorn's worker rather than a documented setting;
tests/test_serving_live.py checks that the spread evens out with the installed gunicorn. Nothing stops
a worker from accepting: a peer that is stuck or slow never leaves clients waiting to connect.

A slot's count is refreshed by its worker's own requests, so an idle worker's count can be stale
(high, after its clients left). That only makes the others close less; the first request it serves
corrects it.
"""

from __future__ import annotations

import ctypes
import math
import threading
from multiprocessing.sharedctypes import RawArray


class ConnectionTable:
    """Per-worker connection counts in shared memory: slots are given out by the master, used by workers."""

    def __init__(self, slots: int):
        if slots < 1:
            raise ValueError("a connection table needs at least one slot")
        self._pids = RawArray(ctypes.c_int, slots)  # 0: free
        self._held = RawArray(ctypes.c_int, slots)
        self._taken: set[int] = set()  # the master's own record of given-out slots

    # --- the master -------------------------------------------------------------------------
    def assign(self) -> int | None:
        """A free slot for a worker about to be forked, or None if all are taken (it then never closes)."""
        free = next((i for i in range(len(self._pids)) if i not in self._taken), None)
        if free is not None:
            self._taken.add(free)
            self._pids[free], self._held[free] = 0, 0
        return free

    def free(self, slot: int | None) -> None:
        """The worker in `slot` has exited: it no longer counts towards anyone's share."""
        if slot is None:
            return
        self._pids[slot], self._held[slot] = 0, 0
        self._taken.discard(slot)

    # --- a worker ---------------------------------------------------------------------------
    def bind(self, slot: int, pid: int) -> None:
        """The forked worker takes its slot."""
        self._held[slot] = 0
        self._pids[slot] = pid

    def share(self, slot: int, held: int) -> int | None:
        """Record that the worker in `slot` holds `held` connections; ceil(all held / live workers),
        or None with fewer than two live workers (then nobody is above a share)."""
        self._held[slot] = held
        counts = [self._held[i] for i in range(len(self._pids)) if self._pids[i]]
        return math.ceil(sum(counts) / len(counts)) if len(counts) > 1 else None

    def counts(self) -> dict[int, int]:
        """{pid: connections held} of the live workers, as last recorded."""
        return {self._pids[i]: self._held[i] for i in range(len(self._pids)) if self._pids[i]}


class WorkerShare:
    """One worker's side of the table: whether to close the connection a request came on."""

    def __init__(self, table: ConnectionTable, slot: int):
        self.table, self.slot = table, slot
        self._closing = 0  # connections marked for closing whose response is not out yet
        self._lock = threading.Lock()

    def on_request(self, held: int) -> bool:
        """True: answer this request with `Connection: close`. `held` counts its connection."""
        with self._lock:
            # The table gets every connection held, closing ones included: until their clients have
            # reconnected elsewhere they are part of the total the share is taken from.
            share = self.table.share(self.slot, held)
            close = share is not None and held - self._closing > share
            if close:
                self._closing += 1
            return close

    def closed(self) -> None:
        """A connection marked by `on_request` has had its response: it no longer needs counting apart."""
        with self._lock:
            self._closing = max(0, self._closing - 1)
