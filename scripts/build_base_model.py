"""Build the small offline BLIP VQA base model and train it on the dataset's train split.

Saved with `save_pretrained`, so the service loads it from VQA_MODEL_DIR exactly as it would
load Salesforce/blip-vqa-capfilt-large. Prints the test-split exact-match accuracy.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from app.config import Settings
from app.learning.data import CSV_NAME
from app.learning.smallmodel import SmallModelSpec, build_small_model, refit_reference
from app.logsetup import configure_logging


def main(argv: list[str] | None = None) -> int:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", type=Path, default=Path(settings.data_dir) / CSV_NAME,
                        help="dataset CSV (default: VQA_DATA_DIR/VQA_Dataset.csv; make it with prepare_data.py)")
    parser.add_argument("--images-root", type=Path, default=Path(settings.images_root))
    parser.add_argument("--out", type=Path, default=Path(settings.model_dir), help="output model directory")
    parser.add_argument("--epochs", type=float, default=20.0, help="passes over the train images")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (overrides epochs)")
    parser.add_argument("--batch-size", type=int, default=96)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--patch-size", type=int, default=SmallModelSpec.patch_size, help="vision patch size (px)")
    parser.add_argument("--vision-layers", type=int, default=SmallModelSpec.vision_layers)
    parser.add_argument("--vision-pretrain-steps", type=int, default=1500,
                        help="steps of vision-encoder pretraining on image-level answer labels (0 = none)")
    parser.add_argument("--eval-limit", type=int, default=None, help="evaluate on the first N test questions only")
    parser.add_argument("--threads", type=int, default=settings.torch_threads,
                        help="PyTorch CPU threads (default VQA_TORCH_THREADS; 0 = PyTorch's choice). "
                             "1 is fastest on a busy 2-core machine")
    parser.add_argument("--refit-reference", action="store_true",
                        help="only recompute --out's drift reference from the train images (no training)")
    args = parser.parse_args(argv)
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    configure_logging(logging.INFO)
    if args.refit_reference:
        reference = refit_reference(args.out, args.csv, args.images_root)
        print(json.dumps({"out": str(args.out), "reference_images": reference.count}))
        return 0
    info = build_small_model(args.csv, args.images_root, args.out, epochs=args.epochs, max_steps=args.max_steps,
                             batch_size=args.batch_size, lr=args.lr, seed=args.seed, eval_limit=args.eval_limit,
                              spec=SmallModelSpec(patch_size=args.patch_size, vision_layers=args.vision_layers),
                              vision_pretrain_steps=args.vision_pretrain_steps)
    print(json.dumps({"out": str(args.out), "version": info["version"], "test": info["test"],
                      "train_seconds": round(info["train"]["seconds"], 1)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
