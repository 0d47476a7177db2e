"""Evaluate base model + adapter on held-out rows and gate it (champion versus challenger).

Writes a JSON report and exits 1 when the challenger is below --min-accuracy or worse than
the champion (by default the adapter `CURRENT` points at) on the same rows; 0 when it passes.
`--promote` then points `CURRENT` at the challenger, which running services pick up live.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from app.config import Settings
from app.learning.data import CSV_NAME, DatasetError, load_rows
from app.learning.gate import champion_challenger
from app.learning.lora import record_metrics
from app.logsetup import configure_logging
from app.model.registry import current_adapter_dir, promote_adapter
from app.model.vqa import ModelLoadError


def run(args: argparse.Namespace, settings: Settings) -> dict:
    """Evaluate challenger and champion, apply the gate, optionally promote; returns the report."""
    frame = load_rows(args.csv, split=args.split or None, limit=args.limit)
    report = champion_challenger(
        args.base_model, args.adapter, frame, args.images_root, deployed=args.champion or current_adapter_dir(settings),
        compare=not args.no_champion, min_accuracy=args.min_accuracy, tolerance=args.tolerance,
    )
    report.update({"csv": str(args.csv), "split": args.split})
    if args.adapter is not None:
        record_metrics(args.adapter, "evaluation", {"accuracy": report["challenger"]["accuracy"],
                                                    "passed": report["passed"]})
        if report["passed"] and args.promote:
            promote_adapter(Path(settings.adapters_dir), args.adapter)
            report["promoted"] = args.adapter.name
    return report


def main(argv: list[str] | None = None) -> int:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", type=Path, default=Path(settings.data_dir) / CSV_NAME)
    parser.add_argument("--split", default="test", help="held-out rows: `split` value ('' = all rows)")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--images-root", type=Path, default=Path(settings.images_root))
    parser.add_argument("--base-model", type=Path, default=Path(settings.model_dir))
    parser.add_argument("--adapter", type=Path, default=None, help="the challenger (omit: the base model alone)")
    parser.add_argument("--champion", type=Path, default=None, help="deployed adapter (default: what CURRENT names)")
    parser.add_argument("--no-champion", action="store_true", help="apply the accuracy floor only")
    parser.add_argument("--min-accuracy", type=float, default=0.8, help="accuracy gate (default 0.8)")
    parser.add_argument("--tolerance", type=float, default=0.0, help="how much worse than the champion is allowed")
    parser.add_argument("--report", type=Path, default=Path(settings.data_dir) / "reports" / "evaluation.json")
    parser.add_argument("--promote", action="store_true", help="on pass, point CURRENT at the challenger")
    args = parser.parse_args(argv)
    configure_logging(logging.INFO)
    try:
        report = run(args, settings)
    except (DatasetError, ModelLoadError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=2))
    print(json.dumps({"passed": report["passed"], "reasons": report["reasons"], "report": str(args.report)}, indent=2))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
