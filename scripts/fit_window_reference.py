"""Fit a base model's window drift reference (window_reference.json) from the train split's images.

Model builds and LoRA training write it themselves; this adds it to a model built before the
window drift test existed, without retraining (the committed models/blip-vqa-small was made so):

    python -m scripts.fit_window_reference --model-dir models/blip-vqa-small
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from app.config import Settings
from app.learning.data import CSV_NAME
from app.learning.smallmodel import refit_window_reference
from app.logsetup import configure_logging
from app.model.window_drift import WINDOW_REFERENCE_FILE


def main(argv: list[str] | None = None) -> int:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=Path(settings.model_dir),
                        help="the base model directory to write into (default: VQA_MODEL_DIR)")
    parser.add_argument("--csv", type=Path, default=Path(settings.data_dir) / CSV_NAME,
                        help="dataset CSV whose train split the model was trained on (default: VQA_DATA_DIR/"
                             "VQA_Dataset.csv)")
    parser.add_argument("--images-root", type=Path, default=Path(settings.images_root),
                        help="images root of the CSV's image_path (default: VQA_IMAGES_ROOT)")
    args = parser.parse_args(argv)
    configure_logging(logging.INFO)
    reference = refit_window_reference(args.model_dir, args.csv, args.images_root)
    path = args.model_dir / WINDOW_REFERENCE_FILE
    print(json.dumps({"written": str(path), "bytes": path.stat().st_size, "train_images": reference.count,
                      "signature_dims": reference.dims, "index": len(reference.index),
                      "calibration": len(reference.calibration)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
