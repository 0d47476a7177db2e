"""The HTTP edge: parse and validate requests, queue them for the model, answer, and log one LOG_EVENT.

`/predict` and `/feedback` live here, with the health, readiness, metrics and admin endpoints.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import time
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from app.events import schema as events
from app.serving.batching import BatchingError
from app.serving.images import ImageInputError, decode_image, load_image_file
from app.serving.openapi import openapi_spec
from app.serving.receipts import ReceiptError
from app.serving.service import Service

log = logging.getLogger(__name__)
bp = Blueprint("vqa", __name__)


class RequestError(ValueError):
    """A request the service refuses; `status` is the HTTP code, the message says what to change."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def service() -> Service:
    return current_app.extensions["vqa"]


def error_response(message: str, status: int, *, request_id: str | None = None, question: Any = None,
                   started: float | None = None, retry_after: int | None = None) -> tuple[Response, int]:
    """A JSON error, counted in metrics and logged as an `error` LOG_EVENT; `retry_after` sets Retry-After."""
    svc = service()
    doc = events.make_event(
        events.ERROR, request_id=request_id, status=status, error=message,
        question=question if isinstance(question, str) else None,
        latency_seconds=round(time.perf_counter() - started, 6) if started else None,
    )
    svc.emit(doc)
    endpoint = request.url_rule.rule if request.url_rule is not None else "(unmatched)"
    svc.metrics.requests.labels(endpoint=endpoint, status=str(status)).inc()
    response = jsonify({"error": message, events.REQUEST_ID: doc[events.REQUEST_ID]})
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response, status


# --- request parsing ------------------------------------------------------------------
def _json_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if body is None:
        raise RequestError("the body is not valid JSON; send an object like "
                           '{"image_path": "...", "question": "..."}')
    if not isinstance(body, dict):
        raise RequestError("the JSON body must be an object with `question` and an image field")
    return body


def _question(raw: Any) -> str:
    limit = service().settings.max_question_chars
    if raw is None:
        raise RequestError("`question` is missing; add a question about the image")
    if not isinstance(raw, str):
        raise RequestError("`question` must be a string")
    question = raw.strip()
    if not question:
        raise RequestError("`question` is empty; add a question about the image")
    if len(question) > limit:
        raise RequestError(f"`question` has {len(question)} characters; the limit is {limit}")
    return question


def _image_from_base64(raw: Any):
    if not isinstance(raw, str) or not raw.strip():
        raise RequestError("`image_base64` must be a non-empty base64 string")
    payload = raw.split(",", 1)[1] if raw.startswith("data:") else raw
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError("`image_base64` is not valid base64") from exc
    return decode_image(data, max_pixels=service().settings.max_image_pixels, name="`image_base64` image")


def parse_predict_request() -> tuple[Any, str, str | None]:
    """(image, question, image reference for the log) from JSON or multipart, or a RequestError."""
    settings = service().settings
    if request.mimetype == "application/json":
        body = _json_body()
        question = _question(body.get("question"))
        if ("image_path" in body) == ("image_base64" in body):
            raise RequestError("give exactly one of `image_path` (relative to the images root) or `image_base64`")
        if "image_path" in body:
            ref = body["image_path"]
            return load_image_file(settings.images_root, ref, max_pixels=settings.max_image_pixels), question, ref
        return _image_from_base64(body["image_base64"]), question, None
    if request.mimetype == "multipart/form-data":
        question = _question(request.form.get("question"))
        upload = request.files.get("image")
        if upload is not None:
            image = decode_image(upload.read(), max_pixels=settings.max_image_pixels,
                                 name=f"uploaded file `{upload.filename or 'image'}`")
            return image, question, None
        ref = request.form.get("image_path")
        if ref is None:
            raise RequestError("the form has no `image` file; attach one as `image=@photo.jpg`")
        return load_image_file(settings.images_root, ref, max_pixels=settings.max_image_pixels), question, ref
    raise RequestError(
        f"unsupported Content-Type {request.mimetype or '(none)'!r}; send application/json or multipart/form-data",
        status=415,
    )


