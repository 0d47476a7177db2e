"""Synthetic traffic from the dataset: requests at a rate, optionally drifted, optionally with feedback.

Used by scripts/traffic.py, the self-healing demo and the end-to-end test.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import requests
from tqdm import tqdm

from app.learning.data import normalize_answer
from app.simulation.distortions import materialise

log = logging.getLogger(__name__)


@dataclass
class TrafficResult:
    sent: int = 0
    answered: int = 0
    correct: int = 0
    errors: int = 0
    feedback: int = 0
    quality: list[float] = field(default_factory=list)
    drift: list[float] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    outcomes: list[bool] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.correct / self.answered if self.answered else 0.0

    def summary(self) -> dict:
        mean = lambda xs: round(sum(xs) / len(xs), 4) if xs else None  # noqa: E731
        return {"sent": self.sent, "answered": self.answered, "errors": self.errors, "feedback": self.feedback,
                "accuracy": round(self.accuracy, 4), "mean_quality_score": mean(self.quality),
                "mean_drift_score": mean(self.drift), "adapter_versions": sorted(set(self.versions))}


def send_traffic(base_url: str, rows: pd.DataFrame, images_root: Path, *, count: int, rate: float = 0.0,
                 drift: str | None = None, feedback_share: float = 0.0, seed: int = 0,
                 session: requests.Session | None = None, progress: bool = True) -> TrafficResult:
    """Send `count` requests drawn from `rows`; `rate` per second (0 = as fast as answered)."""
    rng = random.Random(seed)
    http = session or requests.Session()
    result = TrafficResult()
    picks = rows.sample(n=count, replace=count > len(rows), random_state=seed)
    started = time.monotonic()
    for i, row in enumerate(tqdm(list(picks.itertuples()), desc="traffic", unit="req", disable=not progress)):
        if rate > 0:
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        path = materialise(images_root, row.image_path, drift) if drift else row.image_path
        result.sent += 1
        try:
            response = http.post(f"{base_url}/predict", json={"image_path": path, "question": row.question},
                                 timeout=60)
        except requests.RequestException as exc:
            log.warning("request failed: %s", exc)
            result.errors += 1
            continue
        if response.status_code != 200:
            result.errors += 1
            continue
        body = response.json()
        result.answered += 1
        right = normalize_answer(body["answer"]) == normalize_answer(row.answer)
        result.correct += right
        result.outcomes.append(right)
        result.quality.append(body["quality_score"])
        if body.get("drift_score") is not None:
            result.drift.append(body["drift_score"])
        result.versions.append(body.get("adapter_version", ""))
        result.times.append(time.time())
        if feedback_share > 0 and rng.random() < feedback_share:
            # The receipt lets whichever worker or replica gets the feedback accept it at once.
            label = {"request_id": body["request_id"], "receipt": body.get("receipt"), "answer": row.answer}
            fb = http.post(f"{base_url}/feedback", json={k: v for k, v in label.items() if v is not None}, timeout=30)
            result.feedback += fb.status_code == 200
    return result
