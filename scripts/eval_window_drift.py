"""Evaluate the window drift test on the test split: detection, false alarms and accuracy cost per distortion.

Answers every test question once clean and once per distortion of app/simulation/distortions.py,
resamples windows of requests, tests each against the model's window reference and prints, per
input kind and window size, the share of windows that fired (false alarms for clean input), the
accuracy the distortion leaves, and the time of one test over 1,000 requests:

    python -m scripts.eval_window_drift --windows 200 --sizes 50 100 200
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from app.config import Settings
from app.learning.data import CSV_NAME, load_rows
from app.logsetup import configure_logging
from app.model.registry import current_adapter_dir
from app.model.vqa import VQAModel
from app.simulation.distortions import DRIFTS
from app.simulation.window_eval import CLEAN, answer_split, evaluate_windows, markdown_table, rows_as_dicts, time_test


def main(argv: list[str] | None = None) -> int:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=Path(settings.model_dir), help="default: VQA_MODEL_DIR")
    parser.add_argument("--adapter-dir", type=Path, default=None,
                        help="LoRA adapter on top (default: the one VQA_ADAPTER_DIR / CURRENT names, if any)")
    parser.add_argument("--csv", type=Path, default=Path(settings.data_dir) / CSV_NAME)
    parser.add_argument("--images-root", type=Path, default=Path(settings.images_root))
    parser.add_argument("--limit", type=int, default=None, help="only the first N test questions (default: all)")
    parser.add_argument("--kinds", nargs="+", default=[CLEAN, *DRIFTS], choices=[CLEAN, *DRIFTS],
                        help="input kinds to evaluate (clean is always added: it is the baseline)")
    parser.add_argument("--sizes", nargs="+", type=int, default=[50, 100, 200], help="window sizes, in requests")
    parser.add_argument("--windows", type=int, default=200, help="resampled windows per kind and size")
    parser.add_argument("--alpha", type=float, default=settings.watchdog_drift_test_alpha,
                        help="a window fires when its p-value is at most this (default: WATCHDOG_DRIFT_TEST_ALPHA)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    configure_logging(logging.INFO)

    vqa = VQAModel.load(args.model_dir, args.adapter_dir or current_adapter_dir(settings))
    frame = load_rows(args.csv, split="test", limit=args.limit)
    kinds = [CLEAN] + [k for k in args.kinds if k != CLEAN]
    answered = [answer_split(vqa, frame, args.images_root, kind) for kind in kinds]
    rows = evaluate_windows(vqa, answered, window_sizes=args.sizes, windows=args.windows, alpha=args.alpha,
                            seed=args.seed)
    seconds = time_test(vqa, answered[0].signatures, events=1000)
    print(f"{vqa.model_version} / adapter {vqa.adapter_version}, {len(frame)} test questions\n")
    print(markdown_table(rows, args.alpha))
    print(f"\none test over 1,000 requests: {1000 * seconds:.0f} ms (median of 5)")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows_as_dicts(rows), "test_seconds_1000": seconds,
                                         "alpha": args.alpha, "questions": len(frame)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
