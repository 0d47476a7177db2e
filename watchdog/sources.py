"""Where the watchdog's numbers come from: one aggregation over the event indices in Elasticsearch,
the window's input signatures tested against the serving model's reference (fetched from the service).

Also writes each decision back as a `watchdog` LOG_EVENT, so Kibana shows why retraining ran.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import requests
from elasticsearch import ApiError, Elasticsearch, TransportError

from app.config import Settings
from app.events import schema as events
from app.events.elastic import install_index_template
from app.model.window_drift import WindowDriftError, WindowReference
from watchdog import WatchdogError
from watchdog.policy import Decision, DriftTestStats, WindowStats
from watchdog.state import TriggerRef

log = logging.getLogger(__name__)


class SourceError(WatchdogError):
    """Elasticsearch could not be queried or written; the next poll tries again."""


class ReferenceUnavailable(WatchdogError):
    """The serving model's window drift reference cannot be had now; the test waits for a later poll."""


class ServiceReferences:
    """The serving model's window drift reference from the service (`GET /drift/reference`).

    The watchdog has no model files (in Kubernetes it runs in its own pod); the service has the
    reference loaded with the model. Kept until the judged model or adapter version changes.
    """

    def __init__(self, service_url: str, timeout: float = 10.0):
        self.url = service_url.rstrip("/") + "/drift/reference"
        self.timeout = timeout
        self._cached: tuple[tuple[str, str], WindowReference] | None = None

    def get(self, model_version: str, adapter_version: str) -> WindowReference:
        """The reference of exactly this model and adapter version, or ReferenceUnavailable saying why not."""
        wanted = (model_version, adapter_version)
        if self._cached and self._cached[0] == wanted:
            return self._cached[1]
        try:
            response = requests.get(self.url, timeout=self.timeout)
            body = response.json()
        except (requests.RequestException, ValueError) as exc:
            raise ReferenceUnavailable(f"GET {self.url} failed: {_first_line(exc)}") from exc
        if response.status_code != 200:
            raise ReferenceUnavailable(f"GET {self.url} answered {response.status_code}: {body.get('error', body)}")
        serving = (body.get(events.MODEL_VERSION), body.get(events.ADAPTER_VERSION))
        if serving != wanted:
            raise ReferenceUnavailable(f"the service serves {serving[0]}/{serving[1]}, the window's newest "
                                       f"inferences come from {model_version}/{adapter_version}")
        try:
            reference = WindowReference.from_dict(body["reference"])
        except (KeyError, WindowDriftError) as exc:
            raise ReferenceUnavailable(f"GET {self.url} sent no usable reference: {exc}") from exc
        self._cached = (wanted, reference)
        log.info("window drift reference of %s/%s: %d calibration signatures of %d dims",
                 model_version, adapter_version, len(reference.calibration), reference.dims)
        return reference


class ElasticsearchSource:
    """Window statistics from `<es_index_prefix>-*` and decision events back into it."""

    def __init__(self, client: Elasticsearch, settings: Settings, references: ServiceReferences | None = None):
        self.client = client
        self.references = references or ServiceReferences(settings.service_url)
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
        samples = int(inference["doc_count"])
        return WindowStats(
            sample_count=samples,
            avg_quality=inference["quality"]["value"],
            avg_drift=inference["drift"]["value"],
            feedback_count=labels,
            accuracy=feedback["correct"]["doc_count"] / labels if labels else None,
            window_minutes=self.window_minutes,
            # Below the minimum no rule is judged, so the test would be work thrown away.
            drift_test=self.drift_test(now, versions) if samples >= self.settings.watchdog_min_samples else None,
        )

    def window_signatures(self, now: datetime, versions: dict[str, str]) -> list[list[float]]:
        """Signatures of the newest `watchdog_drift_test_max_events` inferences of the judged model in the window."""
        scope = [self._window(now), {"term": {events.EVENT: events.INFERENCE}}]
        scope += [{"term": {field: value}} for field, value in versions.items()]
        try:
            response = self.client.search(
                index=self.pattern, size=self.settings.watchdog_drift_test_max_events,
                sort=[{events.TIMESTAMP: "desc"}], source=[events.SIGNATURE], query={"bool": {"filter": scope}},
            )
        except (ApiError, TransportError) as exc:
            raise SourceError(f"Elasticsearch search for signatures on {self.pattern} failed: "
                              f"{_first_line(exc)}") from exc
        found = (hit.get("_source", {}).get(events.SIGNATURE) for hit in response.body["hits"]["hits"])
        return [s for s in found if isinstance(s, list) and s]

    def drift_test(self, now: datetime, versions: dict[str, str]) -> DriftTestStats:
        """The window drift test of the judged model's window, or why it could not run."""
        signatures = self.window_signatures(now, versions)
        if len(signatures) < self.settings.watchdog_min_samples:
            return DriftTestStats(signed=len(signatures))
        model, adapter = versions.get(events.MODEL_VERSION), versions.get(events.ADAPTER_VERSION)
        try:
            if not model or not adapter:
                raise ReferenceUnavailable("the window's inferences name no model and adapter version")
            reference = self.references.get(model, adapter)
        except ReferenceUnavailable as exc:
            log.warning("window drift test skipped: %s", exc)
            return DriftTestStats(signed=len(signatures), skipped=f"no reference: {exc}")
        usable = [s for s in signatures if len(s) == reference.dims]
        if len(usable) < len(signatures):
            log.warning("%d of %d signatures do not have the reference's %d dimensions", len(signatures) - len(usable),
                        len(signatures), reference.dims)
        if len(usable) < self.settings.watchdog_min_samples:
            return DriftTestStats(signed=len(usable))
        result = reference.test(np.asarray(usable, dtype=np.float64))
        return DriftTestStats(signed=len(usable), statistic=result.statistic, p_value=result.p_value,
                              inputs=result.window_size)

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
