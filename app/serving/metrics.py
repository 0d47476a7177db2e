"""Prometheus metrics of the service, right whether one process serves or several gunicorn workers do.

With `PROMETHEUS_MULTIPROC_DIR` set (gunicorn sets it), every worker writes its samples to files
there and `/metrics`, whichever worker answers it, adds up all of them (prometheus_client's
multiprocess mode); without it, the metrics live in a registry this app owns.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
QUEUE_WAIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_SIZE_METRIC = "vqa_batch_size"  # the load bench reads these two back from /metrics
REBALANCED_METRIC = "vqa_connections_rebalanced"
CONNECTIONS_METRIC = "vqa_connections_held"
WORKER_REQUESTS_METRIC = "vqa_worker_requests"
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
SCORE_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))
SHIPPER_COUNTERS = ("shipped", "retried", "spooled", "dropped", "replayed")


class MetricsModeError(RuntimeError):
    """prometheus_client was imported before PROMETHEUS_MULTIPROC_DIR was set: workers would count apart."""


class Metrics:
    """The service's metrics; `multiprocess_dir` is Settings.metrics_dir (PROMETHEUS_MULTIPROC_DIR)."""

    def __init__(self, multiprocess_dir: str = ""):
        self.multiprocess_dir = multiprocess_dir
        if multiprocess_dir and not getattr(values.ValueClass, "_multiprocess", False):
            raise MetricsModeError("PROMETHEUS_MULTIPROC_DIR must be set before prometheus_client is imported")
        self.registry = CollectorRegistry()
        reg = self.registry
        self.requests = Counter("vqa_requests", "HTTP requests by endpoint and status",
                                ["endpoint", "status"], registry=reg)
        self.latency = Histogram("vqa_request_latency_seconds",
                                 "Latency of answered /predict requests, queue wait included",
                                 buckets=LATENCY_BUCKETS, registry=reg)
        self.queue_wait = Histogram("vqa_queue_wait_seconds", "Time a request waited for the model thread",
                                    buckets=QUEUE_WAIT_BUCKETS, registry=reg)
        self.batch_size = Histogram(BATCH_SIZE_METRIC, "Requests answered together per batched model call",
                                    buckets=BATCH_SIZE_BUCKETS, registry=reg)
        self.rebalanced = Counter(REBALANCED_METRIC,
                                  "Keep-alive connections a worker closed because it held more than its share",
                                  registry=reg)
        self.connections = Gauge(CONNECTIONS_METRIC,
                                 "Connections the worker held at its last request (one sample per live worker)",
                                 multiprocess_mode="liveall", registry=reg)
        self.worker_requests = Gauge(WORKER_REQUESTS_METRIC,
                                     "Requests this worker has taken, scrapes aside (one sample per live worker)",
                                     multiprocess_mode="liveall", registry=reg)
        self.quality = Histogram("vqa_quality_score", "quality_score of answers", buckets=SCORE_BUCKETS, registry=reg)
        self.drift = Histogram("vqa_drift_score", "drift_score of request images",
                               buckets=(0.5, 1, 1.5, 2, 3, 5, 8, 13), registry=reg)
        self.events = {name: Counter(f"vqa_events_{name}", f"LOG_EVENTs {name} by the Elasticsearch shipper",
                                     registry=reg) for name in SHIPPER_COUNTERS}
        self.events_queued = Gauge("vqa_events_queued", "LOG_EVENTs waiting in the shipper's memory queue",
                                   multiprocess_mode="livesum", registry=reg)
        self._shipper: Any = None

    def watch_shipper(self, shipper: Any) -> None:
        """Count what `shipper` does (it calls back from its delivery thread, if it supports that)."""
        self._shipper = shipper
        if hasattr(shipper, "on_count"):
            shipper.on_count = self._shipper_counted

    def _shipper_counted(self, name: str, n: int) -> None:
        if name in self.events:
            self.events[name].inc(n)
        self._refresh_queued()

    def _refresh_queued(self) -> None:
        if self._shipper is not None:
            self.events_queued.set(self._shipper.stats().get("queued", 0))

    def observe_batch(self, jobs: list[Any]) -> None:
        """One batched model call: its size, and how long each of its requests waited for it."""
        self.batch_size.observe(len(jobs))
        for job in jobs:
            self.queue_wait.observe(job.queue_wait)

    def render(self) -> bytes:
        """The text exposition: this process's registry, or every worker's files added up."""
        self._refresh_queued()
        if not self.multiprocess_dir:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.multiprocess_dir)
        return generate_latest(registry)
