"""`make up`'s supervisor with real children: a killed Elasticsearch, service or watchdog comes back, no event is lost.

One stack for the module (a real local Elasticsearch, the service under gunicorn, a dry-run watchdog),
supervised in a thread exactly as `make up` supervises it in its main loop.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests
from elasticsearch import Elasticsearch

from app.config import Settings
from app.events import schema as events
from app.serving.launch import free_port
from infra import processes
from infra.stack import Backoff, ElasticsearchChild, ProcessChild, Stack, StackError, StackOptions, local_stack

INDEX_PREFIX = "stack-test"
log = logging.getLogger(__name__)


@dataclass
class Supervised:
    stack: Stack
    url: str
    errors: list[BaseException]


def wait_for(condition, timeout: float, step: float = 0.2) -> bool:
    """Poll `condition()` until it is true or `timeout` seconds pass; returns its last value."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(step)
    return bool(condition())


@pytest.fixture(scope="module")
def supervised(tmp_path_factory, small_model_dir, images_root) -> Iterator[Supervised]:
    """The local stack on free ports with its own Elasticsearch data, supervised in a background thread."""
    tmp = tmp_path_factory.mktemp("stack")
    settings = Settings(
        model_dir=str(small_model_dir), images_root=str(images_root), data_dir=str(images_root.parent),
        adapters_dir=str(tmp / "adapters"), spool_dir=str(tmp / "spool"), es_url="", es_index_prefix=INDEX_PREFIX,
        watchdog_state_file=str(tmp / "watchdog_state.json"), reload_poll_seconds=0,
    )
    port = free_port()
    options = StackOptions(
        port=port, es_port=0, es_data_dir=tmp / "es", watchdog_args=("--dry-run", "--interval", "30"),
        service_log=tmp / "service.log", backoff=Backoff(initial=0.5, maximum=4.0, max_failures=3),
    )
    stack = local_stack(settings, options)
    stop, errors = threading.Event(), []

    def supervise() -> None:
        try:
            stack.run(stop)
        except StackError as exc:
            errors.append(exc)

    thread = threading.Thread(target=supervise, name="stack-supervisor", daemon=True)
    try:
        stack.start()
        thread.start()
        yield Supervised(stack, f"http://127.0.0.1:{port}", errors)
    finally:
        stop.set()
        if thread.is_alive():
            thread.join(60)
        stack.stop()


def predict(base: str, i: int) -> str:
    """One /predict that must succeed; returns its request id."""
    resp = requests.post(f"{base}/predict", json={"image_path": f"test/{i % 50}.png",
                                                  "question": "what color is the shape?"}, timeout=60)
    assert resp.status_code == 200, resp.text
    return resp.json()[events.REQUEST_ID]


def indexed_request_ids(client: Elasticsearch, sent: list[str]) -> dict[str, int]:
    """How many inference documents hold each request id, counted by Elasticsearch."""
    client.indices.refresh(index=f"{INDEX_PREFIX}-*", allow_no_indices=True)
    result = client.search(
        index=f"{INDEX_PREFIX}-*", size=0, allow_no_indices=True,
        query={"bool": {"filter": [{"term": {events.EVENT: events.INFERENCE}},
                                   {"terms": {events.REQUEST_ID: sent}}]}},
        aggs={"ids": {"terms": {"field": events.REQUEST_ID, "size": 2 * len(sent)}}},
    )
    if "aggregations" not in result.body:
        return {}  # no index yet: nothing has arrived
    return {b["key"]: b["doc_count"] for b in result["aggregations"]["ids"]["buckets"]}


