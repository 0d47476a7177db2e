"""Prometheus metrics of one app instance, in a registry the app owns (no module state).

Request count by endpoint and status, latency and quality_score histograms, and the event
shipper's counters (read at scrape time).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SCORE_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))
SHIPPER_COUNTERS = ("shipped", "retried", "spooled", "dropped", "replayed")


class _ShipperCollector:
    def __init__(self, stats: Callable[[], dict[str, int]]):
        self._stats = stats

    def collect(self):
        stats = self._stats()
        for name in SHIPPER_COUNTERS:
            family = CounterMetricFamily(f"vqa_events_{name}", f"LOG_EVENTs {name} by the Elasticsearch shipper")
            family.add_metric([], stats.get(name, 0))
            yield family
        gauge = GaugeMetricFamily("vqa_events_queued", "LOG_EVENTs waiting in the shipper's memory queue")
        gauge.add_metric([], stats.get("queued", 0))
        yield gauge


class Metrics:
    def __init__(self, shipper_stats: Callable[[], dict[str, int]] | None = None):
        self.registry = CollectorRegistry()
        self.requests = Counter("vqa_requests", "HTTP requests by endpoint and status",
                                ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("vqa_request_latency_seconds", "Latency of answered /predict requests",
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.quality = Histogram("vqa_quality_score", "quality_score of answers",
                                 buckets=SCORE_BUCKETS, registry=self.registry)
        self.drift = Histogram("vqa_drift_score", "drift_score of request images",
                               buckets=(0.5, 1, 1.5, 2, 3, 5, 8, 13), registry=self.registry)
        if shipper_stats is not None:
            self.registry.register(_ShipperCollector(shipper_stats))

    def render(self) -> bytes:
        return generate_latest(self.registry)
