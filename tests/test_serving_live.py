"""A real gunicorn on a loopback port: parallel requests, and a hot adapter switch with no failed request."""

from __future__ import annotations

import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from app.model.registry import promote_adapter


@pytest.fixture
def server(settings, tmp_path, gunicorn):
    """gunicorn serving the small model, with the adapters folder watched every 0.2 s; (URL, its log)."""
    base = gunicorn({**settings.to_env(), "VQA_ADMIN_TOKEN": "s3cret-token"})
    return base, tmp_path / f"gunicorn-{base.rsplit(':', 1)[1]}.log"


def ask(base: str, i: int) -> requests.Response:
    return requests.post(f"{base}/predict", json={"image_path": f"test/{i % 50}.png",
                                                  "question": "what color is the shape?"}, timeout=60)


def test_parallel_requests_are_all_answered(server):
    """Forty requests from eight threads all get 200 with their own request id."""
    base, _ = server
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda i: ask(base, i), range(40)))
    assert [r.status_code for r in responses] == [200] * 40
    assert len({r.json()["request_id"] for r in responses}) == 40


def test_event_lines_reach_stdout_without_secrets(server):
    """gunicorn's stdout carries one LOG_EVENT line per request and never the admin token."""
    base, log_path = server
    ask(base, 1)
    requests.post(f"{base}/predict", json={"question": "q"}, timeout=10)
    time.sleep(0.5)
    text = log_path.read_text()
    assert text.count("LOG_EVENT {") >= 2 and '"event":"error"' in text
    assert "s3cret-token" not in text


