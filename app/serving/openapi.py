"""The OpenAPI 3.0 description of the HTTP API, served at `/openapi.json`.

Written once here, from the same limits (Settings) and field names (the event schema) the routes use;
Schemathesis checks the live service against it (tests/test_openapi.py).
"""

from __future__ import annotations

from typing import Any

from app.config import Settings
from app.events import schema as events

ERROR = {"$ref": "#/components/schemas/Error"}


def _errors(*codes: int) -> dict[str, Any]:
    reasons = {400: "the request is malformed; the message says what to change",
               401: "a token is required and was missing or wrong", 403: "the endpoint is disabled",
               404: "the image or the request id is unknown", 409: "the reload failed; the old model still serves",
               413: "the body or the image is over the limit", 415: "unsupported Content-Type",
               503: "not ready (model loading) or overloaded; retry later"}
    return {str(code): {"description": reasons[code], "content": {"application/json": {"schema": ERROR}}}
            for code in codes}


def openapi_spec(settings: Settings) -> dict[str, Any]:
    """The API description; limits (question length) come from `settings`."""
    question = {"type": "string", "minLength": 1, "maxLength": settings.max_question_chars,
                "description": "A question about the image."}
    image_path = {"type": "string", "minLength": 1, "description": "Path of an image relative to the images root."}
    number = {"type": "number"}
    prediction = {
        "type": "object",
        "required": [events.ANSWER, events.EVENT, events.LATENCY_SECONDS, events.QUALITY_SCORE, events.QUESTION,
                     events.REQUEST_ID, events.MODEL_VERSION, events.ADAPTER_VERSION],
        "properties": {
            events.ANSWER: {"type": "string"}, events.EVENT: {"type": "string", "enum": [events.INFERENCE]},
            events.LATENCY_SECONDS: number, events.QUALITY_SCORE: {"type": "number", "minimum": 0, "maximum": 1},
            events.QUESTION: {"type": "string"}, events.DRIFT_SCORE: {"type": "number", "nullable": True},
            events.REQUEST_ID: {"type": "string"}, events.MODEL_VERSION: {"type": "string"},
            events.ADAPTER_VERSION: {"type": "string"},
            "receipt": {"type": "string", "description": "Signed; send it with POST /feedback."},
        },
    }
    json_predict = {
        "oneOf": [
            {"type": "object", "required": ["question", "image_path"], "additionalProperties": False,
             "properties": {"question": question, "image_path": image_path}},
            {"type": "object", "required": ["question", "image_base64"], "additionalProperties": False,
             "properties": {"question": question, "image_base64": {
                 "type": "string", "format": "byte", "description": "The image file, base64."}}},
        ],
    }
    multipart_predict = {
        "type": "object", "required": ["question"],
        "properties": {"question": question, "image": {"type": "string", "format": "binary"},
                       "image_path": image_path},
    }
    feedback = {
        "type": "object", "required": ["answer"],
        "description": "Give the `receipt` /predict returned (any worker or replica accepts it), or its `request_id`.",
        "properties": {"receipt": {"type": "string", "minLength": 1, "description": "The receipt /predict returned."},
                       events.REQUEST_ID: {"type": "string", "minLength": 1,
                                           "description": "The request_id /predict returned."},
                       "answer": {"type": "string", "minLength": 1, "description": "The correct answer."}},
    }
    check = {"type": "object", "required": ["status", "detail"],
             "properties": {"status": {"type": "string"}, "detail": {"type": "string"}}}
    bearer = [{"bearer": []}]
    return {
        "openapi": "3.0.3",
        "info": {"title": "Self-healing VQA service", "version": "1",
                 "description": "Visual question answering with quality and drift scores; every request is a "
                                "LOG_EVENT in Elasticsearch."},
        "paths": {
            "/predict": {"post": {
                "summary": "Answer a question about an image",
                "requestBody": {"required": True, "content": {"application/json": {"schema": json_predict},
                                                              "multipart/form-data": {"schema": multipart_predict}}},
                "responses": {"200": {"description": "the answer and its scores",
                                      "content": {"application/json": {"schema": prediction}}},
                              **_errors(400, 404, 413, 415, 503)},
            }},
            "/feedback": {"post": {
                "summary": "Label an answered request with the correct answer",
                "security": bearer if settings.feedback_token else [],
                "requestBody": {"required": True, "content": {"application/json": {"schema": feedback}}},
                "responses": {"200": {"description": "the stored feedback event",
                                      "content": {"application/json": {"schema": {"type": "object"}}}},
                              **_errors(400, 401, 404, 413, 415)},
            }},
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {
                "description": "the process answers",
                "content": {"application/json": {"schema": {"type": "object", "required": ["status"]}}}}}}},
            "/readyz": {"get": {"summary": "Readiness, naming each check", "responses": {
                code: {"description": text, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["status", "checks"],
                    "properties": {"status": {"type": "string"},
                                   "checks": {"type": "object", "additionalProperties": check}}}}}}
                for code, text in (("200", "ready"), ("503", "not ready: a check is failing"))}}},
            "/drift/reference": {"get": {"summary": "The serving model's window drift reference", "responses": {
                "200": {"description": "what the watchdog tests windows of signatures against",
                        "content": {"application/json": {"schema": {"type": "object", "required": [
                            events.MODEL_VERSION, events.ADAPTER_VERSION, "reference"]}}}},
                **_errors(404, 503)}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {
                "description": "text exposition format", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/openapi.json": {"get": {"summary": "This description", "responses": {"200": {
                "description": "OpenAPI 3.0", "content": {"application/json": {"schema": {"type": "object"}}}}}}},
            "/admin/reload": {"post": {
                "summary": "Load the promoted adapter now", "security": bearer,
                "responses": {"200": {"description": "the versions now served", "content": {"application/json": {
                    "schema": {"type": "object", "required": [events.MODEL_VERSION, events.ADAPTER_VERSION]}}}},
                    **_errors(401, 403, 409)},
            }},
        },
        "components": {
            "schemas": {"Error": {"type": "object", "required": ["error", events.REQUEST_ID],
                                  "properties": {"error": {"type": "string"}, events.REQUEST_ID: {"type": "string"}}}},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
