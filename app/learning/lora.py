"""LoRA fine-tuning with PEFT: what scripts/train_mini.py calls.

Trains a versioned adapter on rows in the dataset layout, starting from a base model and
optionally an existing adapter, and saves it with its metadata and input references (drift_score's
moments and the window drift test's sample).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from app.learning import data as dataset
from app.learning.training import encode_rows, fit, seed_everything
from app.model.registry import ADAPTER_INFO_FILE, MODEL_INFO_FILE, read_info
from app.model.vqa import VQAModel

log = logging.getLogger(__name__)

# The patch embedding (a Conv2d: input drift such as inverted colours is remapped right where pixels
# enter), vision attention + MLP, and the text attention projections.
DEFAULT_TARGETS = ("patch_embedding", "qkv", "projection", "fc1", "fc2", "query", "value")


@dataclass
class LoraParams:
    rank: int = 32
    alpha: int = 64
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    lr: float = 2e-3
    epochs: float = 3.0
    max_steps: int | None = None
    batch_size: int = 32
    seed: int = 0


def new_adapter_name(data_hash: str) -> str:
    return f"adapter-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}-{data_hash[:8]}"


def train_adapter(base_dir: Path, frame: pd.DataFrame, images_root: Path, adapters_dir: Path,
                  params: LoraParams, *, init_adapter: Path | None = None, name: str | None = None) -> Path:
    """Fine-tune a LoRA adapter on `frame` and save it under `adapters_dir`; returns its directory."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import BlipForQuestionAnswering, BlipProcessor

    if frame.empty:
        raise dataset.DatasetError("no training rows: the CSV (or its selected split) is empty")
    seed_everything(params.seed)
    processor = BlipProcessor.from_pretrained(base_dir)
    base = BlipForQuestionAnswering.from_pretrained(base_dir)
    if init_adapter:
        model = PeftModel.from_pretrained(base, init_adapter, is_trainable=True)
    else:
        config = LoraConfig(r=params.rank, lora_alpha=params.alpha, lora_dropout=params.dropout,
                            target_modules=list(params.target_modules), bias="none")
        model = get_peft_model(base, config)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("training %d LoRA parameters on %d rows", trainable, len(frame))
    encoded = encode_rows(frame, images_root, processor, base.config.text_config.bos_token_id)
    stats = fit(model, encoded, epochs=params.epochs, max_steps=params.max_steps, batch_size=params.batch_size,
                lr=params.lr, seed=params.seed, desc="train LoRA adapter")

    data_hash = dataset.frame_hash(frame)
    out = Path(adapters_dir) / (name or new_adapter_name(data_hash))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    vqa = VQAModel(model, processor, reference=None, model_version="training", adapter_version=out.name)
    from app.learning.smallmodel import fit_references

    for reference in fit_references(vqa, encoded.pixel_values):
        if reference is not None:
            reference.save(out)
    info = {
        "version": out.name,
        "created": datetime.now(UTC).isoformat(),
        "base_model": {"dir": str(base_dir), "version": read_info(base_dir, MODEL_INFO_FILE).get("version")},
        "init_adapter": str(init_adapter) if init_adapter else None,
        "data_hash": data_hash,
        "rows": len(frame),
        "parameters": asdict(params),
        "trainable_parameters": trainable,
        "metrics": {"final_loss": stats["final_loss"], "steps": stats["steps"],
                    "train_seconds": round(stats["seconds"], 2)},
    }
    (out / ADAPTER_INFO_FILE).write_text(json.dumps(info, indent=2))
    log.info("saved adapter %s (%.1fs)", out, stats["seconds"])
    return out


def record_metrics(adapter_dir: Path, key: str, metrics: dict) -> None:
    """Add evaluation results to an adapter's metadata file."""
    path = Path(adapter_dir) / ADAPTER_INFO_FILE
    info = json.loads(path.read_text()) if path.is_file() else {}
    info.setdefault("metrics", {})[key] = metrics
    info["metrics"]["updated"] = time.time()
    path.write_text(json.dumps(info, indent=2))
