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
