"""The retraining data set: labelled production feedback from Elasticsearch plus replayed training rows.

Feedback rows are split deterministically (by request id) into training and held-out rows;
the held-out rows, with as many clean test rows, are what the evaluation gate scores.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pandas as pd

from app.config import Settings
from app.events import schema as events
from app.learning.data import COLUMNS, load_rows

log = logging.getLogger(__name__)

HOLDOUT_PERCENT = 20
FEEDBACK_COLUMNS = ("image_path", "question", "answer", "request_id")


def fetch_feedback(client, settings: Settings, since: str = "now-7d", limit: int = 10_000) -> pd.DataFrame:
    """Labelled feedback rows (image_path, question, answer=correct answer, request_id) from Elasticsearch."""
    response = client.search(
        index=events.index_pattern(settings.es_index_prefix), size=limit,
        query={"bool": {"filter": [
            {"term": {events.EVENT: events.FEEDBACK}},
            {"exists": {"field": events.IMAGE_PATH}},
            {"range": {events.TIMESTAMP: {"gte": since}}},
        ]}},
        sort=[{events.TIMESTAMP: "asc"}],
    )
    rows = [
        {"image_path": h["_source"][events.IMAGE_PATH], "question": h["_source"].get(events.QUESTION, ""),
         "answer": h["_source"][events.CORRECT_ANSWER], "request_id": h["_source"][events.REQUEST_ID]}
        for h in response["hits"]["hits"]
    ]
    return pd.DataFrame(rows, columns=list(FEEDBACK_COLUMNS))


def is_holdout(request_id: str) -> bool:
    return int(hashlib.sha256(request_id.encode()).hexdigest()[:8], 16) % 100 < HOLDOUT_PERCENT


def build_datasets(feedback: pd.DataFrame, base_csv: Path, out_dir: Path, *, replay_rows: int,
                   seed: int = 0) -> tuple[Path, Path, dict]:
    """Write train.csv and eval.csv for one pipeline run; returns their paths and a summary."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = load_rows(base_csv)
    clean_train = base[base["split"] == "train"]
    clean_test = base[base["split"] == "test"]
    holdout_mask = feedback["request_id"].map(is_holdout) if len(feedback) else pd.Series(dtype=bool)
    fb_train = feedback[~holdout_mask] if len(feedback) else feedback
    fb_eval = feedback[holdout_mask] if len(feedback) else feedback
    replay = clean_train.sample(n=min(replay_rows, len(clean_train)), random_state=seed)
    train = pd.concat([fb_train.assign(split="train"), replay], ignore_index=True)[list(COLUMNS)]
    eval_clean = clean_test.sample(n=min(max(len(fb_eval), 200), len(clean_test)), random_state=seed)
    evaluation = pd.concat([fb_eval.assign(split="test"), eval_clean], ignore_index=True)[list(COLUMNS)]
    train_csv, eval_csv = out_dir / "train.csv", out_dir / "eval.csv"
    train.to_csv(train_csv, index=False)
    evaluation.to_csv(eval_csv, index=False)
    summary = {"feedback_rows": len(feedback), "feedback_train": len(fb_train), "feedback_eval": len(fb_eval),
               "replay_rows": len(replay), "train_rows": len(train), "eval_rows": len(evaluation)}
    log.info("retraining data: %s", summary)
    return train_csv, eval_csv, summary
