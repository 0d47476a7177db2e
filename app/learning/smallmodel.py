"""Build the small offline BLIP VQA model from a config and train it on the dataset CSV.

The result is saved with `save_pretrained`, so `BlipForQuestionAnswering.from_pretrained(dir)`
loads it exactly as it loads `Salesforce/blip-vqa-capfilt-large`; only the directory differs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from app.learning import data as dataset
from app.learning.gate import evaluate_frame
from app.learning.training import encode_rows, fit, seed_everything
from app.model.registry import MODEL_INFO_FILE
from app.model.scores import DriftReference
from app.model.vqa import VQAModel
from app.model.window_drift import WindowDriftError, WindowReference

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
IMAGE_MEAN = [0.48145466, 0.4578275, 0.40821073]  # BLIP's own normalisation
IMAGE_STD = [0.26862954, 0.26130258, 0.27577711]


@dataclass
class SmallModelSpec:
    image_size: int = 64
    patch_size: int = 8
    vision_hidden: int = 128
    vision_layers: int = 4
    vision_heads: int = 4
    text_hidden: int = 128
    text_layers: int = 2
    text_heads: int = 4
    intermediate: int = 256


def words_of(texts: list[str]) -> list[str]:
    """Word-level vocabulary in BERT's basic tokenisation (lower case, punctuation split)."""
    words: set[str] = set()
    for text in texts:
        words.update(re.findall(r"\w+|[^\w\s]", text.lower()))
    return sorted(words)


def build_tokenizer(texts: list[str]):
    """A BertTokenizerFast over the dataset's words. (`vocab=` a dict: transformers 5 ignores vocab_file.)"""
    from transformers import BertTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + words_of(texts))}
    tokenizer = BertTokenizerFast(vocab=vocab, do_lower_case=True, model_max_length=64)
    probe = texts[0].lower() if texts else "what color is the shape?"
    round_trip = tokenizer.decode(tokenizer(probe)["input_ids"], skip_special_tokens=True)
    if round_trip.replace(" ", "") != probe.replace(" ", "") or tokenizer.unk_token in round_trip:
        raise RuntimeError(f"tokenizer does not round-trip: {probe!r} -> {round_trip!r}")
    return tokenizer


def build_untrained(texts: list[str], spec: SmallModelSpec, seed: int = 0):
    """A randomly initialised small BlipForQuestionAnswering and its BlipProcessor."""
    from transformers import BlipConfig, BlipForQuestionAnswering, BlipImageProcessor, BlipProcessor

    tokenizer = build_tokenizer(texts)
    vocab = tokenizer.get_vocab()
    image_processor = BlipImageProcessor(
        size={"height": spec.image_size, "width": spec.image_size}, image_mean=IMAGE_MEAN, image_std=IMAGE_STD,
    )
    processor = BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)
    config = BlipConfig(
        vision_config={
            "hidden_size": spec.vision_hidden, "intermediate_size": spec.intermediate,
            "num_hidden_layers": spec.vision_layers, "num_attention_heads": spec.vision_heads,
            "image_size": spec.image_size, "patch_size": spec.patch_size, "initializer_range": 0.02,
        },
        text_config={
            "vocab_size": len(vocab), "hidden_size": spec.text_hidden, "intermediate_size": spec.intermediate,
            "num_hidden_layers": spec.text_layers, "num_attention_heads": spec.text_heads,
            "max_position_embeddings": 64, "pad_token_id": vocab["[PAD]"], "bos_token_id": vocab["[DEC]"],
            "sep_token_id": vocab["[SEP]"], "eos_token_id": vocab["[SEP]"],
        },
    )
    seed_everything(seed)
    model = BlipForQuestionAnswering(config)
    return model, processor


def fit_references(vqa: VQAModel, pixel_values: torch.Tensor,
                   batch_size: int = 256) -> tuple[DriftReference, WindowReference | None]:
    """Both input references of a model, from its distinct training images (one pass of the vision tower):
    the per-request drift_score's moments and the window drift test's sample (None from under 3 images)."""
    chunks = [vqa.vision_signals(pixel_values[i:i + batch_size]) for i in range(0, len(pixel_values), batch_size)]
    signals = np.concatenate([signal for signal, _ in chunks])
    stats = np.concatenate([pixels for _, pixels in chunks])
    try:
        window = WindowReference.fit(signals, stats)
    except WindowDriftError as exc:
        log.warning("no window drift reference: %s", exc)
        window = None
    return DriftReference.fit(signals), window