def test_hot_switch_to_a_promoted_adapter_fails_no_request(server, settings, tiny_adapter):
    """While requests flow, promoting an adapter switches adapter_version live with zero failures."""
    base, _ = server
    adapters = settings.adapters_dir
    target = shutil.copytree(tiny_adapter, f"{adapters}/{tiny_adapter.name}")
    results: list[requests.Response] = []
    stop = threading.Event()

    def flow(worker: int) -> None:
        i = 0
        while not stop.is_set():
            results.append(ask(base, worker * 100 + i))
            i += 1

    threads = [threading.Thread(target=flow, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    promote_adapter(adapters, target)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(
            r.status_code == 200 and r.json()["adapter_version"] == tiny_adapter.name for r in list(results)):
        time.sleep(0.2)
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join()
    assert results and all(r.status_code == 200 for r in results)
    versions = [r.json()["adapter_version"] for r in results]
    assert versions[0] == "none" and versions[-1] == tiny_adapter.name
    ready = requests.get(f"{base}/readyz", timeout=5).json()
    assert ready["adapter_version"] == tiny_adapter.name


def test_admin_reload_needs_the_token(server):
    """/admin/reload answers 401 without the right bearer token and 200 with it."""
    base, _ = server
    assert requests.post(f"{base}/admin/reload", timeout=10).status_code == 401
    bad = requests.post(f"{base}/admin/reload", headers={"Authorization": "Bearer wrong"}, timeout=10)
    assert bad.status_code == 401
    ok = requests.post(f"{base}/admin/reload", headers={"Authorization": "Bearer s3cret-token"}, timeout=60)
    assert ok.status_code == 200 and ok.json()["adapter_version"] == "none"


# --- several workers -------------------------------------------------------------------------
@pytest.fixture
def two_workers(settings, tmp_path, gunicorn):
    """gunicorn with WEB_CONCURRENCY=2 and its metrics folder where the test can see it; (URL, that folder)."""
    metrics_dir = tmp_path / "metrics"
    base = gunicorn({**settings.to_env(), "WEB_CONCURRENCY": "2", "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
                    threads=8)
    log = tmp_path / f"gunicorn-{base.rsplit(':', 1)[1]}.log"
    deadline = time.monotonic() + 90
    while log.read_text().count("loaded model") < 2 and time.monotonic() < deadline:  # /readyz saw one of them
        time.sleep(0.2)
    assert log.read_text().count("loaded model") == 2
    return base, metrics_dir


def worker_pids(metrics_dir) -> set[int]:
    """Pids of the workers that wrote metrics (prometheus_client names its files `<kind>_<pid>.db`)."""
    return {int(p.stem.rsplit("_", 1)[1]) for p in metrics_dir.glob("*.db")}


def counted(base: str, endpoint: str = "/predict", status: str = "200") -> float:
    """vqa_requests_total for one endpoint and status, from a fresh connection (any worker may answer)."""
    text = requests.get(f"{base}/metrics", timeout=10, headers={"Connection": "close"}).text
    line = f'vqa_requests_total{{endpoint="{endpoint}",status="{status}"}} '
    return float(next((row[len(line):] for row in text.splitlines() if row.startswith(line)), "0"))


def answered_per_worker(metrics_dir) -> dict[int, float]:
    """Each worker's own count of answered /predict requests, read from its metrics file alone."""
    from prometheus_client.multiprocess import MultiProcessCollector

    counts = {}
    for path in metrics_dir.glob("counter_*.db"):
        samples = [s for m in MultiProcessCollector.merge([str(path)]) for s in m.samples]
        counts[int(path.stem.rsplit("_", 1)[1])] = sum(
            s.value for s in samples if s.name == "vqa_requests_total" and s.labels.get("status") == "200")
    return counts


def test_two_workers_report_the_same_totals_whichever_answers_the_scrape(two_workers):
    """With WEB_CONCURRENCY=2 both workers answer, and every /metrics scrape counts the requests of both."""
    base, metrics_dir = two_workers
    sent = 0
    with ThreadPoolExecutor(8) as pool:
        while sent < 400 and not (len(answered_per_worker(metrics_dir)) == 2
                                  and all(answered_per_worker(metrics_dir).values())):
            assert [r.status_code for r in pool.map(lambda i: ask(base, i), range(sent, sent + 16))] == [200] * 16
            sent += 16
    per_worker = answered_per_worker(metrics_dir)
    assert len(per_worker) == 2 and all(per_worker.values()) and sum(per_worker.values()) == sent
    assert [counted(base) for _ in range(8)] == [float(sent)] * 8
    text = requests.get(f"{base}/metrics", timeout=10).text
    assert "vqa_batch_size_count" in text and f"vqa_queue_wait_seconds_count {float(sent)}" in text


def test_a_dead_worker_keeps_its_counts_and_drops_its_live_gauges(two_workers):
    """After a worker exits, gunicorn's child_exit marks it dead: its requests stay counted, its live gauge goes."""
    import os
    import signal

    base, metrics_dir = two_workers
    for i in range(10):
        assert ask(base, i).status_code == 200
    gone = min(worker_pids(metrics_dir))
    assert list(metrics_dir.glob(f"gauge_livesum_{gone}.db"))
    os.kill(gone, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while list(metrics_dir.glob(f"gauge_livesum_{gone}.db")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not list(metrics_dir.glob(f"gauge_livesum_{gone}.db"))
    assert counted(base) == 10.0


def test_feedback_reaches_any_worker_at_once_with_the_receipt(two_workers):
    """Feedback sent on a fresh connection right after each answer is accepted by whichever worker gets it."""
    base, _ = two_workers
    labelled = []
    for i in range(12):
        body = ask(base, i).json()
        r = requests.post(f"{base}/feedback", json={"request_id": body["request_id"], "receipt": body["receipt"],
                                                    "answer": body["answer"]},
                          headers={"Connection": "close"}, timeout=10)
        labelled.append((r.status_code, r.json().get("request_id") == body["request_id"]))
    assert labelled == [(200, True)] * 12
    assert counted(base, "/feedback") == 12.0


def test_no_worker_takes_requests_before_its_model_is_loaded(settings, gunicorn):
    """Right after /readyz first passes with two workers, a burst on fresh connections is all 200 (no 503)."""
    base = gunicorn({**settings.to_env(), "WEB_CONCURRENCY": "2"}, threads=8)
    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(lambda i: requests.post(
            f"{base}/predict", json={"image_path": f"test/{i}.png", "question": "what shape is in the image?"},
            headers={"Connection": "close"}, timeout=60).status_code, range(48)))
    assert codes == [200] * 48


def test_gunicorn_config_reads_workers_threads_and_shared_settings(monkeypatch):
    """gunicorn.conf.py takes workers and threads from WEB_CONCURRENCY and GUNICORN_THREADS (through Settings)."""
    import runpy

    from app.config import REPO_ROOT

    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    monkeypatch.setenv("GUNICORN_THREADS", "24")
    conf = runpy.run_path(str(REPO_ROOT / "gunicorn.conf.py"))
    assert (conf["workers"], conf["threads"]) == (3, 24)


# --- keep-alive connections spread over the workers ------------------------------------------
def serving_workers(port: int) -> list[int]:
    """Pids of the gunicorn workers bound to `port`: the processes of that command line whose parent is one too."""
    import os
    from pathlib import Path

    pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()
            and f"127.0.0.1:{port}".encode() in _read_bytes(p / "cmdline")]
    parent = {pid: int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]) for pid in pids}
    return sorted(pid for pid in pids if parent[pid] in pids and os.path.exists(f"/proc/{pid}"))


def _read_bytes(path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def connection_owners(port: int, conns: list, workers: list[int]) -> list[int | None]:
    """For each open client connection, the worker pid holding its server side (from /proc/net/tcp and fds)."""
    import os
    from pathlib import Path

    inode_of_client_port = {}
    for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = row.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port:
            inode_of_client_port[int(fields[2].rsplit(":", 1)[1], 16)] = fields[9]
    owner = {}
    for pid in workers:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link.startswith("socket:["):
                owner[link[8:-1]] = pid
    return [owner.get(inode_of_client_port.get(c.sock.getsockname()[1])) if c.sock else None for c in conns]


def spread_after_one_worker_took_all(base: str, rounds: int = 30) -> tuple[list[int], list[int]]:
    """Stop one worker, open 8 keep-alive connections (the other accepts all), resume it, then send rounds
    of requests on every connection; returns (statuses, connections per worker at the end).

    The requests are sequential, so no worker ever holds two in flight: what moves the connections is
    the table alone.
    """
    import http.client
    import os
    import signal

    port = int(base.rsplit(":", 1)[1])
    workers = serving_workers(port)
    assert len(workers) == 2
    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=30) for _ in range(8)]
    statuses = []

    def one_round() -> None:
        for c in conns:
            c.request("GET", "/healthz")
            response = c.getresponse()
            response.read()
            statuses.append(response.status)

    os.kill(workers[1], signal.SIGSTOP)
    try:
        one_round()
    finally:
        os.kill(workers[1], signal.SIGCONT)
    assert set(connection_owners(port, conns, workers)) <= {workers[0], None}  # None: closed to rebalance
    for _ in range(rounds):
        one_round()
        one_round()  # the second round reopens what the first closed
        owners = connection_owners(port, conns, workers)
        per_worker = [owners.count(pid) for pid in workers]
        if per_worker == [4, 4]:
            break
    one_round()  # with nothing left to move, each worker's last request sees the final spread
    for c in conns:
        c.close()
    return statuses, per_worker


