"""Training loops shared by the small-model build and LoRA fine-tuning.

Both train a `BlipForQuestionAnswering` on rows of the dataset CSV; `encode_rows` turns
rows into tensors once, `fit` runs seeded mini-batch AdamW with a progress bar.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm import tqdm

from app.learning.data import normalize_answer
from app.model.vqa import unwrap_base
from app.serving.images import open_dataset_image

log = logging.getLogger(__name__)


@dataclass
class Encoded:
    pixel_values: torch.Tensor  # one per distinct image
    image_index: torch.Tensor  # row -> image
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    answers: list[str]
    questions: list[str]

    def __len__(self) -> int:
        return len(self.answers)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def encode_rows(frame: pd.DataFrame, images_root: Path, processor, bos_token_id: int,
                transform: Callable[[Image.Image], Image.Image] | None = None) -> Encoded:
    """Tensors for every row; each distinct image is preprocessed once."""
    paths = list(dict.fromkeys(frame["image_path"]))
    position = {p: i for i, p in enumerate(paths)}
    pixels = []
    for start in tqdm(range(0, len(paths), 256), desc="preprocess images", unit="batch", leave=False):
        chunk = [open_dataset_image(images_root, p) for p in paths[start:start + 256]]
        if transform is not None:
            chunk = [transform(im) for im in chunk]
        pixels.append(processor.image_processor(images=chunk, return_tensors="pt")["pixel_values"])
    tok = processor.tokenizer
    questions = frame["question"].tolist()
    answers = [normalize_answer(a) for a in frame["answer"]]
    q = tok(questions, padding=True, return_tensors="pt")
    a = tok(answers, padding=True, return_tensors="pt")
    labels = a["input_ids"].clone()
    labels[:, 0] = bos_token_id  # the decoder starts from BOS, as generate() does
    labels[a["attention_mask"] == 0] = -100
    return Encoded(
        pixel_values=torch.cat(pixels), image_index=torch.tensor([position[p] for p in frame["image_path"]]),
        input_ids=q["input_ids"], attention_mask=q["attention_mask"], labels=labels,
        answers=answers, questions=questions,
    )


def vqa_loss(model, pixel_values: torch.Tensor, image_index: torch.Tensor, input_ids: torch.Tensor,
             attention_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """BlipForQuestionAnswering's training loss, encoding each distinct image once.

    The same computation as the model's own forward (vision -> question encoder with
    cross-attention -> answer decoder), except that rows sharing an image share its encoding,
    which makes a batch of ~10 questions per image about 5x cheaper. LoRA layers, if any,
    live inside these modules, so PEFT models train through it unchanged.
    """
    blip = unwrap_base(model)
    image_embeds = blip.vision_model(pixel_values=pixel_values).last_hidden_state[image_index]
    image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long)
    question = blip.text_encoder(input_ids=input_ids, attention_mask=attention_mask,
                                 encoder_hidden_states=image_embeds, encoder_attention_mask=image_mask)[0]
    decoder_input = labels.masked_fill(labels == -100, blip.config.text_config.pad_token_id)
    out = blip.text_decoder(input_ids=decoder_input, encoder_hidden_states=question,
                            encoder_attention_mask=attention_mask, labels=labels, reduction="mean")
    return out.loss


def _sample(rows: list[int], k: int, generator: torch.Generator) -> list[int]:
    if len(rows) <= k:
        return rows
    return [rows[j] for j in torch.randperm(len(rows), generator=generator)[:k].tolist()]


def fit(model, data: Encoded, *, epochs: float, batch_size: int, lr: float, seed: int,
        max_steps: int | None = None, weight_decay: float = 0.01, warmup_fraction: float = 0.05,
        questions_per_image: int = 3, desc: str = "train") -> dict:
    """Train `model` (only parameters with requires_grad) and return loss/time stats.

    A batch is a random set of images with up to `questions_per_image` of each one's questions,
    about `batch_size` rows in all; an epoch shows every image once. Many images per step with
    few questions each is what lets the vision encoder learn shapes, not only colours: the
    shape signal is in the image views, and a batch of all ten questions of six images has few.
    """
    seed_everything(seed)
    generator = torch.Generator().manual_seed(seed)
    rows_of: list[list[int]] = [[] for _ in range(len(data.pixel_values))]
    for row, image in enumerate(data.image_index.tolist()):
        rows_of[image].append(row)
    per_image = min(questions_per_image, max(1, round(len(data) / max(1, len(rows_of)))))
    images_per_batch = max(1, batch_size // per_image)
    steps_per_epoch = math.ceil(len(rows_of) / images_per_batch)
    total = max_steps if max_steps else max(1, int(epochs * steps_per_epoch))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    warmup = max(1, int(total * warmup_fraction))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, 0.5 * (1 + math.cos(math.pi * s / total)))
    )
    model.train()
    losses: list[float] = []
    started = time.perf_counter()
    order = torch.randperm(len(rows_of), generator=generator).tolist()
    cursor = 0
    bar = tqdm(range(total), desc=desc, unit="step")
    for _step in bar:
        if cursor + images_per_batch > len(order):
            order, cursor = torch.randperm(len(rows_of), generator=generator).tolist(), 0
        images = order[cursor:cursor + images_per_batch]
        cursor += images_per_batch
        picked = [(i, r) for i, image in enumerate(images)
                  for r in _sample(rows_of[image], questions_per_image, generator)]
        idx = torch.tensor([r for _, r in picked])
        local = torch.tensor([i for i, _ in picked])
        keep = int(data.attention_mask[idx].sum(dim=1).max())
        labels = data.labels[idx]
        labels = labels[:, : int((labels != -100).sum(dim=1).max())]
        loss = vqa_loss(model, data.pixel_values[images], local, data.input_ids[idx][:, :keep],
                        data.attention_mask[idx][:, :keep], labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if len(losses) % 20 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
    model.eval()
    return {"steps": total, "final_loss": float(np.mean(losses[-50:])), "seconds": time.perf_counter() - started}
