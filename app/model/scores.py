"""The two per-request scores: quality_score (answer confidence) and drift_score (input novelty).

Pure maths over what the model produced; `VQAModel.postprocess` calls these for every answer.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

REFERENCE_FILE = "drift_reference.json"


def quality_score(token_probs: list[float], eos_prob: float | None) -> float:
    """Geometric mean of the answer tokens' softmax probabilities.

    An answer with no content token (the model stopped at once) is scored by the end-of-answer
    token's probability, so an empty answer is never "confident" by default.
    """
    scored = token_probs or ([eos_prob] if eos_prob is not None else [0.0])
    return math.exp(sum(math.log(max(p, 1e-12)) for p in scored) / len(scored))


class DriftReference:
    """Per-dimension mean and std of the vision signal (mean patch embedding and pooled embedding).

    drift_score(e) = mean_d |e_d - mean_d| / std_d: about 0.8 for in-distribution images
    (the mean |z| of a normal variable), rising as images move away from the training data.
    """

    def __init__(self, mean: np.ndarray, std: np.ndarray, count: int):
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.maximum(np.asarray(std, dtype=np.float32), 1e-6)
        self.count = count

    @classmethod
    def fit(cls, embeddings: np.ndarray) -> DriftReference:
        return cls(embeddings.mean(axis=0), embeddings.std(axis=0), len(embeddings))

    def score(self, embeddings: np.ndarray) -> np.ndarray:
        return np.abs((embeddings - self.mean) / self.std).mean(axis=-1)

    def save(self, directory: Path) -> None:
        payload = {"mean": self.mean.tolist(), "std": self.std.tolist(), "count": self.count,
                   "formula": "mean over dimensions of |embedding - mean| / std"}
        (Path(directory) / REFERENCE_FILE).write_text(json.dumps(payload))

    @classmethod
    def load(cls, directory: Path) -> DriftReference | None:
        path = Path(directory) / REFERENCE_FILE
        if not path.is_file():
            return None
        payload = json.loads(path.read_text())
        return cls(np.array(payload["mean"]), np.array(payload["std"]), int(payload["count"]))
