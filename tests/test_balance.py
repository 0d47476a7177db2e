"""The connection table that spreads keep-alive connections over gunicorn workers (app/serving/balance.py)."""

from __future__ import annotations

import pytest

from app.serving.balance import ConnectionTable, WorkerShare


def table_with(*held: int) -> tuple[ConnectionTable, list[int]]:
    """A table with one bound slot per entry of `held`, each recording that many connections."""
    table = ConnectionTable(8)
    slots = [table.assign() for _ in held]
    for pid, (slot, n) in enumerate(zip(slots, held, strict=True), start=100):
        table.bind(slot, pid)
        table.share(slot, n)
    return table, slots


def test_one_live_worker_has_no_share():
    """With a single live worker nothing is above a share, however many connections it holds."""
    table, (slot,) = table_with(0)
    assert table.share(slot, 50) is None


def test_share_is_the_rounded_up_mean_of_live_workers():
    """The share is ceil(all held / live workers), from every worker's last recorded count."""
    table, (a, b, c) = table_with(0, 3, 4)
    assert table.share(a, 6) == 5  # 13 / 3
    assert table.counts() == {100: 6, 101: 3, 102: 4}


def test_an_exited_worker_stops_counting_and_its_slot_is_reused():
    """free() drops a worker from everyone's share; assign() gives its slot to the next worker."""
    table, (a, b) = table_with(2, 14)
    table.free(b)
    assert table.share(a, 2) is None and table.counts() == {100: 2}
    assert table.assign() == b


def test_a_full_table_gives_no_slot():
    """When every slot is taken, assign() returns None (that worker then never closes connections)."""
    table = ConnectionTable(2)
    assert [table.assign(), table.assign(), table.assign()] == [0, 1, None]
    with pytest.raises(ValueError):
        ConnectionTable(0)


def test_a_batch_arriving_together_closes_only_the_surplus():
    """14 of 16 connections, all asking at once: 6 are told to close, not 14."""
    table, (a, b) = table_with(0, 2)
    worker = WorkerShare(table, a)
    decisions = [worker.on_request(14) for _ in range(14)]  # nr_conns stays 14 until responses go out
    assert sum(decisions) == 6 and decisions[:6] == [True] * 6
    assert table.counts()[100] == 14  # closing ones still count towards the total until they move


def test_a_worker_within_its_share_closes_nothing():
    """At or below ceil(all / workers) no request is told to close; after closed() the count is exact again."""
    table, (a, b) = table_with(0, 4)
    worker = WorkerShare(table, a)
    assert worker.on_request(6) is True  # share 5
    assert worker.on_request(6) is False  # one already closing: 5 kept
    worker.closed()
    assert [worker.on_request(5) for _ in range(3)] == [False] * 3
