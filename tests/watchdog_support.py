"""Helpers shared by the watchdog tests: index LOG_EVENTs with known values into a real Elasticsearch.

Each test gets its own index prefix, so tests never see each other's events.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from elasticsearch import Elasticsearch

from app.config import Settings
from app.events import schema as events
from app.events.elastic import install_index_template


def unique_prefix() -> str:
    return f"wd-test-{uuid.uuid4().hex[:10]}"


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def inference(at: datetime, quality: float, drift: float | None = None) -> dict[str, Any]:
    return events.make_event(events.INFERENCE, **{events.TIMESTAMP: iso(at), events.QUALITY_SCORE: quality,
                                                  events.DRIFT_SCORE: drift, events.ANSWER: "blue"})


def feedback(at: datetime, is_correct: bool | None) -> dict[str, Any]:
    return events.make_event(events.FEEDBACK, **{events.TIMESTAMP: iso(at), events.IS_CORRECT: is_correct,
                                                 events.CORRECT_ANSWER: "red"})


def index_events(client: Elasticsearch, settings: Settings, docs: list[dict[str, Any]]) -> None:
    """Install the project's index template, bulk-index `docs` with their real ids, refresh."""
    install_index_template(client, settings)
    operations: list[dict[str, Any]] = []
    for doc in docs:
        operations.append({"index": {"_index": events.index_name(settings.es_index_prefix, doc),
                                     "_id": events.document_id(doc)}})
        operations.append(doc)
    result = client.bulk(operations=operations, refresh=True)
    assert not result["errors"], result


def degraded_window(now: datetime, count: int = 60, quality: float = 0.4, drift: float = 0.5) -> list[dict]:
    """`count` inferences spread over the last 10 minutes, all with the same quality and drift."""
    return [inference(now - timedelta(seconds=10 * i + 1), quality, drift) for i in range(count)]


def watchdog_events(client: Elasticsearch, settings: Settings) -> list[dict[str, Any]]:
    """The `watchdog` decision events stored under the settings' prefix, oldest first."""
    pattern = events.index_pattern(settings.es_index_prefix)
    client.indices.refresh(index=pattern, allow_no_indices=True, ignore_unavailable=True)
    hits = client.search(index=pattern, query={"term": {events.EVENT: events.WATCHDOG}},
                         sort=[{events.TIMESTAMP: "asc"}], size=100, allow_no_indices=True,
                         ignore_unavailable=True)["hits"]["hits"]
    return [h["_source"] for h in hits]