def pretrain_vision(model, encoded, frame: pd.DataFrame, *, steps: int, batch_size: int = 64, lr: float = 3e-4,
                    seed: int = 0) -> dict:
    """Pretrain the vision encoder to tell, from its pooled embedding, which answers its image has.

    Multi-label classification over the non-yes/no answers of each training image (its colours
    and shapes here). BLIP's own vision encoder is pretrained before VQA fine-tuning too; without
    this step the small ViT learns colours from VQA alone but never shapes (85% accuracy, shape
    questions at chance), because pooled colour features already explain most of the VQA loss.
    """
    seed_everything(seed)
    paths = list(dict.fromkeys(frame["image_path"]))
    answers = sorted({a for a in frame["answer"].map(dataset.normalize_answer) if a not in ("yes", "no")})
    index = {a: i for i, a in enumerate(answers)}
    targets = torch.zeros(len(paths), len(answers))
    position = {p: i for i, p in enumerate(paths)}
    for path, answer in zip(frame["image_path"], frame["answer"].map(dataset.normalize_answer), strict=True):
        if answer in index:
            targets[position[path], index[answer]] = 1.0
    vision = model.vision_model
    head = torch.nn.Linear(vision.config.hidden_size, len(answers))
    optimizer = torch.optim.AdamW(list(vision.parameters()) + list(head.parameters()), lr=lr, weight_decay=0.01)
    generator = torch.Generator().manual_seed(seed)
    vision.train()
    losses = []
    for _ in tqdm(range(steps), desc="pretrain vision", unit="step"):
        idx = torch.randint(0, len(paths), (batch_size,), generator=generator)
        logits = head(vision(pixel_values=encoded.pixel_values[idx]).pooler_output)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return {"steps": steps, "labels": answers, "final_loss": float(np.mean(losses[-50:]))}


def _train_pixels(vqa: VQAModel, csv_path: Path, images_root: Path) -> torch.Tensor:
    """The preprocessed distinct images of the dataset's train split, in CSV order."""
    from app.serving.images import open_dataset_image

    paths = list(dict.fromkeys(dataset.load_rows(csv_path, split="train")["image_path"]))
    return torch.cat([vqa.processor.image_processor(images=[open_dataset_image(images_root, p)
                                                             for p in paths[i:i + 256]],
                                                     return_tensors="pt")["pixel_values"]
                      for i in range(0, len(paths), 256)])


def refit_reference(model_dir: Path, csv_path: Path, images_root: Path) -> DriftReference:
    """Recompute and save a model's drift reference from its training images (no retraining)."""
    vqa = VQAModel.load(model_dir)
    reference, _ = fit_references(vqa, _train_pixels(vqa, csv_path, images_root))
    reference.save(Path(model_dir))
    return reference


def refit_window_reference(model_dir: Path, csv_path: Path, images_root: Path) -> WindowReference:
    """Fit and save a base model's window drift reference from the train split's images (no retraining)."""
    vqa = VQAModel.load(model_dir)
    _, reference = fit_references(vqa, _train_pixels(vqa, csv_path, images_root))
    reference.save(Path(model_dir))
    return reference


def build_small_model(csv_path: Path, images_root: Path, out_dir: Path, *, epochs: float = 20.0,
                      max_steps: int | None = None, batch_size: int = 96, lr: float = 3e-4, seed: int = 0,
                      spec: SmallModelSpec | None = None, eval_limit: int | None = None,
                      vision_pretrain_steps: int = 1500, vision_pretrain_lr: float = 5e-4,
                      freeze_vision: bool = True) -> dict:
    """Build, train, evaluate and save the small model; returns its metadata."""
    spec = spec or SmallModelSpec()
    frame = dataset.load_rows(csv_path)
    train = frame[frame["split"] == "train"].reset_index(drop=True)
    test = frame[frame["split"] == "test"].reset_index(drop=True)
    if eval_limit:
        test = test.head(eval_limit)
    texts = frame["question"].tolist() + frame["answer"].tolist()
    model, processor = build_untrained(texts, spec, seed=seed)
    encoded = encode_rows(train, images_root, processor, model.config.text_config.bos_token_id)
    pretrain = pretrain_vision(model, encoded, train, steps=vision_pretrain_steps, lr=vision_pretrain_lr,
                               seed=seed) if vision_pretrain_steps else None
    if freeze_vision:
        # Fine-tuning the ViT on VQA washes its shape features out again (colours alone explain most
        # of the VQA loss); keeping it frozen, as BLIP-2 does, leaves them for the text side to read.
        model.vision_model.requires_grad_(False)
    stats = fit(model, encoded, epochs=epochs, max_steps=max_steps, batch_size=batch_size, lr=lr, seed=seed,
                desc="train small BLIP")
    model.vision_model.requires_grad_(True)
    vqa = VQAModel(model, processor, reference=None, model_version="unsaved", adapter_version="none")
    vqa.reference, vqa.window_reference = fit_references(vqa, encoded.pixel_values)
    metrics = evaluate_frame(vqa, test, images_root)
    log.info("test accuracy %.4f on %d questions", metrics["accuracy"], metrics["count"])

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    vqa.reference.save(out_dir)
    if vqa.window_reference is not None:
        vqa.window_reference.save(out_dir)
    weights = b"".join(p.read_bytes() for p in sorted(out_dir.glob("*.safetensors")))
    info = {
        "version": f"blip-vqa-small-{hashlib.sha256(weights).hexdigest()[:8]}",
        "spec": asdict(spec), "train": {"epochs": epochs, "max_steps": max_steps, "batch_size": batch_size,
                                         "lr": lr, "seed": seed, "data_hash": dataset.frame_hash(train),
                                         "vision_pretrain": pretrain, "vision_frozen_in_vqa": freeze_vision,
                                         **stats},
        "test": metrics, "parameters": sum(p.numel() for p in model.parameters()),
    }
    (out_dir / MODEL_INFO_FILE).write_text(json.dumps(info, indent=2))
    return info
