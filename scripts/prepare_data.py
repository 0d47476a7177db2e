"""Export the easy-VQA dataset into data/: images under an images root plus VQA_Dataset.csv.

The same layout (image_path relative to the images root, question, answer, split) serves
a user's own images, so every other script works on either.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from app.config import Settings
from app.learning.data import export_easy_vqa
from app.logsetup import configure_logging


def main(argv: list[str] | None = None) -> int:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=Path(settings.data_dir),
                        help="where VQA_Dataset.csv goes (default: VQA_DATA_DIR)")
    parser.add_argument("--images-root", type=Path, default=Path(settings.images_root),
                        help="where the images go (default: VQA_IMAGES_ROOT)")
    args = parser.parse_args(argv)
    configure_logging(logging.INFO)
    csv_path = export_easy_vqa(args.data_dir, args.images_root)
    print(csv_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
