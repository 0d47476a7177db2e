"""The inference wrapper: a BLIP VQA base model plus an optional PEFT LoRA adapter.

`VQAModel.answer(images, questions)` runs preprocess -> forward -> postprocess and returns,
per question, the answer, its quality_score (softmax confidence), the image's drift_score and its
signature for the window drift test.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from app.model.registry import ADAPTER_INFO_FILE, MODEL_INFO_FILE, NO_ADAPTER, read_info
from app.model.scores import DriftReference, quality_score
from app.model.window_drift import WindowReference, pixel_stats

log = logging.getLogger(__name__)


def unwrap_base(model):
    """The BlipForQuestionAnswering inside a PEFT model (LoRA layers stay inside it), or `model` itself."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _restore_cross_attention_mask(_module, args, kwargs):
    # BlipTextLayer hands the cross-attention mask to its cross-attention as `attention_mask`, but
    # BlipTextSelfAttention reads `encoder_attention_mask` for cross attention (transformers 5.x), so
    # the mask is dropped and padded question tokens are attended to. Move it where it is read.
    if kwargs.get("encoder_attention_mask") is None and kwargs.get("attention_mask") is not None:
        kwargs = {**kwargs, "encoder_attention_mask": kwargs["attention_mask"]}
    return args, kwargs


def mask_cross_attention(blip) -> int:
    """Make BLIP's text cross-attention honour its mask; returns how many attention modules it fixed."""
    from transformers.models.blip.modeling_blip_text import BlipTextSelfAttention

    fixed = 0
    for name, module in blip.named_modules():
        if isinstance(module, BlipTextSelfAttention) and name.endswith("crossattention.self"):
            module.register_forward_pre_hook(_restore_cross_attention_mask, with_kwargs=True)
            fixed += 1
    return fixed


class ModelLoadError(ValueError):
    """A model or adapter directory cannot be loaded; the message says which and why."""


@dataclass(frozen=True)
class Prediction:
    answer: str
    quality_score: float
    drift_score: float | None
    signature: list[float] | None = None  # the input's window-drift signature (app/model/window_drift.py)


@dataclass(frozen=True)
class VisionSignal:
    """What the vision tower saw of a batch, one row per image: the drift signal and the pixel statistics."""

    embedding: torch.Tensor  # mean patch embedding + pooled embedding
    pixel_stats: np.ndarray  # window_drift.PIXEL_STATS


