"""`git push` without Jenkins: the local remote's hook runs the six stages on the pushed commit (infra/push_remote)."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import requests

from app.config import REPO_ROOT
from app.learning.data import CSV_NAME
from app.learning.pipeline import STAGE_NAMES
from infra.push_remote import LOG_NAME, SUMMARY_NAME, hook_script, init_remote

ADMIN_TOKEN = "push-test-token"


def git(*args: str, cwd: Path = REPO_ROOT) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout.strip()


def commit_of_the_working_tree() -> str:
    """A commit of the tracked files as they are now (`git stash create`, which changes nothing), or HEAD."""
    return git("stash", "create") or git("rev-parse", "HEAD")


def test_init_writes_an_executable_hook_that_runs_this_module(tmp_path: Path) -> None:
    """The bare repository gets a post-receive hook calling `infra.push_remote hook` for the deploy branch."""
    remote = init_remote(tmp_path / "remote.git", branch="main", python="/opt/py/bin/python", remote_name=None)
    hook = remote / "hooks" / "post-receive"
    assert git("rev-parse", "--is-bare-repository", cwd=remote) == "true"
    assert os.access(hook, os.X_OK)
    assert hook.read_text() == hook_script(remote, "/opt/py/bin/python", "main")
    assert "-m infra.push_remote hook" in hook.read_text() and "--branch main" in hook.read_text()


@pytest.mark.slow
def test_a_push_runs_the_six_stages_on_the_pushed_commit_with_one_log_and_one_summary(settings, gunicorn, tmp_path):
    """Pushing main runs setup..deploy in a clean worktree of the commit; the service ends up on the new adapter."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / CSV_NAME).symlink_to(Path(settings.data_dir) / CSV_NAME)
    # A fast run (as tests/test_pipeline.py): few replayed rows, half an epoch, gate relaxed, no Elasticsearch.
    run_settings = replace(settings, data_dir=str(data_dir), retrain_replay_rows=48, retrain_epochs=0.5,
                           gate_min_accuracy=0.0, gate_tolerance=1.0, admin_token=ADMIN_TOKEN)
    service = gunicorn(run_settings.to_env())
    run_settings = replace(run_settings, service_url=service)
    remote = init_remote(tmp_path / "remote.git", remote_name=None)
    commit = commit_of_the_working_tree()

    # The pusher's environment (these Settings) reaches the hook, as it does for `git push pipeline main`.
    push = subprocess.run(["git", "push", str(remote), f"{commit}:refs/heads/main"], cwd=REPO_ROOT,
                          env={**os.environ, **run_settings.to_env()}, capture_output=True, text=True, timeout=1800)
    assert push.returncode == 0, push.stderr[-4000:]
    [run_dir] = (data_dir / "pipeline").iterdir()
    summary = json.loads((run_dir / SUMMARY_NAME).read_text())
    log = (run_dir / LOG_NAME).read_text()
    assert [r["stage"] for r in summary] == list(STAGE_NAMES), log[-4000:]
    assert {r["stage"]: r["status"] for r in summary} == {
        "setup": "passed", "train": "passed", "build-images": "skipped", "evaluate": "passed", "push": "skipped",
        "deploy": "passed"}, log[-4000:]
    state = json.loads((run_dir / "state.json").read_text())
    assert commit.startswith(state["commit"]), "setup must record the pushed commit (its worktree's HEAD)"
    assert run_dir.name.endswith(commit[:8]) and f"commit {commit}" in log
    assert "remote: " in push.stderr and "CI: LoRA training" in push.stderr, "the push shows the stages"
    assert git("--git-dir", str(remote), "worktree", "list").count("\n") == 0, "the run's worktree is removed"
    ready = requests.get(f"{service}/readyz", timeout=10).json()
    assert ready["adapter_version"] == Path(state["adapter"]).name


@pytest.mark.slow
def test_a_push_of_another_branch_runs_nothing(settings, tmp_path):
    """Only the deploy branch runs the pipeline (as the Jenkinsfile gates push and deploy on main)."""
    remote = init_remote(tmp_path / "remote.git", remote_name=None)
    env = {**os.environ, **replace(settings, data_dir=str(tmp_path / "data")).to_env()}
    push = subprocess.run(["git", "push", str(remote), f"{git('rev-parse', 'HEAD')}:refs/heads/feature"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert push.returncode == 0, push.stderr
    assert "refs/heads/feature: not main, no pipeline run" in push.stderr
    assert not (tmp_path / "data" / "pipeline").exists()
