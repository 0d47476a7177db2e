"""Profile one /predict in process: the bare model call against the app's request path (paired rounds),
the cost of each step the app adds around the model, and a cProfile ranking of the code outside the model.

  python -m scripts.profile_request                       # about a minute
  python -m scripts.profile_request --rounds 4 --n 50     # quicker

Event shipping is off (ES_URL empty) and PyTorch runs one thread, as in a gunicorn worker. The socket part
(gunicorn, loopback, the client) is what `python -m scripts.bench_load`'s paired c1 rounds add on top.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10, help="alternating rounds of bare model / in-process request")
    parser.add_argument("--n", type=int, default=300, help="requests under cProfile")
    parser.add_argument("--top", type=int, default=15, help="functions to list")
    args = parser.parse_args(argv)
    os.environ["ES_URL"] = ""
    os.environ.setdefault("VQA_TORCH_THREADS", "1")

    import torch

    from app import create_app
    from app.config import Settings
    from app.logsetup import configure_logging
    from app.serving import profiling

    configure_logging(logging.WARNING)
    settings = Settings.from_env()
    torch.set_num_threads(settings.torch_threads)
    app = create_app(settings)
    if not app.extensions["vqa"].models.wait_ready(180):
        print(f"the model did not load: {app.extensions['vqa'].models.error}")
        return 1
    pairs = profiling.paired_overhead(app, rounds=args.rounds)
    print(f"bare model call vs in-process /predict (Flask test client), p50 per {len(pairs)} alternating rounds, ms:")
    for bare, request in pairs:
        print(f"  bare {bare:6.2f}   /predict {request:6.2f}   difference {request - bare:+.2f}")
    print(f"  median difference: {statistics.median(r - b for b, r in pairs):+.2f} ms")
    print("steps the app adds around the model call, microseconds per call:")
    for name, micros in profiling.step_costs(app).items():
        print(f"  {name:<38} {micros:8.1f}")
    print(profiling.profile(app, n=args.n, top=args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
