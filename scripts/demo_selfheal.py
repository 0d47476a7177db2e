"""Watch the service heal itself: clean traffic, then drift, the watchdog fires, retraining, redeploy.

Starts what it needs (a local Elasticsearch unless ES_URL is set, the service on a free port,
the watchdog with the local trigger), tells the story step by step, and draws quality_score
and drift_score over time with the trigger and the redeploy marked (docs/self-healing.png).
  python -m scripts.demo_selfheal
The end-to-end test (tests/test_selfheal_e2e.py) runs the same story (app/simulation/selfheal.py).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from app.config import REPO_ROOT
from app.logsetup import configure_logging
from app.simulation.selfheal import run_demo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plot", type=Path, default=REPO_ROOT / "docs" / "self-healing.png",
                        help="where to draw the plot (default: docs/self-healing.png)")
    parser.add_argument("--drift", default="invert", choices=["invert", "greyscale"], help="the input drift")
    parser.add_argument("--json", type=Path, default=None, help="also write the story's numbers here")
    args = parser.parse_args(argv)
    configure_logging(logging.WARNING)
    result = run_demo(args.drift, args.plot, args.json)
    return 0 if result.pipeline_exit == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