def published_spread(base: str) -> list[int]:
    """The `vqa_connections_held` gauge on /metrics: what each worker held at its last request, sorted."""
    from prometheus_client.parser import text_string_to_metric_families

    from app.serving.metrics import CONNECTIONS_METRIC

    text = requests.get(f"{base}/metrics", timeout=10, headers={"Connection": "close"}).text
    return sorted(int(s.value) for f in text_string_to_metric_families(text) if f.name == CONNECTIONS_METRIC
                  for s in f.samples)


@pytest.fixture
def two_workers_unbalanced(settings, tmp_path, gunicorn):
    """Two workers with VQA_BALANCE_CONNECTIONS=0 (gunicorn's own behaviour); its URL."""
    return gunicorn({**settings.to_env(), "WEB_CONCURRENCY": "2", "VQA_BALANCE_CONNECTIONS": "0"}, threads=8)


def test_keepalive_connections_even_out_over_two_workers(two_workers):
    """Eight keep-alive clients all on one worker end up four and four, every request answered, and /metrics says so."""
    base, _ = two_workers
    statuses, per_worker = spread_after_one_worker_took_all(base)
    assert per_worker == [4, 4]
    assert set(statuses) == {200}
    assert published_spread(base) == [4, 4]
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(f"{base}/metrics", timeout=10).text
    closed = [s.value for f in text_string_to_metric_families(text) for s in f.samples
              if s.name == "vqa_connections_rebalanced_total"]
    assert closed and closed[0] >= 4


def test_without_balancing_the_connections_stay_where_they_landed(two_workers_unbalanced):
    """The control: with VQA_BALANCE_CONNECTIONS=0 the eight connections stay on the worker that took them."""
    statuses, per_worker = spread_after_one_worker_took_all(two_workers_unbalanced, rounds=3)
    assert sorted(per_worker) == [0, 8]
    assert set(statuses) == {200}
    assert max(published_spread(two_workers_unbalanced)) == 8  # the idle one's sample is its last request's (/readyz)