class VQAModel:
    """A loaded base model (+ adapter) ready to answer; thread-safe through one lock."""

    def __init__(self, model, processor, *, reference: DriftReference | None, model_version: str,
                 adapter_version: str, max_answer_tokens: int = 8, window_reference: WindowReference | None = None):
        self.model = model.eval()
        self.processor = processor
        self.reference = reference
        self.window_reference = window_reference
        self.model_version = model_version
        self.adapter_version = adapter_version
        self.max_answer_tokens = max_answer_tokens
        self._lock = threading.Lock()
        self._patches: torch.Tensor | None = None
        self._pixel_stats: np.ndarray | None = None
        self._signal: VisionSignal | None = None
        self.blip.vision_model.embeddings.register_forward_hook(self._capture_patches, with_kwargs=True)
        self.blip.vision_model.register_forward_hook(self._capture_signal)
        mask_cross_attention(self.blip)

    # --- loading ----------------------------------------------------------------------
    @classmethod
    def load(cls, base_dir: str | Path, adapter_dir: str | Path | None = None, *,
             max_answer_tokens: int = 8) -> VQAModel:
        """Load `base_dir` with `from_pretrained` and, if given, the LoRA adapter on top."""
        from transformers import BlipForQuestionAnswering, BlipProcessor

        base_dir = Path(base_dir)
        if not (base_dir / "config.json").is_file():
            raise ModelLoadError(
                f"no model at {base_dir} (config.json missing): build the small model with "
                "`python -m scripts.build_base_model` or fetch the large one with `python -m scripts.download_base`"
            )
        processor = BlipProcessor.from_pretrained(base_dir)
        model = BlipForQuestionAnswering.from_pretrained(base_dir)
        reference = DriftReference.load(base_dir)
        window_reference = WindowReference.load(base_dir)
        model_version = read_info(base_dir, MODEL_INFO_FILE).get("version", base_dir.name)
        adapter_version = NO_ADAPTER
        if adapter_dir:
            from peft import PeftModel

            adapter_dir = Path(adapter_dir)
            if not (adapter_dir / "adapter_config.json").is_file():
                raise ModelLoadError(f"no LoRA adapter at {adapter_dir} (adapter_config.json missing)")
            model = PeftModel.from_pretrained(model, adapter_dir)
            reference = DriftReference.load(adapter_dir) or reference
            # No fallback to the base's sample: the adapter changes the vision signal it was taken from.
            window_reference = WindowReference.load(adapter_dir)
            adapter_version = read_info(adapter_dir, ADAPTER_INFO_FILE).get("version", adapter_dir.name)
        log.info("loaded model %s with adapter %s", model_version, adapter_version)
        if window_reference is None:
            log.warning("no window drift reference beside the model or adapter: inference events carry no signature")
        return cls(model, processor, reference=reference, model_version=model_version,
                   adapter_version=adapter_version, max_answer_tokens=max_answer_tokens,
                   window_reference=window_reference)

    @property
    def blip(self):
        """The underlying BlipForQuestionAnswering (LoRA layers, if any, are inside it)."""
        return unwrap_base(self.model)

    def _capture_patches(self, _module, args, kwargs, output) -> None:
        self._patches = output[:, 1:].mean(dim=1).detach()
        pixels = args[0] if args else kwargs["pixel_values"]
        image = self.processor.image_processor
        self._pixel_stats = pixel_stats(pixels.detach().float().numpy(), image.image_mean, image.image_std)

    def _capture_signal(self, _module, _inputs, output) -> None:
        # The drift signal: what the pixels look like to the model (mean patch embedding, sensitive to
        # colour and texture shifts) next to what it makes of them (the pooled [CLS] embedding).
        embedding = torch.cat([self._patches, output.pooler_output.detach()], dim=-1)
        self._signal = VisionSignal(embedding=embedding, pixel_stats=self._pixel_stats)

    # --- inference --------------------------------------------------------------------
    def preprocess(self, images: list[Image.Image], questions: list[str]) -> dict[str, torch.Tensor]:
        rgb = [im if im.mode == "RGB" else im.convert("RGB") for im in images]
        return self.processor(images=rgb, text=questions, return_tensors="pt", padding=True)

    def forward(self, batch: dict[str, torch.Tensor]):
        """Greedy answers for a batch, each as if it ran alone.

        BlipForQuestionAnswering.generate gives the answer decoder a mask of ones over the question,
        so in a batch it attends to the padding of shorter questions and answers differently than
        one at a time; this runs the same three steps with the question's padding masked.
        """
        blip = self.blip
        with torch.inference_mode():
            image_embeds = blip.vision_model(pixel_values=batch["pixel_values"])[0]
            image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
            question = blip.text_encoder(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                encoder_hidden_states=image_embeds, encoder_attention_mask=image_mask, return_dict=False,
            )[0]
            start = torch.full((question.size(0), 1), blip.decoder_start_token_id, device=question.device)
            out = blip.text_decoder.generate(
                input_ids=start, eos_token_id=blip.config.text_config.sep_token_id,
                pad_token_id=blip.config.text_config.pad_token_id, encoder_hidden_states=question,
                encoder_attention_mask=batch["attention_mask"], max_new_tokens=self.max_answer_tokens,
                do_sample=False, num_beams=1, output_logits=True, return_dict_in_generate=True,
            )
        return out, self._signal

    def postprocess(self, out, signal: VisionSignal | None) -> list[Prediction]:
        tokenizer = self.processor.tokenizer
        sequences = out.sequences[:, 1:]  # drop the decoder start token
        probs = torch.stack([torch.softmax(step.float(), dim=-1) for step in out.logits], dim=1)
        special = set(tokenizer.all_special_ids)
        eos = self.blip.config.text_config.sep_token_id
        embedding = signal.embedding.float().numpy() if signal is not None else None
        drift = self.reference.score(embedding) if (self.reference and embedding is not None) else None
        signatures = (self.window_reference.signatures(embedding, signal.pixel_stats)
                      if (self.window_reference and embedding is not None) else None)
        results = []
        for row in range(sequences.size(0)):
            token_probs, eos_prob = [], None
            for step, token in enumerate(sequences[row].tolist()):
                p = float(probs[row, step, token])
                if token == eos:
                    eos_prob = p
                    break
                if token not in special:
                    token_probs.append(p)
            answer = tokenizer.decode(sequences[row], skip_special_tokens=True).strip()
            quality = quality_score(token_probs, eos_prob)
            results.append(Prediction(
                answer=answer, quality_score=round(quality, 6),
                drift_score=None if drift is None else round(float(drift[row]), 6),
                signature=None if signatures is None else signatures[row].tolist(),
            ))
        return results

    def answer(self, images: list[Image.Image], questions: list[str]) -> list[Prediction]:
        """Answer each (image, question) pair; serialised so hooks and threads never mix."""
        if len(images) != len(questions):
            raise ValueError("images and questions must have the same length")
        batch = self.preprocess(images, questions)
        with self._lock:
            out, pooled = self.forward(batch)
            return self.postprocess(out, pooled)

    def vision_signals(self, pixel_values: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(drift signal, pixel statistics) of preprocessed images, one row each."""
        with torch.inference_mode(), self._lock:
            self.blip.vision_model(pixel_values=pixel_values)
            return self._signal.embedding.float().numpy(), self._signal.pixel_stats

    def embed(self, pixel_values: torch.Tensor) -> np.ndarray:
        """The drift signal (mean patch embedding + pooled embedding) of preprocessed images."""
        return self.vision_signals(pixel_values)[0]
