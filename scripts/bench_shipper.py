"""Measure what `EventShipper.submit()` costs the request path, in microseconds per call.

    python -m scripts.bench_shipper [--events 20000] [--es-url URL | --start-node]

Cases: the in-memory queue (delivery thread shipping to a real node when one is given), the disk
spool (queue full), and a disabled shipper as the floor.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from app.config import Settings
from app.events import schema as events
from app.events.shipper import EventShipper


def measure(shipper: EventShipper, n: int) -> dict[str, float]:
    """Per-call submit() durations in microseconds: p50, p99, max, mean."""
    docs = [events.make_event(events.INFERENCE, question=f"q{i}", answer="red", quality_score=0.9,
                              latency_seconds=0.1) for i in range(n)]
    durations = []
    for doc in docs:
        started = time.perf_counter_ns()
        shipper.submit(doc)
        durations.append((time.perf_counter_ns() - started) / 1000)
    durations.sort()
    return {"p50": durations[n // 2], "p99": durations[int(n * 0.99)], "max": durations[-1],
            "mean": statistics.fmean(durations)}


def run(n: int, es_url: str) -> dict[str, dict[str, float]]:
    """The three cases; `es_url` empty means nothing listens (the thread fails and spools)."""
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-shipper-") as tmp:
        results["disabled"] = measure(EventShipper(Settings(es_url="", spool_dir=tmp)), n)
        url = es_url or "http://127.0.0.1:9"
        queued = EventShipper(Settings(es_url=url, spool_dir=f"{tmp}/q", ship_queue_size=n * 2,
                                       es_index_prefix="bench-shipper"))
        queued.start()
        results["queue (thread shipping)" if es_url else "queue (ES down)"] = measure(queued, n)
        queued.close(timeout=30)
        spilled = EventShipper(Settings(es_url=url, spool_dir=f"{tmp}/s", ship_queue_size=1))
        results["spool (queue full)"] = measure(spilled, n)
        spilled.close(timeout=5)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Time EventShipper.submit() per call (microseconds).")
    parser.add_argument("--events", type=int, default=20_000, help="submits per case (default 20000)")
    parser.add_argument("--es-url", default="", help="a running Elasticsearch to ship to")
    parser.add_argument("--start-node", action="store_true", help="start a local node for the run")
    args = parser.parse_args(argv)
    node = None
    es_url = args.es_url
    if args.start_node and not es_url:
        from infra.elasticsearch.launcher import ElasticsearchNode

        node = ElasticsearchNode(tempfile.mkdtemp(prefix="bench-es-"), port=0).start()
        es_url = node.url
    try:
        results = run(args.events, es_url)
    finally:
        if node is not None:
            node.stop()
    print(f"submit() cost over {args.events} events, microseconds per call")
    print(f"{'case':<26}{'p50':>8}{'p99':>8}{'max':>10}{'mean':>8}")
    for case, r in results.items():
        print(f"{case:<26}{r['p50']:>8.1f}{r['p99']:>8.1f}{r['max']:>10.1f}{r['mean']:>8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
