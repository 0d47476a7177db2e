"""The window drift test offline: how often it fires on clean and on distorted test traffic, and at what cost.

Every test question is answered once per input kind through `VQAModel.answer`, so the signatures
are the ones the service ships; windows of requests are then resampled from them.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from app.learning.data import normalize_answer
from app.model.vqa import VQAModel
from app.model.window_drift import WindowDriftError
from app.serving.images import open_dataset_image
from app.simulation.distortions import DRIFTS

log = logging.getLogger(__name__)

CLEAN = "clean"


@dataclass(frozen=True)
class AnsweredSplit:
    """One input kind over the whole frame: a signature and a correctness flag per question."""

    kind: str
    signatures: np.ndarray  # (questions, dims)
    correct: np.ndarray  # (questions,) bool


@dataclass(frozen=True)
class WindowEvalRow:
    kind: str
    window_size: int
    windows: int
    rejected: float  # share of windows whose p-value <= alpha: false alarms for `clean`, detections otherwise
    median_p_value: float
    median_statistic: float
    accuracy: float  # over every question of the frame
    accuracy_cost: float  # clean accuracy minus this kind's, in points of 1.0


def answer_split(vqa: VQAModel, frame: pd.DataFrame, images_root: Path, kind: str,
                 batch_size: int = 64) -> AnsweredSplit:
    """Answer every row of `frame` with its image as is (`clean`) or distorted by `DRIFTS[kind]`."""
    if vqa.window_reference is None:
        raise WindowDriftError(f"{vqa.model_version}/{vqa.adapter_version} has no window reference to sign inputs")
    if kind != CLEAN and kind not in DRIFTS:
        raise ValueError(f"unknown input kind {kind!r}; choose {CLEAN} or one of {sorted(DRIFTS)}")
    images = {}
    for path in dict.fromkeys(frame["image_path"]):
        image = open_dataset_image(images_root, path)
        images[path] = image if kind == CLEAN else DRIFTS[kind](image)
    signatures, correct = [], []
    for start in range(0, len(frame), batch_size):
        chunk = frame.iloc[start:start + batch_size]
        preds = vqa.answer([images[p] for p in chunk["image_path"]], chunk["question"].tolist())
        for pred, truth in zip(preds, chunk["answer"], strict=True):
            signatures.append(pred.signature)
            correct.append(normalize_answer(pred.answer) == normalize_answer(truth))
    return AnsweredSplit(kind, np.asarray(signatures, np.float64), np.asarray(correct, bool))


def evaluate_windows(vqa: VQAModel, answered: Sequence[AnsweredSplit], *, window_sizes: Sequence[int] = (50, 100, 200),
                     windows: int = 200, alpha: float = 0.005, seed: int = 0) -> list[WindowEvalRow]:
    """Resample `windows` windows of each size from each kind's questions and test each against the reference."""
    reference = vqa.window_reference
    clean_accuracy = next(float(a.correct.mean()) for a in answered if a.kind == CLEAN)
    rng = np.random.default_rng(seed)
    rows = []
    for split in answered:
        for size in window_sizes:
            results = [reference.test(split.signatures[rng.choice(len(split.signatures), size, replace=False)],
                                      seed=i) for i in range(windows)]
            accuracy = float(split.correct.mean())
            rows.append(WindowEvalRow(
                kind=split.kind, window_size=size, windows=windows,
                rejected=float(np.mean([r.rejects(alpha) for r in results])),
                median_p_value=float(np.median([r.p_value for r in results])),
                median_statistic=float(np.median([r.statistic for r in results])),
                accuracy=accuracy, accuracy_cost=clean_accuracy - accuracy,
            ))
            log.info("%s, windows of %d: %.1f%% rejected", split.kind, size, 100 * rows[-1].rejected)
    return rows


def time_test(vqa: VQAModel, signatures: np.ndarray, *, events: int = 1000, repeats: int = 5,
              seed: int = 0) -> float:
    """Median seconds of one test over `events` requests' signatures (what one watchdog poll computes)."""
    rng = np.random.default_rng(seed)
    seconds = []
    for i in range(repeats):
        window = signatures[rng.choice(len(signatures), events, replace=events > len(signatures))]
        began = time.perf_counter()
        vqa.window_reference.test(window, seed=i)
        seconds.append(time.perf_counter() - began)
    return statistics.median(seconds)


def markdown_table(rows: Sequence[WindowEvalRow], alpha: float) -> str:
    """The table docs/BENCHMARKS.md records: one line per input kind, a column per window size."""
    sizes = sorted({r.window_size for r in rows})
    kinds = list(dict.fromkeys(r.kind for r in rows))
    head = ["input", "accuracy", "vs clean"] + [f"fired, windows of {s}" for s in sizes]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for kind in kinds:
        mine = {r.window_size: r for r in rows if r.kind == kind}
        first = mine[sizes[0]]
        label = f"{kind} (false alarm)" if kind == CLEAN else kind
        cost = "—" if kind == CLEAN else f"{-100 * first.accuracy_cost:+.1f} pts"
        cells = [label, f"{100 * first.accuracy:.1f}%", cost]
        cells += [f"{100 * mine[s].rejected:.1f}% ({mine[s].windows})" for s in sizes]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(f"\np-value <= {alpha:g} counts as fired; in brackets the number of resampled windows.")
    return "\n".join(lines)


def rows_as_dicts(rows: Sequence[WindowEvalRow]) -> list[dict]:
    return [asdict(r) for r in rows]
