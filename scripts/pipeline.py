"""Run the retraining pipeline locally: the same six stages, in the same order, as the Jenkinsfile.

Without --stage it runs them all; Jenkins calls one stage per step (`--stage train`), with the
run named by BUILD_NUMBER so the stages share one run folder under data/pipeline/. Exits 1 if
a stage failed. Each stage's result and duration is printed and written to summary.json.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from app.config import Settings
from app.learning.pipeline import FAILED, STAGE_NAMES, Run, run_stages
from app.logsetup import configure_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", action="append", choices=STAGE_NAMES, help="run only this stage (repeatable)")
    parser.add_argument("--run-id", default=None, help="run folder name (default: BUILD_NUMBER or local-<time>)")
    parser.add_argument("--reason", default="", help="why the pipeline runs (the watchdog passes its decision)")
    parser.add_argument("--rule", default="", help="the watchdog rule that fired")
    parser.add_argument("--summary", type=Path, default=None, help="also write the stage results here")
    args = parser.parse_args(argv)
    configure_logging(logging.INFO)
    settings = Settings.from_env()
    run = Run.open(settings, args.run_id, reason=args.reason, rule=args.rule)
    print(f"pipeline run {run.run_dir.name}: {args.reason or 'manual'}")
    results = run_stages(run, args.stage)
    if args.summary:
        args.summary.write_text(json.dumps(results, indent=2))
    return 1 if any(r["status"] == FAILED for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
