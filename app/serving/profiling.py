"""Where one `/predict` spends its time, measured in this process (no sockets): the bare model call against the
app's request path, the cost of each step the app adds, and cProfile's cumulative time of the project's functions.

`scripts/profile_request.py` is its command line. The profiler is cProfile (standard library, deterministic:
it counts every call, which inflates Python-heavy code), so its numbers show where time goes; the step costs
and the paired overhead are plain `perf_counter` loops. The socket part (gunicorn, loopback, the client)
is measured by `scripts/bench_load.py`'s paired rounds.
"""

from __future__ import annotations

import cProfile
import logging
import os
import pstats
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from app.events import schema as events
from app.serving.loadbench import SEED_REQUEST


def _timed(fn: Callable[[], object], repeat: int) -> float:
    """Mean microseconds per call of `fn` over `repeat` calls, after a short warm-up."""
    for _ in range(min(50, repeat)):
        fn()
    began = time.perf_counter()
    for _ in range(repeat):
        fn()
    return 1e6 * (time.perf_counter() - began) / repeat


def step_costs(app, repeat: int = 2000) -> dict[str, float]:
    """Microseconds per call of each step `/predict` adds around the model call, on the seed request."""
    from flask import jsonify

    from app.serving.images import load_image_file

    svc = app.extensions["vqa"]
    settings, vqa = svc.settings, svc.models.current
    image = load_image_file(settings.images_root, SEED_REQUEST["image_path"])
    pred = vqa.answer([image], [SEED_REQUEST["question"]])[0]

    def event() -> dict:
        return events.make_event(
            events.INFERENCE, request_id=events.new_request_id(), question=SEED_REQUEST["question"],
            answer=pred.answer, quality_score=pred.quality_score, drift_score=pred.drift_score,
            latency_seconds=0.01, status=200, model_version=vqa.model_version,
            adapter_version=vqa.adapter_version, image_path=SEED_REQUEST["image_path"], signature=pred.signature,
            batch_size=1)

    doc = event()

    def metrics() -> None:
        svc.metrics.requests.labels(endpoint="/predict", status="200").inc()
        svc.metrics.latency.observe(0.01)
        svc.metrics.quality.observe(pred.quality_score)
        svc.metrics.drift.observe(pred.drift_score or 0.0)

    with quiet_events(), app.test_request_context():
        return {
            "read and decode the image": _timed(lambda: load_image_file(
                settings.images_root, SEED_REQUEST["image_path"], max_pixels=settings.max_image_pixels),
                max(1, repeat // 4)),
            "build the LOG_EVENT": _timed(event, repeat),
            "emit it (stdout line, shipper queue)": _timed(lambda: svc.emit(doc), repeat),
            "remember it for /feedback": _timed(lambda: svc.recent.add(dict(doc)), repeat),
            "Prometheus metrics": _timed(metrics, repeat),
            "sign the receipt": _timed(lambda: svc.receipts.issue(doc), repeat),
            "JSON response": _timed(lambda: jsonify({k: doc[k] for k in events.RESPONSE_FIELDS if k in doc}), repeat),
        }


def paired_overhead(app, rounds: int = 10, seconds: float = 0.8) -> list[tuple[float, float]]:
    """(bare model p50, in-process /predict p50) in ms, per round; the two alternate so the machine's
    drifting speed hits both alike. The in-process request is Flask's test client on this thread."""
    from app.serving.images import load_image_file

    svc = app.extensions["vqa"]
    vqa = svc.models.current
    image = load_image_file(svc.settings.images_root, SEED_REQUEST["image_path"])
    client = app.test_client()

    def p50(fn: Callable[[], object]) -> float:
        times, until = [], time.monotonic() + seconds
        while time.monotonic() < until:
            began = time.perf_counter()
            fn()
            times.append(time.perf_counter() - began)
        return round(1000 * statistics.median(times), 2)

    def request() -> None:
        response = client.post("/predict", json=SEED_REQUEST)
        if response.status_code != 200:
            raise RuntimeError(f"/predict answered {response.status_code}: {response.get_data(as_text=True)}")

    with quiet_events():
        return [(p50(lambda: vqa.answer([image], [SEED_REQUEST["question"]])), p50(request)) for _ in range(rounds)]


def profile(app, n: int = 300, top: int = 15) -> str:
    """cProfile of `n` in-process /predict requests: cumulative ms per request of the project's functions
    (the request path and the model call), so what the path adds around `VQAModel.answer` shows."""
    client = app.test_client()
    profiler = cProfile.Profile()
    with quiet_events():
        profiler.enable()
        for _ in range(n):
            client.post("/predict", json=SEED_REQUEST)
        profiler.disable()
    stats = pstats.Stats(profiler)
    rows = []
    for (path, line, name), (_, calls, _own, cumulative, _) in stats.stats.items():
        where = path.replace(os.sep, "/")
        if "/app/" in where or where.endswith("flask/app.py") and name == "wsgi_app":
            rows.append((cumulative, calls, f"{where.rsplit('/app/', 1)[-1] if '/app/' in where else 'flask'}"
                                            f":{line}({name})"))
    rows.sort(reverse=True)
    out = [f"{n} requests under cProfile (it inflates Python-heavy code); cumulative time of the project's "
           "functions:", f"{'ms/request':>11} {'calls/req':>9}  function"]
    out += [f"{1000 * cumulative / n:11.3f} {calls / n:9.1f}  {where}" for cumulative, calls, where in rows[:top]]
    return "\n".join(out)


@contextmanager
def quiet_events() -> Iterator[None]:
    """Keep the LOG_EVENT lines of the measured requests off the terminal."""
    logger = logging.getLogger(events.LOGGER_NAME)
    before = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = before
