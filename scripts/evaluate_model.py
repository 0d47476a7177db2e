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
from app.learning.gate import evaluate_and_promote
from app.logsetup import configure_logging
from app.model.vqa import ModelLoadError


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
    parser.add_argument("--min-accuracy", type=float, default=settings.gate_min_accuracy,
                        help=f"accuracy gate (default VQA_GATE_MIN_ACCURACY, now {settings.gate_min_accuracy})")
    parser.add_argument("--tolerance", type=float, default=settings.gate_tolerance,
                        help=f"how much worse than the champion is allowed (default VQA_GATE_TOLERANCE, now "
                             f"{settings.gate_tolerance})")
    parser.add_argument("--report", type=Path, default=Path(settings.data_dir) / "reports" / "evaluation.json")
    parser.add_argument("--promote", action="store_true", help="on pass, point CURRENT at the challenger")
    args = parser.parse_args(argv)
    configure_logging(logging.INFO)
    try:
        frame = load_rows(args.csv, split=args.split or None, limit=args.limit)
        report = evaluate_and_promote(
            settings, frame, args.images_root, base_model=args.base_model, adapter=args.adapter,
            champion=args.champion, compare=not args.no_champion, min_accuracy=args.min_accuracy,
            tolerance=args.tolerance, promote=args.promote,
        )
        report.update({"csv": str(args.csv), "split": args.split})
    except (DatasetError, ModelLoadError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=2))
    print(json.dumps({"passed": report["passed"], "reasons": report["reasons"], "report": str(args.report)}, indent=2))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
