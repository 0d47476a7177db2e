"""The LOG_EVENT document: its field names, kinds, index naming and document ids.

The service, the shipper, the watchdog, Filebeat's config and the Kibana objects all take
their field names from here, so a rename happens in one place.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

LOG_PREFIX = "LOG_EVENT"
LOGGER_NAME = "vqa.events"
INDEX_PATTERN_SUFFIX = "-*"

# Event kinds (the `event` field).
INFERENCE = "inference"
ERROR = "error"
FEEDBACK = "feedback"
WATCHDOG = "watchdog"
RELOAD = "reload"
EVENT_KINDS = (INFERENCE, ERROR, FEEDBACK, WATCHDOG, RELOAD)

# Field names. Top-level, as the seed's Kibana searches expect.
TIMESTAMP = "@timestamp"
EVENT = "event"
REQUEST_ID = "request_id"
QUESTION = "question"
ANSWER = "answer"
QUALITY_SCORE = "quality_score"
LATENCY_SECONDS = "latency_seconds"
DRIFT_SCORE = "drift_score"
STATUS = "status"
ERROR_MESSAGE = "error"
MODEL_VERSION = "model_version"
ADAPTER_VERSION = "adapter_version"
IMAGE_PATH = "image_path"
SIGNATURE = "signature"  # the input's window-drift signature: a short float array (app/model/window_drift.py)
BATCH_SIZE = "batch_size"  # requests answered together in the model call that answered this one
# feedback
CORRECT_ANSWER = "correct_answer"
IS_CORRECT = "is_correct"
# watchdog decisions
DECISION = "decision"
RULE = "rule"
REASON = "reason"
SAMPLE_COUNT = "sample_count"
AVG_QUALITY = "avg_quality_score"
AVG_DRIFT = "avg_drift_score"
ACCURACY = "accuracy"
FEEDBACK_COUNT = "feedback_count"
DRIFT_TEST_STATISTIC = "drift_test_statistic"  # novelty AUC of the window against the reference
DRIFT_TEST_P_VALUE = "drift_test_p_value"
DRIFT_TEST_INPUTS = "drift_test_inputs"  # distinct inputs the test compared
BUILD_ID = "build_id"

# Elasticsearch mapping of every field; the index template is built from this.
FIELD_TYPES: dict[str, dict[str, Any]] = {
    TIMESTAMP: {"type": "date"},
    EVENT: {"type": "keyword"},
    REQUEST_ID: {"type": "keyword"},
    QUESTION: {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 512}}},
    ANSWER: {"type": "keyword"},
    QUALITY_SCORE: {"type": "float"},
    LATENCY_SECONDS: {"type": "float"},
    DRIFT_SCORE: {"type": "float"},
    STATUS: {"type": "integer"},
    ERROR_MESSAGE: {"type": "text"},
    MODEL_VERSION: {"type": "keyword"},
    ADAPTER_VERSION: {"type": "keyword"},
    IMAGE_PATH: {"type": "keyword"},
    # Read back from _source only (ordered, any length); never searched or aggregated, so neither
    # indexed nor in doc values (which would sort the values). A dense_vector would fix its length
    # per index and reject every event of a model whose signature is longer.
    SIGNATURE: {"type": "float", "index": False, "doc_values": False},
    BATCH_SIZE: {"type": "short"},
    CORRECT_ANSWER: {"type": "keyword"},
    IS_CORRECT: {"type": "boolean"},
    DECISION: {"type": "keyword"},
    RULE: {"type": "keyword"},
    REASON: {"type": "text"},
    SAMPLE_COUNT: {"type": "integer"},
    AVG_QUALITY: {"type": "float"},
    AVG_DRIFT: {"type": "float"},
    ACCURACY: {"type": "float"},
    FEEDBACK_COUNT: {"type": "integer"},
    DRIFT_TEST_STATISTIC: {"type": "float"},
    DRIFT_TEST_P_VALUE: {"type": "float"},
    DRIFT_TEST_INPUTS: {"type": "integer"},
    BUILD_ID: {"type": "keyword"},
}

# What /predict returns: these fields of the event, in this order (then the feedback `receipt`).
RESPONSE_FIELDS = (
    ANSWER, EVENT, LATENCY_SECONDS, QUALITY_SCORE, QUESTION,
    DRIFT_SCORE, REQUEST_ID, MODEL_VERSION, ADAPTER_VERSION,
)

_log = logging.getLogger(LOGGER_NAME)


def now_iso() -> str:
    """UTC timestamp in the form Elasticsearch's `date` type and Kibana expect."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_request_id() -> str:
    return uuid.uuid4().hex


def make_event(kind: str, **fields: Any) -> dict[str, Any]:
    """A LOG_EVENT document of `kind`; unknown field names are a programming error."""
    if kind not in EVENT_KINDS:
        raise ValueError(f"unknown event kind {kind!r}")
    unknown = set(fields) - set(FIELD_TYPES)
    if unknown:
        raise ValueError(f"unknown LOG_EVENT fields: {sorted(unknown)}")
    doc: dict[str, Any] = {TIMESTAMP: now_iso(), EVENT: kind}
    doc.update({k: v for k, v in fields.items() if v is not None})
    doc.setdefault(REQUEST_ID, new_request_id())
    return doc


def document_id(doc: dict[str, Any]) -> str:
    """Elasticsearch `_id`: replays overwrite instead of duplicating.

    Feedback on a request gets its own id derived from the request, so the same
    feedback twice is stored (and counted) once.
    """
    if doc.get(EVENT) == FEEDBACK:
        return f"feedback-{doc[REQUEST_ID]}"
    return str(doc[REQUEST_ID])


def index_pattern(prefix: str) -> str:
    """`<prefix>-*`: the daily indices of events, as the template, Kibana and the watchdog name them."""
    return prefix + INDEX_PATTERN_SUFFIX


def index_name(prefix: str, doc: dict[str, Any]) -> str:
    """Daily index `<prefix>-YYYY.MM.DD` from the event's own timestamp (stable on replay)."""
    day = str(doc.get(TIMESTAMP, now_iso()))[:10].replace("-", ".")
    return f"{prefix}-{day}"


def format_line(doc: dict[str, Any]) -> str:
    """The stdout line Filebeat picks up: `LOG_EVENT {json}`."""
    return f"{LOG_PREFIX} {json.dumps(doc, separators=(',', ':'), sort_keys=True)}"


def parse_line(line: str) -> dict[str, Any] | None:
    """Inverse of `format_line`; None for lines that are not events."""
    start = line.find(LOG_PREFIX + " ")
    if start < 0:
        return None
    try:
        doc = json.loads(line[start + len(LOG_PREFIX) + 1:])
    except json.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def log_event(doc: dict[str, Any]) -> None:
    """Write the event as one stdout line through `logging`."""
    _log.info(format_line(doc))
