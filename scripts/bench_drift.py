"""How accuracy, quality_score and drift_score react to each input distortion, on the same test questions.

    python -m scripts.bench_drift --limit 400

Prints a Markdown table (the one in docs/BENCHMARKS.md). Drifted copies of the images are written once
under <images root>/drift/<kind>/, as the traffic generator does.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from app.config import Settings
from app.learning.data import CSV_NAME, load_rows
from app.logsetup import configure_logging
from app.model.vqa import VQAModel
from app.simulation.distortions import DRIFTS, distortion_table


def main(argv: list[str] | None = None) -> int:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=400, help="first N test questions (default 400)")
    parser.add_argument("--model-dir", type=Path, default=Path(settings.model_dir), help="base model")
    parser.add_argument("--kinds", default=",".join(DRIFTS), help=f"distortions (default {','.join(DRIFTS)})")
    args = parser.parse_args(argv)
    configure_logging(logging.WARNING)
    frame = load_rows(Path(settings.data_dir) / CSV_NAME, split="test", limit=args.limit)
    rows = distortion_table(VQAModel.load(args.model_dir), frame, Path(settings.images_root), args.kinds.split(","))
    print("| input | questions | accuracy | mean quality_score | mean drift_score |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['input']} | {r['count']} | {r['accuracy']:.1%} | {r['mean_quality_score']:.3f} | "
              f"{r['mean_drift_score']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
