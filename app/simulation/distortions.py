"""Input drifts for traffic and tests: colour inversion, greyscale, noise and blur.

`materialise` writes drifted copies under `<images_root>/drift/<kind>/`, so drifted requests
reference real files by `image_path` and their feedback can be retrained on.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps


def invert(image: Image.Image) -> Image.Image:
    return ImageOps.invert(image.convert("RGB"))


def greyscale(image: Image.Image) -> Image.Image:
    return ImageOps.grayscale(image).convert("RGB")


def noise(image: Image.Image, sigma: float = 20.0, seed: int = 0) -> Image.Image:
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    noisy = pixels + np.random.default_rng(seed).normal(0, sigma, pixels.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def blur(image: Image.Image) -> Image.Image:
    return image.convert("RGB").filter(ImageFilter.GaussianBlur(radius=1.5))


DRIFTS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "invert": invert, "greyscale": greyscale, "noise": noise, "blur": blur,
}


def drifted_path(kind: str, image_path: str) -> str:
    return f"drift/{kind}/{image_path}"


def materialise(images_root: Path, image_path: str, kind: str) -> str:
    """Write (once) the drifted copy of `image_path` and return its path relative to the root."""
    if kind not in DRIFTS:
        raise ValueError(f"unknown drift {kind!r}; choose from {sorted(DRIFTS)}")
    rel = drifted_path(kind, image_path)
    target = Path(images_root) / rel
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(Path(images_root) / image_path) as source:
            DRIFTS[kind](source).save(target)
    return rel


def distortion_table(vqa, frame, images_root: Path, kinds: list[str] | None = None) -> list[dict]:
    """How the model's signals react to each distortion on the same rows: accuracy, mean quality_score and
    mean drift_score, clean first (what `scripts/bench_drift.py` prints for docs/BENCHMARKS.md)."""
    from app.learning.gate import evaluate_frame

    rows = []
    for kind in ["clean", *(kinds or list(DRIFTS))]:
        shifted = frame if kind == "clean" else frame.assign(
            image_path=[materialise(images_root, p, kind) for p in frame["image_path"]])
        scored = evaluate_frame(vqa, shifted, images_root)
        rows.append({"input": kind, "count": scored["count"], "accuracy": scored["accuracy"],
                     "mean_quality_score": scored["mean_quality_score"],
                     "mean_drift_score": scored["mean_drift_score"]})
    return rows
