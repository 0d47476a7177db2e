"""The local pipeline: six stages in Jenkinsfile order, skipped stages named as skipped, a failing gate stops it."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest

from app.config import REPO_ROOT
from app.learning.pipeline import STAGE_NAMES, Run, run_stages
from app.model.registry import current_adapter_dir


@pytest.fixture
def pipeline_settings(settings):
    """Settings for a fast run: few replayed rows, a short LoRA run, no Elasticsearch, nothing to serve.

    A half-epoch adapter may score below the 98% base model, so the champion comparison is relaxed
    here (gate_tolerance); test_training.py checks that a worse adapter is refused by default.
    """
    return replace(settings, retrain_replay_rows=48, retrain_epochs=0.5, gate_min_accuracy=0.0, gate_tolerance=1.0,
                   service_url="", data_dir=str(REPO_ROOT / "data"))


def test_full_local_run_trains_gates_and_promotes(pipeline_settings, tmp_path):
    """All six stages run in order; images, push and Kubernetes are skipped with reasons; CURRENT moves."""
    run = Run.open(replace(pipeline_settings, data_dir=str(tmp_path)), "t1", reason="test", rule="high_drift")
    (tmp_path / "VQA_Dataset.csv").symlink_to(REPO_ROOT / "data" / "VQA_Dataset.csv")
    lines: list[str] = []
    results = run_stages(run, echo=lines.append)
    assert [r["stage"] for r in results] == list(STAGE_NAMES)
    status = {r["stage"]: r["status"] for r in results}
    assert status == {"setup": "passed", "train": "passed", "build-images": "skipped", "evaluate": "passed",
                      "push": "skipped", "deploy": "passed"}, lines
    detail = {r["stage"]: r["detail"] for r in results}
    assert "VQA_PIPELINE_BUILD_IMAGES" in detail["build-images"] and "VQA_IMAGE_REGISTRY" in detail["push"]
    assert "Kubernetes deploy skipped" in detail["deploy"] and "VQA_SERVICE_URL is empty" in detail["deploy"]
    adapter = current_adapter_dir(run.settings)
    assert adapter is not None and adapter.name == "adapter-t1" and (adapter / "adapter_config.json").is_file()
    summary = json.loads((tmp_path / "pipeline" / "t1" / "summary.json").read_text())
    assert summary == results and all(r["seconds"] >= 0 for r in summary)
    report = json.loads((tmp_path / "pipeline" / "t1" / "evaluation.json").read_text())
    assert report["passed"] and report["champion"]["adapter_version"] == "none"


def test_a_failing_gate_stops_before_deploy(pipeline_settings, tmp_path):
    """Below the accuracy gate, evaluate fails, deploy never runs and nothing is promoted."""
    s = replace(pipeline_settings, data_dir=str(tmp_path), gate_min_accuracy=1.01)
    (tmp_path / "VQA_Dataset.csv").symlink_to(REPO_ROOT / "data" / "VQA_Dataset.csv")
    results = run_stages(Run.open(s, "t2"), echo=lambda _: None)
    assert [r["stage"] for r in results][-1] == "evaluate" and results[-1]["status"] == "failed"
    assert "below the gate" in results[-1]["detail"]
    assert current_adapter_dir(s) is None


def test_cli_runs_one_stage_and_exits_nonzero_on_failure(pipeline_settings, tmp_path):
    """`python -m scripts.pipeline --stage evaluate` without a trained adapter fails clearly with exit 1."""
    env = {"VQA_DATA_DIR": str(tmp_path), "VQA_ADAPTERS_DIR": str(tmp_path / "adapters"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "scripts.pipeline", "--stage", "evaluate", "--run-id", "t3"],
                            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "[FAILED ] CI: model evaluation" in result.stdout and "no adapter from the training stage" in result.stdout


def test_a_worse_adapter_is_refused_by_the_champion_and_current_stays(pipeline_settings, tiny_adapter, tmp_path):
    """With no accuracy floor and no tolerance, an adapter trained on wrong labels scores below the serving
    adapter; evaluate fails naming the comparison, deploy never runs and CURRENT still names the champion."""
    import shutil

    import pandas as pd

    from app.model.registry import promote_adapter

    rows = pd.read_csv(REPO_ROOT / "data" / "VQA_Dataset.csv", dtype=str, keep_default_na=False)
    train = rows["split"] == "train"
    rows.loc[train, "answer"] = rows.loc[train, "answer"].sample(frac=1.0, random_state=0).to_numpy()
    rows.to_csv(tmp_path / "VQA_Dataset.csv", index=False)  # the replayed training rows now teach nonsense
    champion = shutil.copytree(tiny_adapter, tmp_path / "adapters" / "adapter-champion")
    s = replace(pipeline_settings, data_dir=str(tmp_path), adapters_dir=str(tmp_path / "adapters"),
                gate_min_accuracy=0.0, gate_tolerance=0.0, retrain_replay_rows=400, retrain_epochs=4.0)
    promote_adapter(tmp_path / "adapters", champion)
    results = run_stages(Run.open(s, "t4"), echo=lambda _: None)
    assert [r["stage"] for r in results][-1] == "evaluate" and results[-1]["status"] == "failed", results
    assert "worse than the deployed adapter-tiny" in results[-1]["detail"]
    assert current_adapter_dir(s) == champion


def test_an_unexpected_error_leaves_a_failed_row_and_the_summary(pipeline_settings, tmp_path):
    """A dataset error inside a stage (not a StageFailed) is still recorded as failed, with summary.json."""
    (tmp_path / "VQA_Dataset.csv").write_text("image_path,question\ntrain/0.png,what?\n")
    s = replace(pipeline_settings, data_dir=str(tmp_path))
    results = run_stages(Run.open(s, "t5"), echo=lambda _: None)
    assert [(r["stage"], r["status"]) for r in results] == [("setup", "passed"), ("train", "failed")]
    assert "unexpected DatasetError" in results[-1]["detail"] and "lacks columns" in results[-1]["detail"]
    assert json.loads((tmp_path / "pipeline" / "t5" / "summary.json").read_text()) == results


def test_deploy_fails_when_the_service_cannot_confirm_and_current_goes_back(pipeline_settings, tmp_path):
    """With a service URL where nothing answers, deploy fails ("cannot confirm") and CURRENT is not moved."""
    s = replace(pipeline_settings, data_dir=str(tmp_path), service_url="http://127.0.0.1:9")
    (tmp_path / "VQA_Dataset.csv").symlink_to(REPO_ROOT / "data" / "VQA_Dataset.csv")
    from app.learning import pipeline

    results = run_stages(Run.open(s, "t6"), echo=lambda _: None)
    assert results[-1]["stage"] == "deploy" and results[-1]["status"] == "failed", results
    assert "cannot confirm the deploy" in results[-1]["detail"]
    assert current_adapter_dir(s) is None
    assert pipeline.hot_reload(replace(s, service_url=""), "x").startswith("no local service to confirm")
