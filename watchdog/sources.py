"""Where the watchdog's numbers come from: one aggregation over the event indices in Elasticsearch.

Also writes each decision back as a `watchdog` LOG_EVENT, so Kibana shows why retraining ran.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from elasticsearch import ApiError, Elasticsearch, TransportError

from app.config import Settings
from app.events import schema as events
from app.events.elastic import install_index_template
from watchdog import WatchdogError
from watchdog.policy import Decision, WindowStats
from watchdog.state import TriggerRef

log = logging.getLogger(__name__)


class SourceError(WatchdogError):
    """Elasticsearch could not be queried or written; the next poll tries again."""


class ElasticsearchSource:
    """Window statistics from `<es_index_prefix>-*` and decision events back into it."""

    def __init__(self, client: Elasticsearch, settings: Settings):
        self.client = client
        self.prefix = settings.es_index_prefix
        self.pattern = events.index_pattern(settings.es_index_prefix)
        self.window = timedelta(minutes=settings.watchdog_window_minutes)
        self.window_minutes = settings.watchdog_window_minutes
        self.settings = settings
        self._template_installed = False

    def _window(self, now: datetime) -> dict[str, Any]:
        return {"range": {events.TIMESTAMP: {"gt": (now - self.window).isoformat(), "lte": now.isoformat()}}}

    def serving_versions(self, now: datetime) -> dict[str, str]:
        """model_version and adapter_version of the newest inference in the window.

        The watchdog judges the model that serves now: after a redeploy, the events of the
        replaced adapter are no evidence against the new one.
        """
        response = self.client.search(
            index=self.pattern, size=1, sort=[{events.TIMESTAMP: "desc"}],
            source=[events.MODEL_VERSION, events.ADAPTER_VERSION],
            query={"bool": {"filter": [self._window(now), {"term": {events.EVENT: events.INFERENCE}}]}},
        )
        hits = response.body.get("hits", {}).get("hits", [])
        return {k: v for k, v in (hits[0]["_source"] if hits else {}).items() if isinstance(v, str)}

    def query(self, now: datetime, versions: dict[str, str] | None = None) -> dict[str, Any]:
        """The search body: inference averages and labelled-feedback accuracy over the window."""
        scope = [self._window(now)] + [{"term": {field: value}} for field, value in (versions or {}).items()]
        return {
            "size": 0,
            "query": {"bool": {"filter": scope}},
            "aggs": {
                "inference": {
                    "filter": {"term": {events.EVENT: events.INFERENCE}},
                    "aggs": {
                        "quality": {"avg": {"field": events.QUALITY_SCORE}},
                        "drift": {"avg": {"field": events.DRIFT_SCORE}},
                    },
                },
                "feedback": {
                    "filter": {"bool": {"filter": [
                        {"term": {events.EVENT: events.FEEDBACK}},
                        {"exists": {"field": events.IS_CORRECT}},
                    ]}},
                    "aggs": {"correct": {"filter": {"term": {events.IS_CORRECT: True}}}},
                },
            },
        }

    def window_stats(self, now: datetime) -> WindowStats:
        """Counts and averages of the last `watchdog_window_minutes` before `now`."""
        try:
            versions = self.serving_versions(now)
            response = self.client.search(index=self.pattern, **self.query(now, versions))
        except (ApiError, TransportError) as exc:
            raise SourceError(f"Elasticsearch search on {self.pattern} failed: {_first_line(exc)}") from exc
        aggs = response.body.get("aggregations")
        if aggs is None:  # no `<prefix>-*` index exists yet: nothing was searched, nothing aggregated
            return WindowStats(0, None, None, 0, None, self.window_minutes)
        inference, feedback = aggs["inference"], aggs["feedback"]
        labels = int(feedback["doc_count"])
        return WindowStats(
            sample_count=int(inference["doc_count"]),
            avg_quality=inference["quality"]["value"],
            avg_drift=inference["drift"]["value"],
            feedback_count=labels,
            accuracy=feedback["correct"]["doc_count"] / labels if labels else None,
            window_minutes=self.window_minutes,
        )

    def record_decision(self, decision: Decision, ref: TriggerRef | None = None) -> dict[str, Any]:
        """Index the decision as a `watchdog` event; returns the document written."""
        doc = events.make_event(
            events.WATCHDOG, **decision.event_fields(), **{events.BUILD_ID: ref.label if ref else None}
        )
        try:
            if not self._template_installed:
                # The watchdog may write the day's first event: the index must get the project's mappings.
                install_index_template(self.client, self.settings)
                self._template_installed = True
            self.client.index(index=events.index_name(self.prefix, doc), id=events.document_id(doc), document=doc)
        except (ApiError, TransportError) as exc:
            raise SourceError(f"Elasticsearch could not store the watchdog decision: {_first_line(exc)}") from exc
        return doc


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
