"""The service's gunicorn worker (app/serving/worker.py) under real gunicorn: a thread that answered a keep-alive
request waits for the next one on that connection, unless lingering is off or it is the last idle thread."""

from __future__ import annotations

from collections.abc import Callable

import requests

from app.serving.worker import WORKER_CLASS


def _answers(gunicorn: Callable[..., str], linger_ms: float, *, threads: int = 4, in_a_row: int = 30) -> list[str]:
    """One client's answers from tests/wsgi_lingered.py under the service's worker class, on one connection."""
    url = gunicorn({"VQA_KEEPALIVE_LINGER_MS": str(linger_ms)}, threads=threads,
                   extra_args=["-w", "1", "-k", WORKER_CLASS], app_spec="tests.wsgi_lingered:app", config=None)
    with requests.Session() as http:  # one kept-alive connection
        return [http.get(url, timeout=10).text for _ in range(in_a_row)]


def test_a_clients_next_request_is_read_by_the_thread_that_answered_the_last(gunicorn):
    """With 5 ms, the requests after the first come to a lingering thread (most of them: a client slower
    than 5 ms between two requests goes back through gunicorn's poller, which is not an error)."""
    answers = _answers(gunicorn, 5)
    assert answers[0] == "handed-off"  # a new connection always comes through the poller
    assert answers[1:].count("lingered") >= 20, answers


def test_with_lingering_off_every_request_is_handed_off_as_in_gthread(gunicorn):
    """The control: VQA_KEEPALIVE_LINGER_MS=0 is gunicorn's gthread."""
    assert set(_answers(gunicorn, 0)) == {"handed-off"}


def test_the_last_idle_thread_never_lingers(gunicorn):
    """With one thread, that thread is always the last idle one: the same quick client as above is handed off
    every time, so a new connection never waits for a thread that holds an idle one."""
    assert set(_answers(gunicorn, 5, threads=1)) == {"handed-off"}
