"""Load benchmark: the bare model at batch 1 and 16, then the service under `hey` at concurrency 1, 16 and 50
with one worker and with two; prints req/s, p50, p95 and non-2xx per level, then the ratios:

  ceiling ratio                  service throughput at c16 / bare model throughput at batch 16
  p95@16 / p50@1                 how latency grows with load
  p50@1 - bare batch-1 p50       what the HTTP path adds to one request on an idle service (ms)
  non-2xx at c50                 over --c50-seconds

In the paired rounds (2 s bare model, 2 s service, alternating) it also runs hey c1 on three reference
servers: two floors (app/serving/floor.py), each answering the model on a preloaded image and nothing
else, `flask floor` (gunicorn + Flask, the service's stack) and `stdlib floor` (http.server, no
framework, no thread hand-offs); and `service, lingering off` (one worker, VQA_KEEPALIVE_LINGER_MS=0).
For each it prints
  NAME p50@1 - bare batch-1 p50   what that server, the loopback and hey cost on this machine at that moment
  p50@1 - NAME p50@1              what the service adds over it

With several workers it then runs c16 again with VQA_BALANCE_CONNECTIONS=0 (--unbalanced-runs times):
gunicorn's own spread of keep-alive connections, for comparison with app/serving/balance.py's.

  python -m scripts.bench_load                      # about 10 minutes on 2 cores
  python -m scripts.bench_load --seconds 5 --c50-seconds 10 --workers 1 --json out.json

Needs `hey` (`apt-get install -y hey`). Event shipping is off (ES_URL empty), as in the issue's numbers;
every other setting comes from the environment like the service's (VQA_MAX_BATCH, VQA_TORCH_THREADS, ...).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from app.config import Settings
from app.logsetup import configure_logging
from app.serving.loadbench import LoadToolMissing, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of the c1 and c16 levels")
    parser.add_argument("--c50-seconds", type=float, default=60.0, help="duration of the c50 level")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="gunicorn worker counts to measure")
    parser.add_argument("--unbalanced-runs", type=int, default=3,
                        help="c16 runs with VQA_BALANCE_CONNECTIONS=0 after each several-worker run (0: none)")
    parser.add_argument("--rounds", type=int, default=10,
                        help="paired rounds per worker count (bare model and service alternating, 2 s each)")
    parser.add_argument("--json", type=Path, help="also write every measurement to this file")
    args = parser.parse_args(argv)
    configure_logging(logging.WARNING)
    try:
        result = run(Settings.from_env(), seconds=args.seconds, c50_seconds=args.c50_seconds,
                     workers=tuple(args.workers), unbalanced_runs=args.unbalanced_runs,
                     rounds=args.rounds)
    except LoadToolMissing as exc:
        print(exc)
        return 2
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
