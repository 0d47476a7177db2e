"""The HTTP edge of /predict and /feedback: answers, response fields, LOG_EVENTs, and every bad input."""

from __future__ import annotations

import base64
import io
import json
import logging
import time

import pytest
from PIL import Image

from app.events import schema as events

FIELDS = {"answer", "event", "latency_seconds", "quality_score", "question"}


def png(size=(64, 64), color="red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def event_lines(app):
    """Every LOG_EVENT line the app writes during the test, parsed."""
    records: list[str] = []

    class Grab(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = Grab()
    logger = logging.getLogger(events.LOGGER_NAME)
    logger.addHandler(handler)
    yield lambda: [events.parse_line(r) for r in records if events.parse_line(r)]
    logger.removeHandler(handler)


def test_json_image_path_returns_the_seed_fields(client, event_lines):
    """The seed's request shape answers with the five fields plus request id, versions and drift."""
    r = client.post("/predict", json={"image_path": "test/0.png", "question": "what color is the shape?"})
    assert r.status_code == 200
    body = r.get_json()
    assert FIELDS <= set(body)
    assert body["event"] == "inference"
    assert 0.0 <= body["quality_score"] <= 1.0
    assert body["latency_seconds"] > 0
    assert body["drift_score"] > 0
    assert body["model_version"].startswith("blip-vqa-small") and body["adapter_version"] == "none"
    logged = event_lines()
    assert len(logged) == 1 and logged[0]["request_id"] == body["request_id"]
    assert logged[0]["status"] == 200 and logged[0]["answer"] == body["answer"]
    assert "@timestamp" in logged[0]
    assert logged[0]["batch_size"] == 1 and "batch_size" in events.FIELD_TYPES
    assert body["receipt"] and "receipt" not in logged[0]


def test_base64_and_multipart_give_the_same_answer_as_the_path(client, images_root):
    """The three input forms carry the same image to the same answer and score."""
    data = (images_root / "test" / "3.png").read_bytes()
    q = "what shape is in the image?"
    by_path = client.post("/predict", json={"image_path": "test/3.png", "question": q}).get_json()
    by_b64 = client.post("/predict", json={"image_base64": base64.b64encode(data).decode(), "question": q}).get_json()
    by_form = client.post("/predict", data={"question": q, "image": (io.BytesIO(data), "3.png")},
                          content_type="multipart/form-data").get_json()
    assert by_path["answer"] == by_b64["answer"] == by_form["answer"]
    assert by_path["quality_score"] == pytest.approx(by_form["quality_score"], abs=1e-5)


def test_small_model_answers_most_test_images_correctly(client, dataset_dir):
    """Over HTTP, the small model gets at least 80% of 60 test questions right."""
    import pandas as pd

    rows = pd.read_csv(dataset_dir / "VQA_Dataset.csv")
    rows = rows[rows["split"] == "test"].sample(n=60, random_state=1)
    right = 0
    for row in rows.itertuples():
        body = client.post("/predict", json={"image_path": row.image_path, "question": row.question}).get_json()
        right += body["answer"] == row.answer
    assert right / len(rows) >= 0.8


BAD_JSON = [
    ({"image_path": "test/0.png"}, 400, "`question` is missing"),
    ({"image_path": "test/0.png", "question": "   "}, 400, "`question` is empty"),
    ({"image_path": "test/0.png", "question": 7}, 400, "must be a string"),
    ({"image_path": "test/0.png", "question": "x" * 513}, 400, "limit is 512"),
    ({"question": "what?"}, 400, "exactly one of"),
    ({"image_path": "/etc/passwd", "question": "what?"}, 400, "not absolute"),
    ({"image_path": "../../etc/passwd", "question": "what?"}, 400, "must not contain `..`"),
    ({"image_path": "test/999999.png", "question": "what?"}, 404, "no image at"),
    ({"image_path": "x" * 5000, "question": "what?"}, 400, "the limit is 1024"),
    ({"image_path": "y" * 1000, "question": "what?"}, 400, "cannot be used as a file name"),
    ({"image_base64": "%%%not base64%%%", "question": "what?"}, 400, "not valid base64"),
    ({"image_base64": base64.b64encode(b"plain text").decode(), "question": "what?"}, 400, "not an image"),
    ({"image_base64": base64.b64encode(png()[:100]).decode(), "question": "what?"}, 400, "truncated or corrupt"),
    ({"image_base64": base64.b64encode(png((1100, 1000))).decode(), "question": "what?"}, 413, "over the limit"),
]


@pytest.mark.parametrize(("body", "status", "message"), BAD_JSON)
def test_bad_json_input_gets_a_clear_4xx_and_an_error_event(client, event_lines, body, status, message):
    """Each bad input answers its 4xx with a message saying what to change, and logs an error event."""
    r = client.post("/predict", json=body)
    assert r.status_code == status
    assert message in r.get_json()["error"]
    logged = event_lines()
    assert logged[-1]["event"] == "error" and logged[-1]["status"] == status
    assert message in logged[-1]["error"]
    assert "root:" not in r.get_json()["error"]  # no file contents leak


def test_invalid_json_and_wrong_content_type(client):
    """A broken JSON body is a 400, a non-JSON non-form body a 415."""
    r = client.post("/predict", data="{not json", content_type="application/json")
    assert r.status_code == 400 and "not valid JSON" in r.get_json()["error"]
    r = client.post("/predict", data="question=hi", content_type="text/plain")
    assert r.status_code == 415 and "application/json or multipart/form-data" in r.get_json()["error"]
    r = client.post("/predict", json=["a", "list"])
    assert r.status_code == 400 and "must be an object" in r.get_json()["error"]


def test_multipart_without_file_and_with_garbage_file(client):
    """A form without the image, or with a non-image, says which."""
    r = client.post("/predict", data={"question": "what?"}, content_type="multipart/form-data")
    assert r.status_code == 400 and "no `image` file" in r.get_json()["error"]
    r = client.post("/predict", data={"question": "what?", "image": (io.BytesIO(b"GIF89a broken"), "x.gif")},
                    content_type="multipart/form-data")
    assert r.status_code == 400


def test_body_over_the_size_limit_is_413(client, app):
    """A body larger than VQA_MAX_CONTENT_LENGTH is refused with 413 before it is read."""
    big = b"0" * (app.extensions["vqa"].settings.max_content_length + 10)
    r = client.post("/predict", data={"question": "q", "image": (io.BytesIO(big), "big.png")},
                    content_type="multipart/form-data")
    assert r.status_code == 413 and "over the limit" in r.get_json()["error"]


def test_symlink_escape_never_reveals_the_target(tmp_path, settings, client, app):
    """A symlink under the images root pointing outside is refused and its target never read."""
    import os

    from app.config import Settings

    root = tmp_path / "root"
    root.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    os.symlink(secret, root / "link.png")
    app.extensions["vqa"].settings = Settings(**{**settings.__dict__, "images_root": str(root)})
    r = client.post("/predict", json={"image_path": "link.png", "question": "what?"})
    assert r.status_code == 400 and "TOP-SECRET" not in r.get_data(as_text=True)


def test_service_keeps_serving_after_bad_requests(client):
    """After a burst of bad requests, a good one still answers 200."""
    for _ in range(5):
        client.post("/predict", data="{", content_type="application/json")
        client.post("/predict", json={"image_path": "../x", "question": "q"})
    assert client.post("/predict", json={"image_path": "test/1.png", "question": "what?"}).status_code == 200


def test_unknown_route_and_method_are_json_4xx(client):
    """Flask's own 404 and 405 come back as JSON errors too."""
    assert client.get("/nope").status_code == 404 and "error" in client.get("/nope").get_json()
    r = client.get("/predict")
    assert r.status_code == 405 and "not allowed" in r.get_json()["error"]


def test_feedback_records_a_labelled_event_once_per_request(client, app):
    """Feedback on a known request logs a feedback event; an unknown request id is a 404."""
    body = client.post("/predict", json={"image_path": "test/0.png", "question": "what color is the shape?"})
    rid = body.get_json()["request_id"]
    shipped = app.extensions["vqa"].shipper.events
    r = client.post("/feedback", json={"request_id": rid, "answer": body.get_json()["answer"]})
    assert r.status_code == 200 and r.get_json()["is_correct"] is True
    fb = [e for e in shipped if e["event"] == "feedback"]
    assert len(fb) == 1 and events.document_id(fb[0]) == f"feedback-{rid}"
    assert fb[0]["image_path"] == "test/0.png"
    r = client.post("/feedback", json={"request_id": rid, "answer": "definitely-wrong"})
    assert r.get_json()["is_correct"] is False
    assert events.document_id([e for e in shipped if e["event"] == "feedback"][-1]) == f"feedback-{rid}"
    assert client.post("/feedback", json={"request_id": "nope", "answer": "red"}).status_code == 404
    assert client.post("/feedback", json={"request_id": rid}).status_code == 400


def test_feedback_token_when_set_is_required(settings, null_shipper):
    """With VQA_FEEDBACK_TOKEN set, /feedback without it (or with a wrong one) is 401; with it, 200."""
    from dataclasses import replace

    from app import create_app

    application = create_app(replace(settings, feedback_token="fb-s3cret"), shipper=null_shipper)
    try:
        assert application.extensions["vqa"].models.wait_ready(60)
        c = application.test_client()
        rid = c.post("/predict", json={"image_path": "test/0.png", "question": "what shape is in the image?"}
                     ).get_json()["request_id"]
        label = {"request_id": rid, "answer": "circle"}
        anonymous = c.post("/feedback", json=label)
        assert anonymous.status_code == 401 and "VQA_FEEDBACK_TOKEN" in anonymous.get_json()["error"]
        assert c.post("/feedback", json=label, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert [e for e in null_shipper.events if e["event"] == "feedback"] == []
        ok = c.post("/feedback", json=label, headers={"Authorization": "Bearer fb-s3cret"})
        assert ok.status_code == 200 and ok.get_json()["correct_answer"] == "circle"
        assert "fb-s3cret" not in str(application.extensions["vqa"].settings)
    finally:
        application.extensions["vqa"].close()


def test_openapi_description_names_every_route(client, app):
    """/openapi.json is OpenAPI 3 and describes each route the app serves (but the static ones)."""
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    served = {rule.rule for rule in app.url_map.iter_rules() if rule.endpoint != "static"}
    assert served == set(spec["paths"])


def test_feedback_with_the_receipt_needs_no_memory_of_the_request(client, app):
    """A receipt alone identifies the prediction: accepted after this worker forgot it (as another worker would)."""
    answer = client.post("/predict", json={"image_path": "test/2.png", "question": "what shape is in the image?"})
    body = answer.get_json()
    svc = app.extensions["vqa"]
    svc.recent = type(svc.recent)(svc.settings.recent_predictions)  # forgotten, as by a worker that never saw it
    assert client.post("/feedback", json={"request_id": body["request_id"], "answer": "x"}).status_code == 404
    r = client.post("/feedback", json={"receipt": body["receipt"], "answer": body["answer"]})
    assert r.status_code == 200
    fb = r.get_json()
    assert (fb["request_id"], fb["image_path"], fb["is_correct"]) == (body["request_id"], "test/2.png", True)
    assert (fb["question"], fb["model_version"]) == (body["question"], body["model_version"])
    both = client.post("/feedback", json={"request_id": body["request_id"], "receipt": body["receipt"], "answer": "y"})
    assert both.status_code == 200 and both.get_json()["is_correct"] is False


@pytest.mark.parametrize("tamper", ["payload", "signature", "shape"])
def test_a_forged_or_altered_receipt_is_refused(client, tamper):
    """A receipt whose payload or signature was changed, or that is not one at all, is a 400."""
    receipt = client.post("/predict", json={"image_path": "test/2.png", "question": "what?"}).get_json()["receipt"]
    payload, tag = receipt.split(".")
    forged = {"payload": f"{payload[:-2]}AA.{tag}", "signature": f"{payload}.{tag[:-2]}AA", "shape": "no-dots"}[tamper]
    r = client.post("/feedback", json={"receipt": forged, "answer": "red"})
    assert r.status_code == 400 and "receipt" in r.get_json()["error"]
    other = client.post("/predict", json={"image_path": "test/3.png", "question": "what?"}).get_json()
    r = client.post("/feedback", json={"request_id": other["request_id"], "receipt": receipt, "answer": "red"})
    assert r.status_code == 400 and "different predictions" in r.get_json()["error"]


class HeldModel:
    """Stands in for the model and holds every call until released, so the queue fills."""

    model_version, adapter_version = "held", "none"

    def __init__(self):
        import threading

        self.entered, self.release = threading.Event(), threading.Event()

    def answer(self, images, questions):
        from app.model.vqa import Prediction

        self.entered.set()
        assert self.release.wait(60)
        return [Prediction("held", 0.5, 1.0) for _ in questions]


def test_a_full_queue_answers_503_with_retry_after_and_an_error_event(settings, null_shipper):
    """Over the queue bound a request gets 503 + Retry-After and an `error` LOG_EVENT; the queued ones still answer."""
    from concurrent.futures import ThreadPoolExecutor

    from app import create_app
    from app.config import Settings

    application = create_app(Settings(**{**settings.__dict__, "queue_size": 1}), shipper=null_shipper,
                             load_model=False)
    svc = application.extensions["vqa"]
    held = svc.models.current = HeldModel()
    c = application.test_client()
    ask = {"image_path": "test/1.png", "question": "what?"}
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(c.post, "/predict", json=ask)
        assert held.entered.wait(60)
        queued = pool.submit(c.post, "/predict", json=ask)
        deadline = time.monotonic() + 60
        while not svc.batcher._jobs and time.monotonic() < deadline:  # until the second one is queued
            time.sleep(0.01)
        refused = c.post("/predict", json=ask)
        held.release.set()
        assert running.result(60).status_code == 200 and queued.result(60).status_code == 200
    assert refused.status_code == 503 and int(refused.headers["Retry-After"]) >= 1
    assert "overloaded" in refused.get_json()["error"]
    errors = [e for e in null_shipper.events if e["event"] == "error"]
    assert len(errors) == 1 and errors[0]["status"] == 503
    assert errors[0]["request_id"] == refused.get_json()["request_id"]
    svc.close()


def test_a_request_waiting_past_the_timeout_answers_503(settings, null_shipper):
    """A request that cannot reach the model within VQA_REQUEST_TIMEOUT_S gets 503 with Retry-After."""
    from concurrent.futures import ThreadPoolExecutor

    from app import create_app
    from app.config import Settings

    application = create_app(Settings(**{**settings.__dict__, "request_timeout_s": 0.2}), shipper=null_shipper,
                             load_model=False)
    svc = application.extensions["vqa"]
    held = svc.models.current = HeldModel()
    c = application.test_client()
    ask = {"image_path": "test/1.png", "question": "what?"}
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(c.post, "/predict", json=ask)  # holds the model
        assert held.entered.wait(60)
        r = c.post("/predict", json=ask)  # waits in the queue behind it
        held.release.set()
        running.result(60)
    assert r.status_code == 503 and "Retry-After" in r.headers and "waited more than 0.2 s" in r.get_json()["error"]
    svc.close()


def test_health_readiness_and_metrics(client):
    """/healthz is alive, /readyz names each check, /metrics counts requests and scores."""
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    checks = ready.get_json()["checks"]
    assert checks["model"]["status"] == "ok" and checks["elasticsearch"]["status"] == "disabled"
    assert checks["model_thread"]["status"] == "ok"
    client.post("/predict", json={"image_path": "test/0.png", "question": "what?"})
    client.post("/predict", json={"question": "what?"})
    text = client.get("/metrics").get_data(as_text=True)
    assert 'vqa_requests_total{endpoint="/predict",status="200"} 1.0' in text
    assert 'vqa_requests_total{endpoint="/predict",status="400"} 1.0' in text
    assert "vqa_quality_score_bucket" in text and "vqa_request_latency_seconds_bucket" in text
    assert 'vqa_batch_size_bucket{le="1.0"} 1.0' in text and "vqa_queue_wait_seconds_count 1.0" in text


def test_readyz_names_a_dead_model_thread(client, app):
    """When the model thread has died, /readyz is 503 and says so; the next /predict is served by a new one."""
    svc = app.extensions["vqa"]
    svc.batcher.stop()
    svc.batcher._stopping = False  # as if it had died instead of being stopped
    r = client.get("/readyz")
    assert r.status_code == 503 and r.get_json()["checks"]["model_thread"]["status"] == "failing"
    assert "model thread is dead" in r.get_json()["checks"]["model_thread"]["detail"]
    assert client.post("/predict", json={"image_path": "test/0.png", "question": "what?"}).status_code == 200
    assert client.get("/readyz").status_code == 200


def test_readyz_fails_while_the_model_cannot_load(settings, null_shipper):
    """With a broken model directory, /readyz is 503 and says what is failing; /predict is 503."""
    from app import create_app
    from app.config import Settings

    broken = Settings(**{**settings.__dict__, "model_dir": "/nonexistent/model"})
    application = create_app(broken, shipper=null_shipper)
    try:
        application.extensions["vqa"].models.wait_ready(10)
        c = application.test_client()
        r = c.get("/readyz")
        assert r.status_code == 503
        assert "config.json missing" in r.get_json()["checks"]["model"]["detail"]
        assert c.post("/predict", json={"image_path": "test/0.png", "question": "q"}).status_code == 503
    finally:
        application.extensions["vqa"].close()


def test_event_line_format_round_trips():
    """`LOG_EVENT {json}` lines parse back to the same document."""
    doc = events.make_event(events.INFERENCE, question="q", answer="a", quality_score=0.5)
    line = events.format_line(doc)
    assert line.startswith("LOG_EVENT {") and events.parse_line("2026 INFO " + line) == doc
    assert json.loads(line.split(" ", 1)[1]) == doc
    with pytest.raises(ValueError):
        events.make_event(events.INFERENCE, not_a_field=1)


def test_inference_events_carry_the_input_signature_the_served_reference_reads(client, app):
    """The inference event holds the image's window-drift signature; /drift/reference serves its reference."""
    from app.model.window_drift import WindowReference

    body = client.post("/predict", json={"image_path": "test/0.png", "question": "what color is the shape?"})
    assert events.SIGNATURE not in body.get_json()  # the response keeps its fields
    [event] = [e for e in app.extensions["vqa"].shipper.events if e["event"] == "inference"]
    served = client.get("/drift/reference")
    assert served.status_code == 200
    payload = served.get_json()
    assert (payload["model_version"], payload["adapter_version"]) == (event["model_version"], "none")
    reference = WindowReference.from_dict(payload["reference"])
    assert len(event[events.SIGNATURE]) == reference.dims and all(isinstance(v, float) for v in event["signature"])
    assert events.SIGNATURE not in app.extensions["vqa"].recent.get(event["request_id"])


def test_drift_reference_of_a_model_without_one_is_a_404_that_says_how_to_make_it(client, app):
    """A model with no window reference answers /drift/reference with 404 and the command that fits one."""
    app.extensions["vqa"].models.current.window_reference = None
    r = client.get("/drift/reference")
    assert r.status_code == 404 and "scripts.fit_window_reference" in r.get_json()["error"]
    body = client.post("/predict", json={"image_path": "test/0.png", "question": "what color is the shape?"})
    assert body.status_code == 200
    assert events.SIGNATURE not in app.extensions["vqa"].shipper.events[-1]
