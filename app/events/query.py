"""Reading LOG_EVENTs back: the newest events of a time window, and one readable line per event.

What `scripts/logs.py` prints; the same query a user would type in Kibana Discover.
"""

from __future__ import annotations

import json
import re
from typing import Any

from elasticsearch import Elasticsearch

from app.events import schema as events

SINCE_PATTERN = re.compile(r"^(\d+)([smhd])$")
# Shown after the timestamp and kind, in this order, when the event has them.
LINE_FIELDS = (
    events.REQUEST_ID, events.QUESTION, events.ANSWER, events.QUALITY_SCORE, events.LATENCY_SECONDS,
    events.DRIFT_SCORE, events.STATUS, events.ERROR_MESSAGE, events.CORRECT_ANSWER, events.IS_CORRECT,
    events.DECISION, events.RULE, events.REASON, events.SAMPLE_COUNT, events.AVG_QUALITY, events.AVG_DRIFT,
    events.ACCURACY, events.BUILD_ID, events.MODEL_VERSION, events.ADAPTER_VERSION,
)


class LogsQueryError(ValueError):
    """An argument of the query cannot be used (the message says which and why)."""


def since_to_date_math(since: str) -> str:
    """`10m` -> `now-10m` (s, m, h, d), for the @timestamp range."""
    match = SINCE_PATTERN.match(since.strip())
    if not match or int(match.group(1)) <= 0:
        raise LogsQueryError(f"--since {since!r}: expected a positive number and a unit s/m/h/d, e.g. 10m or 2h")
    return f"now-{match.group(1)}{match.group(2)}"


def recent_events(
    client: Elasticsearch, prefix: str, since: str = "10m", event: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """The newest `limit` events of the last `since` (optionally of one kind), oldest first."""
    if event is not None and event not in events.EVENT_KINDS:
        raise LogsQueryError(f"--event {event!r}: expected one of {', '.join(events.EVENT_KINDS)}")
    if limit <= 0:
        raise LogsQueryError(f"--limit {limit}: must be at least 1")
    filters: list[dict[str, Any]] = [{"range": {events.TIMESTAMP: {"gte": since_to_date_math(since)}}}]
    if event is not None:
        filters.append({"term": {events.EVENT: event}})
    found = client.search(
        index=events.index_pattern(prefix), query={"bool": {"filter": filters}}, size=limit,
        sort=[{events.TIMESTAMP: {"order": "desc"}}], ignore_unavailable=True, allow_no_indices=True,
    )
    return [hit["_source"] for hit in reversed(found["hits"]["hits"])]


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, str) and (" " in value or not value):
        return json.dumps(value)
    return str(value)


def format_event(doc: dict[str, Any]) -> str:
    """`<timestamp> <kind> key=value ...` with the fields of LINE_FIELDS the event has."""
    parts = [str(doc.get(events.TIMESTAMP, "?")), f"{doc.get(events.EVENT, '?'):<9}"]
    parts += [f"{name}={_show(doc[name])}" for name in LINE_FIELDS if doc.get(name) is not None]
    return " ".join(parts)
