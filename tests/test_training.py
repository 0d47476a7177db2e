"""Real training steps: the small-model build, LoRA fine-tuning, the evaluation gate and its scripts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from app.config import REPO_ROOT
from app.learning.smallmodel import build_tokenizer
from app.model.registry import ADAPTER_INFO_FILE, MODEL_INFO_FILE
from app.model.scores import REFERENCE_FILE
from app.model.vqa import VQAModel
from app.model.window_drift import WINDOW_REFERENCE_FILE

PY = sys.executable


def test_tokenizer_round_trips_and_has_a_real_vocabulary():
    """The word-level BERT tokenizer knows every dataset word (transformers 5 `vocab=` pitfall)."""
    tok = build_tokenizer(["what color is the shape?", "is there a red circle?"])
    assert len(tok.get_vocab()) > 10
    ids = tok("is there a red circle?")["input_ids"]
    assert tok.unk_token_id not in ids
    assert tok.decode(ids, skip_special_tokens=True).replace(" ?", "?") == "is there a red circle?"


def test_build_script_trains_a_loadable_model_in_a_few_steps(tmp_path, dataset_dir, images_root):
    """scripts/build_base_model.py runs real steps and saves what from_pretrained loads."""
    out = tmp_path / "model"
    result = subprocess.run(
        [PY, "-m", "scripts.build_base_model", "--out", str(out), "--max-steps", "3", "--vision-pretrain-steps", "3",
         "--eval-limit", "20",
         "--csv", str(dataset_dir / "VQA_Dataset.csv"), "--images-root", str(images_root), "--threads", "1"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["test"]["count"] == 20 and 0 <= summary["test"]["accuracy"] <= 1
    for name in ("config.json", "model.safetensors", "processor_config.json", MODEL_INFO_FILE, REFERENCE_FILE,
                 WINDOW_REFERENCE_FILE):
        assert (out / name).is_file(), name
    vqa = VQAModel.load(out)
    assert vqa.model_version == summary["version"] and vqa.window_reference.count == 4000
    info = json.loads((out / MODEL_INFO_FILE).read_text())
    assert info["train"]["vision_pretrain"]["steps"] == 3 and info["train"]["steps"] == 3


def test_committed_small_model_meets_its_recorded_accuracy(small_model_dir, dataset_dir, images_root):
    """Evaluated here on 600 held-out test questions, the committed model scores within 3 points of the
    accuracy its metadata records (98% on 2,000), and its scores are those of a confident, in-distribution model."""
    from app.learning.data import load_rows
    from app.learning.gate import evaluate_frame

    info = json.loads((small_model_dir / MODEL_INFO_FILE).read_text())
    frame = load_rows(dataset_dir / "VQA_Dataset.csv", split="test").sample(n=600, random_state=3)
    measured = evaluate_frame(VQAModel.load(small_model_dir), frame, images_root)
    # 600 questions at ~98% carry about +-0.6 points of sampling noise (1 SD); 3 points is 5 SD.
    assert measured["accuracy"] >= info["test"]["accuracy"] - 0.03, measured
    assert measured["mean_quality_score"] > 0.9 and measured["mean_drift_score"] < 1.5, measured


def test_lora_training_saves_a_versioned_adapter_with_metadata(tiny_adapter, small_model_dir):
    """train_adapter writes adapter_config.json, weights, metadata and both input references."""
    cfg = json.loads((tiny_adapter / "adapter_config.json").read_text())
    assert cfg["r"] == 32 and "qkv" in cfg["target_modules"] and "patch_embedding" in cfg["target_modules"]
    info = json.loads((tiny_adapter / ADAPTER_INFO_FILE).read_text())
    assert info["version"] == tiny_adapter.name and info["rows"] == 64 and info["data_hash"]
    assert info["base_model"]["version"].startswith("blip-vqa-small")
    assert (tiny_adapter / REFERENCE_FILE).is_file() and (tiny_adapter / WINDOW_REFERENCE_FILE).is_file()
    vqa = VQAModel.load(small_model_dir, tiny_adapter)
    assert vqa.adapter_version == tiny_adapter.name
    # The adapter's own sample (its few training images), not the base model's 4,000.
    assert vqa.window_reference.count < 64


def test_train_mini_is_deterministic_with_a_seed(tmp_path, dataset_dir, images_root, small_model_dir):
    """Two runs of scripts/train_mini.py with the same seed produce identical LoRA weights."""
    weights = []
    for run in ("a", "b"):
        result = subprocess.run(
            [PY, "-m", "scripts.train_mini", "--csv", str(dataset_dir / "VQA_Dataset.csv"), "--limit", "40",
             "--images-root", str(images_root), "--base-model", str(small_model_dir),
             "--adapters-dir", str(tmp_path), "--name", run, "--max-steps", "2", "--seed", "7"],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        weights.append(load_file(tmp_path / run / "adapter_model.safetensors"))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_train_mini_reports_a_missing_csv_clearly(tmp_path):
    """A wrong --csv exits 2 with a message naming the file."""
    result = subprocess.run([PY, "-m", "scripts.train_mini", "--csv", str(tmp_path / "none.csv")],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "none.csv does not exist" in result.stderr


@pytest.mark.parametrize(("gate", "code"), [(0.5, 0), (1.01, 1)])
def test_evaluate_model_gate_exit_codes(tmp_path, dataset_dir, images_root, small_model_dir, gate, code):
    """evaluate_model.py exits 0 above the accuracy gate and 1 below it, writing its report either way."""
    report = tmp_path / "report.json"
    result = subprocess.run(
        [PY, "-m", "scripts.evaluate_model", "--csv", str(dataset_dir / "VQA_Dataset.csv"), "--limit", "60",
         "--images-root", str(images_root), "--base-model", str(small_model_dir), "--no-champion",
         "--min-accuracy", str(gate), "--report", str(report)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
        env={"VQA_ADAPTERS_DIR": str(tmp_path / "adapters"), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == code, result.stderr[-2000:]
    data = json.loads(report.read_text())
    assert data["rows"] == 60 and data["passed"] is (code == 0)
    assert 0 <= data["challenger"]["accuracy"] <= 1 and data["challenger"]["latency_seconds_per_question"] > 0


def test_champion_challenger_refuses_a_worse_adapter(tiny_adapter, small_model_dir, dataset_dir, images_root,
                                                    tmp_path):
    """An adapter whose LoRA weights were scrambled scores far below the deployed base model on the same rows;
    the gate refuses it and says it is worse, even with no accuracy floor."""
    import shutil

    from safetensors.torch import save_file

    from app.learning.data import load_rows
    from app.learning.gate import champion_challenger

    damaged = Path(shutil.copytree(tiny_adapter, tmp_path / "adapter-damaged"))
    weights = load_file(damaged / "adapter_model.safetensors")
    generator = torch.Generator().manual_seed(0)
    save_file({k: torch.randn(v.shape, generator=generator) * 0.5 for k, v in weights.items()},
              damaged / "adapter_model.safetensors")
    frame = load_rows(dataset_dir / "VQA_Dataset.csv", split="test", limit=120)
    report = champion_challenger(small_model_dir, damaged, frame, images_root, deployed=None, min_accuracy=0.0)
    assert report["champion"]["adapter_version"] == "none" and report["champion"]["accuracy"] > 0.9
    assert report["challenger"]["accuracy"] < report["champion"]["accuracy"] - 0.2, report
    assert report["passed"] is False
    assert "worse than the deployed none" in report["reasons"][-1]


def test_download_scripts_fail_fast_offline_with_a_hint(tmp_path):
    """Without the Hub, download_base.py exits 2 quickly and says how to use the small model."""
    result = subprocess.run([PY, "-m", "scripts.download_base", "--out", str(tmp_path / "m")], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120,
                            env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert "models/blip-vqa-small" in result.stderr and "build_base_model.py" in result.stderr
    result = subprocess.run([PY, "-m", "scripts.download_adapter", "--repo-id", "someone/lora",
                             "--adapters-dir", str(tmp_path)], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=120, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2 and "small model" in result.stderr