# --- endpoints --------------------------------------------------------------------------
@bp.post("/predict")
def predict():
    svc = service()
    started = time.perf_counter()
    request_id = events.new_request_id()
    question = None
    try:
        with svc.batcher.admission() as submit:
            image, question, ref = parse_predict_request()
            if svc.models.current is None:
                raise RequestError("the model is not loaded yet; retry when /readyz is ok", status=503)
            job = submit(image, question)
        svc.batcher.wait(job)
    except (RequestError, ImageInputError) as exc:
        return error_response(str(exc), exc.status, request_id=request_id, question=question, started=started)
    except BatchingError as exc:
        return error_response(str(exc), exc.status, request_id=request_id, question=question, started=started,
                              retry_after=exc.retry_after)
    pred, vqa = job.prediction, job.model
    latency = time.perf_counter() - started
    doc = events.make_event(
        events.INFERENCE, request_id=request_id, question=question, answer=pred.answer,
        quality_score=pred.quality_score, drift_score=pred.drift_score, latency_seconds=round(latency, 6),
        status=200, model_version=vqa.model_version, adapter_version=vqa.adapter_version, image_path=ref,
        signature=pred.signature,
        batch_size=job.batch_size,
    )
    svc.emit(doc)
    svc.recent.add({k: v for k, v in doc.items() if k != events.SIGNATURE})  # feedback never needs it
    svc.metrics.requests.labels(endpoint="/predict", status="200").inc()
    svc.metrics.latency.observe(latency)
    svc.metrics.quality.observe(pred.quality_score)
    if pred.drift_score is not None:
        svc.metrics.drift.observe(pred.drift_score)
    body = {k: doc[k] for k in events.RESPONSE_FIELDS if k in doc}
    body["receipt"] = svc.receipts.issue(doc)
    return jsonify(body)


