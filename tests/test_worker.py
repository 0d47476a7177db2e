"""The service's gunicorn worker (app/serving/worker.py) under real gunicorn: a thread that answered a keep-alive
request waits for the next one on that connection, unless lingering is off or it is the last idle thread."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from app.serving.launch import free_port, start_service, stop_service
from app.serving.worker import WORKER_CLASS


@pytest.fixture
def lingering_server(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """gunicorn with the service's worker class on tests/wsgi_lingered.py: `start(linger_ms, threads) -> URL`."""
    procs = []

    def start(linger_ms: float, threads: int = 4) -> str:
        port = free_port()
        procs.append(start_service({"VQA_KEEPALIVE_LINGER_MS": str(linger_ms)}, port,
                                   log_path=tmp_path / f"gunicorn-{port}.log", app_spec="tests.wsgi_lingered:app",
                                   config=None, extra_args=["-w", "1", "-k", WORKER_CLASS, "--threads", str(threads)],
                                   timeout=60))
        return f"http://127.0.0.1:{port}/"

    yield start
    for proc in procs:
        stop_service(proc)


def _answers(url: str, in_a_row: int = 30) -> list[str]:
    with requests.Session() as http:  # one kept-alive connection
        return [http.get(url, timeout=10).text for _ in range(in_a_row)]


def test_a_clients_next_request_is_read_by_the_thread_that_answered_the_last(lingering_server):
    """With the default 5 ms, the requests after the first come to a lingering thread (most of them: a client
    slower than 5 ms between two requests goes back through gunicorn's poller, which is not an error)."""
    answers = _answers(lingering_server(5))
    assert answers[0] == "handed-off"  # a new connection always comes through the poller
    assert answers[1:].count("lingered") >= 20, answers


def test_with_lingering_off_every_request_is_handed_off_as_in_gthread(lingering_server):
    """The control: VQA_KEEPALIVE_LINGER_MS=0 is gunicorn's gthread."""
    assert set(_answers(lingering_server(0))) == {"handed-off"}


def test_the_last_idle_thread_never_lingers_so_other_clients_are_served(lingering_server):
    """With one thread, that thread is always the last idle one: two clients in turn are both answered,
    each request handed off."""
    url = lingering_server(5, threads=1)
    with requests.Session() as first, requests.Session() as second:
        answers = [session.get(url, timeout=10).text for _ in range(5) for session in (first, second)]
    assert answers == ["handed-off"] * 10
