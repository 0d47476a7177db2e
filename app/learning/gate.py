"""The evaluation gate: accuracy, confidence and latency of base + adapter on held-out rows.

`evaluate_frame` measures one model; `gate` decides champion versus challenger: a new adapter
is promoted only if it clears the accuracy floor and is not worse than the deployed one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from app.config import Settings
from app.learning.data import normalize_answer
from app.model.vqa import VQAModel
from app.serving.images import open_dataset_image


def evaluate_frame(vqa: VQAModel, frame: pd.DataFrame, images_root: Path, batch_size: int = 64) -> dict:
    """Exact-match accuracy (normalised), mean quality_score and drift_score, latency per question."""
    correct, quality, drift, seconds = 0, [], [], 0.0
    for start in range(0, len(frame), batch_size):
        chunk = frame.iloc[start:start + batch_size]
        images = [open_dataset_image(images_root, p) for p in chunk["image_path"]]
        began = time.perf_counter()
        preds = vqa.answer(images, chunk["question"].tolist())
        seconds += time.perf_counter() - began
        for pred, truth in zip(preds, chunk["answer"], strict=True):
            correct += normalize_answer(pred.answer) == normalize_answer(truth)
            quality.append(pred.quality_score)
            if pred.drift_score is not None:
                drift.append(pred.drift_score)
    count = len(frame)
    return {
        "count": count,
        "accuracy": correct / count if count else 0.0,
        "mean_quality_score": float(np.mean(quality)) if quality else None,
        "mean_drift_score": float(np.mean(drift)) if drift else None,
        "latency_seconds_per_question": seconds / count if count else None,
        "model_version": vqa.model_version,
        "adapter_version": vqa.adapter_version,
    }


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reasons: list[str]


def gate(challenger: dict, champion: dict | None, *, min_accuracy: float, tolerance: float = 0.0) -> GateResult:
    """Pass if the challenger reaches `min_accuracy` and is not worse than the champion (minus tolerance)."""
    reasons, passed = [], True
    if challenger["accuracy"] < min_accuracy:
        passed = False
        reasons.append(f"accuracy {challenger['accuracy']:.4f} is below the gate {min_accuracy:.4f}")
    else:
        reasons.append(f"accuracy {challenger['accuracy']:.4f} clears the gate {min_accuracy:.4f}")
    if champion is not None:
        if challenger["accuracy"] + tolerance < champion["accuracy"]:
            passed = False
            reasons.append(f"worse than the deployed {champion['adapter_version']} "
                           f"({challenger['accuracy']:.4f} < {champion['accuracy']:.4f})")
        else:
            reasons.append(f"not worse than the deployed {champion['adapter_version']} "
                           f"({challenger['accuracy']:.4f} >= {champion['accuracy']:.4f})")
    return GateResult(passed, reasons)


def champion_challenger(base_dir: Path, challenger: Path | None, frame: pd.DataFrame, images_root: Path, *,
                        deployed: Path | None, compare: bool = True, min_accuracy: float,
                        tolerance: float = 0.0) -> dict:
    """Score the challenger and the deployed model (adapter or base alone) on the same rows, then gate."""
    scored = evaluate_frame(VQAModel.load(base_dir, challenger), frame, images_root)
    champion = None
    same = deployed is not None and challenger is not None and Path(deployed).resolve() == Path(challenger).resolve()
    if compare and not same and (deployed is not None or challenger is not None):
        champion = evaluate_frame(VQAModel.load(base_dir, deployed), frame, images_root)
    result = gate(scored, champion, min_accuracy=min_accuracy, tolerance=tolerance)
    return {"challenger": scored, "champion": champion, "passed": result.passed, "reasons": result.reasons,
            "rows": len(frame)}


def evaluate_and_promote(settings: Settings, frame: pd.DataFrame, images_root: Path, *, base_model: Path,
                         adapter: Path | None, champion: Path | None, compare: bool, min_accuracy: float,
                         tolerance: float, promote: bool) -> dict:
    """Gate `adapter` against `champion` (default: what CURRENT names) on `frame`; record the result in the
    adapter's metadata and, if it passed and `promote` is set, point CURRENT at it. Returns the report."""
    from app.learning.lora import record_metrics
    from app.model.registry import current_adapter_dir, promote_adapter

    report = champion_challenger(base_model, adapter, frame, images_root,
                                 deployed=champion or current_adapter_dir(settings), compare=compare,
                                 min_accuracy=min_accuracy, tolerance=tolerance)
    if adapter is not None:
        record_metrics(adapter, "evaluation", {"accuracy": report["challenger"]["accuracy"],
                                               "passed": report["passed"]})
        if report["passed"] and promote:
            promote_adapter(Path(settings.adapters_dir), adapter)
            report["promoted"] = adapter.name
    return report
