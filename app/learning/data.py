"""The dataset layout every script shares: images under a root, one CSV of question rows.

`VQA_Dataset.csv` has `image_path` (relative to the images root), `question`, `answer`
and `split`; `export_easy_vqa` writes the easy-VQA package's data in that layout.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

import pandas as pd
from tqdm import tqdm

log = logging.getLogger(__name__)

CSV_NAME = "VQA_Dataset.csv"
COLUMNS = ("image_path", "question", "answer", "split")


class DatasetError(ValueError):
    """The CSV or its images are not in the expected layout."""


def normalize_answer(text: str) -> str:
    """Exact-match normalisation: lower case, trimmed, inner whitespace collapsed, no final period."""
    return " ".join(str(text).strip().lower().rstrip(".").split())


def export_easy_vqa(data_dir: Path, images_root: Path | None = None) -> Path:
    """Copy easy-VQA's images under `images_root` and write `data_dir/VQA_Dataset.csv`.

    Idempotent: images already present are not copied again. Returns the CSV path.
    """
    import easy_vqa  # the package ships 4,000 train and 1,000 test images

    data_dir = Path(data_dir)
    images_root = Path(images_root) if images_root else data_dir / "images"
    rows = []
    for split, questions, paths in (
        ("train", easy_vqa.get_train_questions(), easy_vqa.get_train_image_paths()),
        ("test", easy_vqa.get_test_questions(), easy_vqa.get_test_image_paths()),
    ):
        target = images_root / split
        target.mkdir(parents=True, exist_ok=True)
        for image_id, src in tqdm(sorted(paths.items()), desc=f"easy-VQA {split} images", unit="img"):
            dst = target / f"{image_id}.png"
            if not dst.exists():
                shutil.copyfile(src, dst)
        texts, answers, image_ids = questions
        rows += [
            {"image_path": f"{split}/{i}.png", "question": q, "answer": a, "split": split}
            for q, a, i in zip(texts, answers, image_ids, strict=True)
        ]
    csv_path = data_dir / CSV_NAME
    tmp = csv_path.with_suffix(".tmp")
    pd.DataFrame(rows, columns=COLUMNS).to_csv(tmp, index=False)
    tmp.replace(csv_path)
    log.info("wrote %d rows to %s (images under %s)", len(rows), csv_path, images_root)
    return csv_path


def load_rows(csv_path: Path, split: str | None = None, limit: int | None = None) -> pd.DataFrame:
    """Read the dataset CSV, optionally one split and the first `limit` rows of it."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DatasetError(f"{csv_path} does not exist; run `python -m scripts.prepare_data` first")
    frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    missing = {"image_path", "question", "answer"} - set(frame.columns)
    if missing:
        raise DatasetError(f"{csv_path} lacks columns {sorted(missing)}")
    if split is not None:
        if "split" not in frame.columns:
            raise DatasetError(f"{csv_path} has no `split` column to select {split!r}")
        frame = frame[frame["split"] == split]
    if limit is not None:
        frame = frame.head(limit)
    return frame.reset_index(drop=True)


def frame_hash(frame: pd.DataFrame) -> str:
    """A short content hash of the rows used for training (stored in adapter metadata)."""
    digest = hashlib.sha256(frame[["image_path", "question", "answer"]].to_csv(index=False).encode())
    return digest.hexdigest()[:16]
