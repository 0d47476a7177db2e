"""LoRA fine-tuning of the BLIP VQA base model with PEFT on a CSV in the dataset layout.

Rows need image_path (relative to --images-root), question, answer; `--split` selects rows
by the optional `split` column. Saves a versioned adapter (adapter_config.json, weights,
vqa_adapter.json metadata, drift reference) under --adapters-dir and prints its path.

For the large model (Salesforce/blip-vqa-capfilt-large) the same command works; use
--rank 16 --alpha 32 --target-modules qkv query value --lr 1e-4 --batch-size 8, on a GPU
(the small model's defaults, rank 32 with the patch embedding targeted, are tuned to heal colour inversion).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from app.config import Settings
from app.learning.data import CSV_NAME, DatasetError, load_rows
from app.learning.lora import DEFAULT_TARGETS, LoraParams, train_adapter
from app.logsetup import configure_logging


def build_parser(settings: Settings) -> argparse.ArgumentParser:
    defaults = LoraParams()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", type=Path, default=Path(settings.data_dir) / CSV_NAME, help="training rows")
    parser.add_argument("--split", default="train", help="rows whose `split` is this ('' = all rows)")
    parser.add_argument("--limit", type=int, default=None, help="use the first N rows only")
    parser.add_argument("--images-root", type=Path, default=Path(settings.images_root))
    parser.add_argument("--base-model", type=Path, default=Path(settings.model_dir))
    parser.add_argument("--init-adapter", type=Path, default=None, help="continue training this adapter")
    parser.add_argument("--adapters-dir", type=Path, default=Path(settings.adapters_dir))
    parser.add_argument("--name", default=None, help="adapter folder name (default: adapter-<time>-<data hash>)")
    parser.add_argument("--rank", type=int, default=defaults.rank)
    parser.add_argument("--alpha", type=int, default=defaults.alpha)
    parser.add_argument("--dropout", type=float, default=defaults.dropout)
    parser.add_argument("--target-modules", nargs="+", default=list(DEFAULT_TARGETS))
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--epochs", type=float, default=defaults.epochs)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser(Settings.from_env()).parse_args(argv)
    configure_logging(logging.INFO)
    params = LoraParams(rank=args.rank, alpha=args.alpha, dropout=args.dropout, target_modules=args.target_modules,
                        lr=args.lr, epochs=args.epochs, max_steps=args.max_steps, batch_size=args.batch_size,
                        seed=args.seed)
    try:
        frame = load_rows(args.csv, split=args.split or None, limit=args.limit)
        out = train_adapter(args.base_model, frame, args.images_root, args.adapters_dir, params,
                            init_adapter=args.init_adapter, name=args.name)
    except (DatasetError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"adapter": str(out)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
