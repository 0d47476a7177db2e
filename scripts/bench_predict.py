"""Benchmark /predict: the bare model call versus the full HTTP round trip, on the same inputs.

Starts its own gunicorn on a loopback port (twice with --es-url: shipping off, then on),
sends the same N requests one at a time, and prints p50/p95 of each and the overhead ratio.
  python -m scripts.bench_predict --n 200
  python -m scripts.bench_predict --n 200 --es-url http://127.0.0.1:9200
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import requests

from app.config import Settings
from app.learning.data import CSV_NAME, load_rows
from app.logsetup import configure_logging
from app.model.vqa import VQAModel
from app.serving.images import load_image_file
from app.serving.launch import start_service, stop_service


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50_ms": round(pick(0.50) * 1000, 2), "p95_ms": round(pick(0.95) * 1000, 2),
            "mean_ms": round(statistics.fmean(ordered) * 1000, 2)}


def bench_model(settings: Settings, rows) -> list[float]:
    vqa = VQAModel.load(settings.model_dir)
    times = []
    for row in rows.itertuples():
        image = load_image_file(settings.images_root, row.image_path)
        began = time.perf_counter()
        vqa.answer([image], [row.question])
        times.append(time.perf_counter() - began)
    return times


def bench_http(rows, env: dict[str, str], port: int) -> list[float]:
    with tempfile.TemporaryDirectory() as spool:
        proc = start_service({"VQA_SPOOL_DIR": spool, **env}, port, log_path=Path(spool) / "gunicorn.log")
        try:
            session = requests.Session()
            times = []
            for row in rows.itertuples():
                began = time.perf_counter()
                r = session.post(f"http://127.0.0.1:{port}/predict",
                                 json={"image_path": row.image_path, "question": row.question}, timeout=60)
                times.append(time.perf_counter() - began)
                r.raise_for_status()
            return times
        finally:
            stop_service(proc)


def main(argv: list[str] | None = None) -> int:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200, help="requests per phase")
    parser.add_argument("--port", type=int, default=5055)
    parser.add_argument("--es-url", default="", help="also measure with event shipping to this Elasticsearch")
    parser.add_argument("--threads", type=int, default=1, help="PyTorch threads in both phases")
    parser.add_argument("--repeat", type=int, default=2,
                        help="alternate the HTTP phases this many times (evens out drift in machine load)")
    args = parser.parse_args(argv)
    configure_logging(logging.WARNING)
    import torch

    torch.set_num_threads(args.threads)
    rows = load_rows(Path(settings.data_dir) / CSV_NAME, split="test").sample(n=args.n, random_state=0)
    warm = rows.head(5)
    bench_model(settings, warm)
    results = {"n": args.n, "model": percentiles(bench_model(settings, rows))}
    env = {"ES_URL": "", "VQA_TORCH_THREADS": str(args.threads)}
    phases = {"http_shipping_off": env}
    if args.es_url:
        phases["http_shipping_on"] = {**env, "ES_URL": args.es_url}
    samples: dict[str, list[float]] = {name: [] for name in phases}
    for _ in range(args.repeat):
        for name, phase_env in phases.items():
            samples[name] += bench_http(rows, phase_env, args.port)
    for name, times in samples.items():
        results[name] = percentiles(times)
    model_p50 = results["model"]["p50_ms"]
    for key in [k for k in results if k.startswith("http")]:
        results[key]["overhead_ratio_p50"] = round(results[key]["p50_ms"] / model_p50, 3)
    if args.es_url:
        off, on = results["http_shipping_off"]["p50_ms"], results["http_shipping_on"]["p50_ms"]
        results["shipping_cost_p50_percent"] = round(100 * (on - off) / off, 2)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
