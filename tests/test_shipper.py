"""The event shipper against a real Elasticsearch node: delivery, outage, bad URL and credentials.

Each test writes to its own index prefix so tests sharing the run's node never see each other's events.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from app.config import REPO_ROOT, Settings
from app.events import schema as events
from app.events.shipper import STAT_KEYS, EventShipper, Spool


def _prefix() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


def _settings(url: str, spool: Path, prefix: str, **extra) -> Settings:
    return Settings(es_url=url, spool_dir=str(spool), es_index_prefix=prefix, ship_flush_seconds=0.2, **extra)


def _inference(i: int = 0) -> dict:
    return events.make_event(
        events.INFERENCE, question=f"what color is shape {i}?", answer="red", quality_score=0.5 + i / 1000,
        latency_seconds=0.01 * i, drift_score=0.1, model_version="m1", adapter_version="a1",
        image_path=f"test/{i}.png",
    )


def _count(client: Elasticsearch, prefix: str) -> int:
    client.indices.refresh(index=f"{prefix}-*", allow_no_indices=True)
    return client.count(index=f"{prefix}-*", allow_no_indices=True)["count"]


def _wait_count(client: Elasticsearch, prefix: str, expected: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    n = _count(client, prefix)
    while n < expected and time.monotonic() < deadline:
        time.sleep(0.2)
        n = _count(client, prefix)
    return n


def _wait_failure(shipper: EventShipper, timeout: float = 10.0) -> tuple[str, str]:
    """Health once the shipper has tried and failed (it is "degraded, not yet connected" before)."""
    deadline = time.monotonic() + timeout
    while "not yet connected" in shipper.health()[1] and time.monotonic() < deadline:
        time.sleep(0.05)
    return shipper.health()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def shippers() -> Iterator[list[EventShipper]]:
    """Shippers a test starts; all closed at the end even if the test fails."""
    made: list[EventShipper] = []
    yield made
    for shipper in made:
        shipper.close(timeout=5)


def test_one_event_becomes_exactly_one_searchable_document(es_url, es_client, tmp_path, shippers):
    """One submitted event is searchable within 5 s as one document equal to the event, under its own id."""
    prefix = _prefix()
    shipper = EventShipper(_settings(es_url, tmp_path / "spool", prefix))
    shippers.append(shipper)
    shipper.start()
    doc = _inference(7)
    shipper.submit(doc)

    assert _wait_count(es_client, prefix, 1, timeout=5.0) == 1
    hits = es_client.search(index=f"{prefix}-*", query={"term": {events.REQUEST_ID: doc[events.REQUEST_ID]}})
    hit = hits["hits"]["hits"][0]
    assert hits["hits"]["total"]["value"] == 1
    assert hit["_source"] == doc
    assert hit["_id"] == events.document_id(doc)
    assert hit["_index"] == events.index_name(prefix, doc)
    assert shipper.health()[0] == "ok"
    assert shipper.stats()["shipped"] == 1


def test_events_submitted_during_an_outage_arrive_once_after_restart(restartable_es, tmp_path, shippers):
    """200 events submitted while Elasticsearch is down all arrive after it restarts, none duplicated."""
    prefix = _prefix()
    client = Elasticsearch(restartable_es.url, request_timeout=30)
    shipper = EventShipper(_settings(restartable_es.url, tmp_path / "spool", prefix), backoff_max=2.0)
    shippers.append(shipper)
    shipper.start()
    first = _inference(0)
    shipper.submit(first)
    assert _wait_count(client, prefix, 1, timeout=10) == 1

    restartable_es.stop()
    docs = [_inference(i) for i in range(1, 201)]
    for doc in docs:
        shipper.submit(doc)
    deadline = time.monotonic() + 10
    while shipper.health()[0] != "degraded" and time.monotonic() < deadline:
        time.sleep(0.1)
    status, message = shipper.health()
    assert status == "degraded" and "connection refused" in message, message

    restartable_es.start()
    assert _wait_count(client, prefix, 201, timeout=60) == 201
    ids = {h["_id"] for h in client.search(index=f"{prefix}-*", size=500, source=False)["hits"]["hits"]}
    assert ids == {events.document_id(d) for d in [first, *docs]}
    stats = shipper.stats()
    assert stats["spooled"] >= 1 and stats["dropped"] == 0
    assert not list((tmp_path / "spool").glob("*.jsonl"))
    client.close()


def test_unreachable_url_is_named_and_spooled_events_are_delivered_after_the_fix(es_url, es_client, tmp_path):
    """A wrong URL makes health say which URL is unreachable; a fixed process replays the spool."""
    prefix = _prefix()
    spool = tmp_path / "spool"
    wrong = f"http://127.0.0.1:{_closed_port()}"
    broken = EventShipper(_settings(wrong, spool, prefix))
    broken.start()
    docs = [_inference(i) for i in range(10)]
    for doc in docs:
        broken.submit(doc)
    status, message = _wait_failure(broken)
    broken.close(timeout=5)
    assert status == "degraded"
    assert message.startswith(f"cannot reach {wrong}: connection refused"), message
    assert broken.stats()["spooled"] == 10

    fixed = EventShipper(_settings(es_url, spool, prefix))
    fixed.start()
    try:
        assert _wait_count(es_client, prefix, 10, timeout=15) == 10
        deadline = time.monotonic() + 5
        while fixed.stats()["replayed"] < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fixed.stats()["replayed"] == 10
        assert fixed.health()[0] == "ok"
    finally:
        fixed.close(timeout=5)
    assert list(spool.iterdir()) == []


class _Unauthorized(BaseHTTPRequestHandler):
    """Answers every request as a secured Elasticsearch answers a wrong password."""

    seen_auth: list[str] = []

    def _reply(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        type(self).seen_auth.append(self.headers.get("Authorization", ""))
        body = json.dumps({
            "error": {"type": "security_exception", "reason": "unable to authenticate user [vqa] for REST request"},
            "status": 401,
        }).encode()
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="security", charset="UTF-8"')
        self.send_header("X-elastic-product", "Elasticsearch")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_POST = _reply

    def log_message(self, *args) -> None:
        pass


def test_wrong_credentials_are_named_without_the_password(es_url, es_client, tmp_path, caplog):
    """A 401 reads "authentication failed for user 'vqa' (401)", never logs the password, and the
    spooled events reach Elasticsearch once the credentials are right.

    The 401 comes from a local HTTP stand-in speaking Elasticsearch's 401 (the local node has no
    security module); the delivery after the fix goes to the real node.
    """
    caplog.set_level(logging.DEBUG)
    password = "s3cret-" + uuid.uuid4().hex
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Unauthorized)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    prefix = _prefix()
    spool = tmp_path / "spool"
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        shipper = EventShipper(_settings(url, spool, prefix, es_username="vqa", es_password=password))
        shipper.start()
        docs = [_inference(i) for i in range(5)]
        for doc in docs:
            shipper.submit(doc)
        status, message = _wait_failure(shipper)
        shipper.close(timeout=5)
    finally:
        server.shutdown()
        server.server_close()
    assert (status, message.split(";")[0]) == ("degraded", "authentication failed for user 'vqa' (401)")
    assert _Unauthorized.seen_auth and _Unauthorized.seen_auth[0].startswith("Basic ")
    assert shipper.stats()["spooled"] == 5
    assert caplog.records, "the failure should have been logged"
    assert all(password not in record.getMessage() for record in caplog.records)
    assert password not in caplog.text

    fixed = EventShipper(_settings(es_url, spool, prefix))
    fixed.start()
    try:
        assert _wait_count(es_client, prefix, 5, timeout=15) == 5
    finally:
        fixed.close(timeout=5)


def test_a_full_queue_spills_to_the_spool_and_nothing_is_lost(es_url, es_client, tmp_path, shippers):
    """With a 5-slot queue, 40 events submitted before the thread runs all reach Elasticsearch."""
    prefix = _prefix()
    shipper = EventShipper(_settings(es_url, tmp_path / "spool", prefix, ship_queue_size=5))
    shippers.append(shipper)
    for i in range(40):
        shipper.submit(_inference(i))
    assert shipper.stats()["spooled"] == 35 and shipper.stats()["queued"] == 5
    shipper.start()
    assert _wait_count(es_client, prefix, 40, timeout=15) == 40


def test_without_es_url_the_shipper_is_disabled_and_writes_nothing(tmp_path):
    """An empty ES_URL means status "disabled", no thread, no spool files, zero counters."""
    shipper = EventShipper(Settings(es_url="", spool_dir=str(tmp_path / "spool")))
    shipper.start()
    for i in range(100):
        shipper.submit(_inference(i))
    shipper.close()
    assert shipper.health()[0] == "disabled"
    assert "ES_URL is empty" in shipper.health()[1]
    assert shipper.stats() == dict.fromkeys(STAT_KEYS, 0)
    assert not (tmp_path / "spool").exists()


def test_submit_returns_at_once_while_elasticsearch_hangs(tmp_path):
    """Against a server that accepts connections and never answers, submits stay sub-millisecond.

    The queue holds 100, so most of the 2,000 go to the disk spool: that file append is the slowest
    path submit() has, and it must not wait for Elasticsearch (whose request here hangs for 5 s).
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    shipper = EventShipper(_settings(url, tmp_path / "spool", _prefix(), ship_queue_size=100))
    shipper.start()
    try:
        durations = []
        for i in range(2000):
            started = time.perf_counter()
            shipper.submit(_inference(i))
            durations.append(time.perf_counter() - started)
    finally:
        shipper.close(timeout=1)
        listener.close()
    durations.sort()
    assert durations[len(durations) // 2] < 0.001, f"median submit {durations[1000] * 1000:.2f} ms"
    assert durations[-1] < 0.1, f"slowest submit took {durations[-1] * 1000:.1f} ms"
    deadline = time.monotonic() + 10  # the batch that was in flight is spooled once its request fails
    while time.monotonic() < deadline:
        stats = shipper.stats()
        if stats["spooled"] + stats["shipped"] + stats["dropped"] == 2000:
            break
        time.sleep(0.05)
    assert stats["spooled"] + stats["shipped"] + stats["dropped"] == 2000
    assert stats["dropped"] == 0


_DYING_WRITER = """
import os, sys
from app.events.shipper import Spool
spool = Spool(sys.argv[1])
spool.append([b'{"request_id": "orphan-1"}\\n', b'{"request_id": "orphan-2"}\\n'])
os._exit(0)  # dies without sealing its active file
"""


def test_a_dead_workers_spool_file_is_recovered_and_each_file_is_claimed_once(tmp_path):
    """A .part file left by a killed process is sealed by the next scan; two claimers never share a file."""
    directory = tmp_path / "spool"
    subprocess.run([sys.executable, "-c", _DYING_WRITER, str(directory)], cwd=REPO_ROOT, check=True)
    assert [p.suffix for p in directory.iterdir()] == [".part"]

    alive = Spool(directory)
    alive.append([b'{"request_id": "mine"}\n'])
    other = Spool(directory)
    assert other.recover_orphans() == 1  # the dead writer's file, not the live one
    alive.seal()

    claimed_by: dict[str, int] = {}
    lines: list[bytes] = []
    for who, spool in enumerate((other, alive)):
        for path, fh in spool.claim():
            claimed_by[path.name.split(".jsonl")[0]] = who
            lines.extend(fh.read().splitlines())
            spool.done(path, fh)
    assert len(claimed_by) == 2
    assert sorted(json.loads(line)["request_id"] for line in lines) == ["mine", "orphan-1", "orphan-2"]
    assert list(directory.iterdir()) == []


def test_a_crash_of_the_delivery_loop_is_logged_restarted_and_loses_nothing(es_url, es_client, tmp_path, caplog,
                                                                             monkeypatch):
    """An unexpected error inside delivery: the traceback is logged, /readyz's check says so, the loop comes
    back, and every event (the crashed batch too, through the spool) is indexed once."""
    prefix = _prefix()
    real_bulk, crashes = EventShipper._bulk, []

    def bulk_that_crashes_once(self, docs):
        if not crashes:
            crashes.append(len(docs))
            raise KeyError("a bug in delivery")
        return real_bulk(self, docs)

    monkeypatch.setattr(EventShipper, "_bulk", bulk_that_crashes_once)
    shipper = EventShipper(_settings(es_url, tmp_path / "spool", prefix))
    shipper.start()
    try:
        for i in range(30):
            shipper.submit(_inference(i))
        deadline = time.monotonic() + 10
        while not crashes and time.monotonic() < deadline:
            time.sleep(0.05)
        status, detail = shipper.health()
        assert crashes and status == "degraded" and "KeyError" in detail, (status, detail)
        for i in range(30, 40):
            shipper.submit(_inference(i))
        assert _wait_count(es_client, prefix, 40, timeout=30) == 40
    finally:
        shipper.close()
    assert "background loop event-shipper crashed" in caplog.text and "a bug in delivery" in caplog.text
    assert _count(es_client, prefix) == 40