@pytest.mark.slow
def test_a_killed_elasticsearch_is_restarted_and_every_event_sent_meanwhile_is_indexed_once(supervised, caplog):
    """kill -9 of the node under load: the supervisor logs it, restarts it, and each request's event is indexed once."""
    caplog.set_level(logging.INFO, logger="stack")
    caplog.set_level(logging.INFO, logger=__name__)
    stack, base = supervised.stack, supervised.url
    child = stack.child("Elasticsearch")
    assert isinstance(child, ElasticsearchChild)
    node = child.node
    restarts_before = stack.restarts("Elasticsearch")
    sent = [predict(base, i) for i in range(10)]

    killed = node.pid
    os.kill(killed, signal.SIGKILL)
    # Requests go on while the node is down and being restarted: their events wait in the spool.
    deadline = time.monotonic() + 150
    while stack.restarts("Elasticsearch") == restarts_before and time.monotonic() < deadline and len(sent) < 3000:
        sent.append(predict(base, len(sent)))
    during = len(sent) - 10
    sent += [predict(base, len(sent) + i) for i in range(10)]
    log.info("%d requests answered while Elasticsearch was down or restarting, %d in all", during, len(sent))

    assert not supervised.errors, supervised.errors
    assert stack.restarts("Elasticsearch") == restarts_before + 1
    assert node.pid != killed and node.running()
    assert processes.classify(killed) == processes.GONE  # reaped by the supervisor: no zombie left behind
    assert during > 0, "no request was sent while Elasticsearch was down"
    assert "Elasticsearch died (killed by SIGKILL)" in caplog.text
    assert "Elasticsearch is back" in caplog.text

    client = Elasticsearch(node.url, request_timeout=30)
    try:
        wanted = set(sent)
        assert wait_for(lambda: set(indexed_request_ids(client, sent)) == wanted, timeout=90, step=1.0), (
            f"{len(wanted - set(indexed_request_ids(client, sent)))} of {len(wanted)} events never arrived")
        counts = indexed_request_ids(client, sent)
    finally:
        client.close()
    assert len(sent) == len(wanted)
    assert {rid: n for rid, n in counts.items() if n != 1} == {}


@pytest.mark.slow
def test_a_killed_service_and_watchdog_are_restarted(supervised, caplog):
    """kill -9 of gunicorn's master and of the watchdog: both are noticed, restarted, and the service answers again."""
    caplog.set_level(logging.INFO, logger="stack")
    stack = supervised.stack
    service, watchdog = stack.child("service"), stack.child("watchdog")
    assert isinstance(service, ProcessChild) and isinstance(watchdog, ProcessChild)
    before = {name: stack.restarts(name) for name in ("service", "watchdog")}
    old = {"service": service.proc.pid, "watchdog": watchdog.proc.pid}

    os.kill(old["watchdog"], signal.SIGKILL)
    os.kill(old["service"], signal.SIGKILL)
    assert wait_for(lambda: all(stack.restarts(n) > before[n] for n in before), timeout=150, step=0.5), (
        f"restarts {({n: stack.restarts(n) for n in before})}, errors {supervised.errors}")

    assert not supervised.errors, supervised.errors
    assert service.proc.pid != old["service"] and watchdog.proc.pid != old["watchdog"]
    assert service.exit_status() is None and watchdog.exit_status() is None
    predict(supervised.url, 0)
    for name in ("service", "watchdog"):
        assert f"{name} died (killed by SIGKILL)" in caplog.text
        assert f"{name} is back" in caplog.text


class Flaky(ProcessChild):
    """A child that exits at once, every time: the supervisor must give up on it instead of looping."""

    def __init__(self) -> None:
        super().__init__("flaky", lambda: subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"]),
                         lambda proc: proc.wait())


def test_a_child_that_keeps_dying_stops_the_stack_loudly(caplog):
    """A child that exits right after each start is restarted with backoff, then the supervisor gives up."""
    caplog.set_level(logging.INFO, logger="stack")
    stack = Stack([Flaky()], backoff=Backoff(initial=0.1, maximum=0.2, max_failures=3), poll_seconds=0.05)
    stack.start()
    try:
        with pytest.raises(StackError, match=r"flaky died \(exit code 3\): 4 failures in a row"):
            stack.run(threading.Event())
    finally:
        stack.stop()
    assert stack.restarts("flaky") == 3
    assert caplog.text.count("flaky died (exit code 3)") == 3
    assert "restarting it in 0.1 s" in caplog.text and "restarting it in 0.2 s" in caplog.text