def _bearer_ok(token: str) -> bool:
    """Does the request carry `Authorization: Bearer <token>`? (constant-time comparison)"""
    given = request.headers.get("Authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


@bp.post("/feedback")
def feedback():
    svc = service()
    started = time.perf_counter()
    body: dict[str, Any] = {}
    try:
        if svc.settings.feedback_token and not _bearer_ok(svc.settings.feedback_token):
            raise RequestError("missing or wrong feedback token; send `Authorization: Bearer <VQA_FEEDBACK_TOKEN>`",
                               status=401)
        if request.mimetype != "application/json":
            raise RequestError("send feedback as application/json: "
                               '{"receipt": "...", "answer": "the correct answer"}', status=415)
        body = _json_body()
        correct = body.get("answer", body.get(events.CORRECT_ANSWER))
        if not isinstance(correct, str) or not correct.strip():
            raise RequestError("`answer` (the correct answer) is missing or empty")
        original = _labelled_prediction(svc, body)
    except RequestError as exc:
        return error_response(str(exc), exc.status, started=started)
    from app.learning.data import normalize_answer

    doc = events.make_event(
        events.FEEDBACK, request_id=original[events.REQUEST_ID], question=original.get(events.QUESTION),
        answer=original.get(events.ANSWER), correct_answer=correct.strip(), status=200,
        is_correct=normalize_answer(original.get(events.ANSWER, "")) == normalize_answer(correct),
        model_version=original.get(events.MODEL_VERSION), adapter_version=original.get(events.ADAPTER_VERSION),
        image_path=original.get(events.IMAGE_PATH),
    )
    svc.emit(doc)
    svc.metrics.requests.labels(endpoint="/feedback", status="200").inc()
    return jsonify(doc)


def _labelled_prediction(svc: Service, body: dict[str, Any]) -> dict[str, Any]:
    """The inference fields feedback labels: from the signed `receipt` (any worker or replica can check
    it, at once), else by `request_id` from this worker's memory or Elasticsearch."""
    request_id = body.get(events.REQUEST_ID)
    if request_id is not None and (not isinstance(request_id, str) or not request_id.strip()):
        raise RequestError("`request_id` must be the non-empty string /predict returned")
    if "receipt" in body:
        try:
            original = svc.receipts.verify(body["receipt"])
        except ReceiptError as exc:
            raise RequestError(f"{exc}; send the `receipt` exactly as /predict returned it") from exc
        if request_id is not None and request_id.strip() != original[events.REQUEST_ID]:
            raise RequestError("`request_id` and `receipt` name different predictions")
        return original
    if request_id is None:
        raise RequestError("`receipt` (or `request_id`) is missing; send the one /predict returned")
    original = svc.lookup_prediction(request_id.strip())
    if original is None:
        raise RequestError(f"no prediction with request_id {request_id!r} is known here; send its `receipt` "
                           "(which any worker accepts) with the feedback", status=404)
    return original


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    svc = service()
    vqa = svc.models.current
    if vqa is not None:
        model = {"status": "ok", "detail": f"{vqa.model_version} with adapter {vqa.adapter_version}"}
        if svc.models.error:
            model["detail"] += f" (last reload failed: {svc.models.error})"
    elif svc.models.error:
        model = {"status": "failing", "detail": svc.models.error}
    else:
        model = {"status": "loading", "detail": f"loading {svc.settings.model_dir}"}
    thread_status, thread_detail = svc.batcher.health()
    es_status, es_detail = svc.shipper.health()
    reload_status, reload_detail = svc.models.health()
    checks = {"model": model, "model_thread": {"status": thread_status, "detail": thread_detail},
              "elasticsearch": {"status": es_status, "detail": es_detail},
              "adapter_reload": {"status": reload_status, "detail": reload_detail}}
    ready = model["status"] == "ok" and thread_status != "failing"
    healthy = es_status in ("ok", "disabled") and reload_status == "ok" and thread_status == "ok"
    overall = "failing" if not ready else ("ok" if healthy else "degraded")
    body = {"status": overall, "checks": checks}
    if vqa is not None:
        body.update({events.MODEL_VERSION: vqa.model_version, events.ADAPTER_VERSION: vqa.adapter_version})
    return jsonify(body), 200 if ready else 503


@bp.get("/openapi.json")
def openapi():
    return jsonify(openapi_spec(service().settings))


@bp.get("/drift/reference")
def drift_reference():
    """The serving model's window drift reference: what the watchdog tests windows of signatures against."""
    vqa = service().models.current
    if vqa is None:
        return error_response("the model is not loaded yet; retry when /readyz is ok", 503)
    if vqa.window_reference is None:
        return error_response(f"{vqa.model_version} with adapter {vqa.adapter_version} has no window drift "
                              "reference (adapters get one when trained; for a base model run "
                              "`python -m scripts.fit_window_reference`)", 404)
    return jsonify({events.MODEL_VERSION: vqa.model_version, events.ADAPTER_VERSION: vqa.adapter_version,
                    "reference": vqa.window_reference.to_dict()})


@bp.get("/metrics")
def metrics():
    return Response(service().metrics.render(), mimetype="text/plain; version=0.0.4")


@bp.post("/admin/reload")
def admin_reload():
    svc = service()
    token = svc.settings.admin_token
    if not token:
        return error_response("the admin endpoint is disabled; set VQA_ADMIN_TOKEN to enable it", 403)
    if not _bearer_ok(token):
        return error_response("missing or wrong admin token; send `Authorization: Bearer <VQA_ADMIN_TOKEN>`", 401)
    ok = svc.models.reload()
    vqa = svc.models.current
    if not ok:
        return error_response(f"reload failed, still serving the previous model: {svc.models.error}", 409)
    svc.metrics.requests.labels(endpoint="/admin/reload", status="200").inc()
    return jsonify({events.MODEL_VERSION: vqa.model_version, events.ADAPTER_VERSION: vqa.adapter_version})


def handle_http_error(exc: HTTPException):
    """Flask's own errors (413, 404, 405, ...) as JSON with a LOG_EVENT, like ours."""
    messages = {
        413: f"the request body is over the limit of {service().settings.max_content_length} bytes",
        404: f"no endpoint {request.path}; see the README for the API",
        405: f"{request.method} is not allowed on {request.path}",
    }
    return error_response(messages.get(exc.code, exc.description or exc.name), exc.code or 500)


def handle_unexpected(exc: Exception):
    """A fault of ours: logged with its traceback, answered as a 500 that says so."""
    log.exception("unhandled error on %s", request.path)
    return error_response("internal error; the service logged the details", 500)
