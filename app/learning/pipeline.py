"""The six-stage retraining pipeline, one definition shared by the Jenkinsfile and local runs.

Stages run in order; one whose tool is not configured here (registry, Kubernetes, Docker)
is reported as skipped with the reason, never as passed. Locally, deploy means promote the
adapter and hot-reload the running service.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from app.config import REPO_ROOT, Settings
from app.learning.data import CSV_NAME, load_rows

log = logging.getLogger(__name__)

STAGES: tuple[tuple[str, str], ...] = (
    ("setup", "Checkout"),
    ("train", "CI: LoRA training"),
    ("build-images", "Build images"),
    ("evaluate", "CI: model evaluation"),
    ("push", "Push to registry"),
    ("deploy", "Deploy to Kubernetes"),
)
STAGE_NAMES = tuple(name for name, _ in STAGES)
PASSED, SKIPPED, FAILED = "passed", "skipped", "failed"


class StageSkipped(Exception):
    """The stage's tool is not configured here; the message says what is missing."""


class StageFailed(Exception):
    """The stage ran and failed; the message says why."""


@dataclass
class Run:
    settings: Settings
    run_dir: Path
    reason: str = ""
    rule: str = ""
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        return self.settings.build_number or self.run_dir.name

    def save(self) -> None:
        (self.run_dir / "state.json").write_text(json.dumps(self.state, indent=2))

    @classmethod
    def open(cls, settings: Settings, run_id: str | None, **kw: Any) -> Run:
        """The run folder `run_id` (default: BUILD_NUMBER or local-<time>), with its saved state if any."""
        if settings.torch_threads > 0:
            import torch

            torch.set_num_threads(settings.torch_threads)
        root = Path(settings.data_dir) / "pipeline"
        run_id = run_id or settings.build_number or datetime.now(UTC).strftime("local-%Y%m%d-%H%M%S")
        run_dir = root / run_id
        run_dir.mkdir(parents=True, exist_ok=True)
        state_file = run_dir / "state.json"
        state = json.loads(state_file.read_text()) if state_file.is_file() else {}
        return cls(settings, run_dir, state=state, **kw)


def stage_setup(run: Run) -> str:
    s = run.settings
    csv = Path(s.data_dir) / CSV_NAME
    if not csv.is_file():
        from app.learning.data import export_easy_vqa

        export_easy_vqa(Path(s.data_dir), Path(s.images_root))
    if not (Path(s.model_dir) / "config.json").is_file():
        raise StageFailed(f"no base model at {s.model_dir}; run `python -m scripts.build_base_model`")
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True)
    run.state["commit"] = rev.stdout.strip() if rev.returncode == 0 else "unknown"
    run.state.update({"reason": run.reason, "rule": run.rule})
    return f"commit {run.state['commit']}, data {csv}, base model {s.model_dir}"


def stage_train(run: Run) -> str:
    import pandas as pd

    from app.learning.feedback_data import FEEDBACK_COLUMNS, build_datasets, fetch_feedback
    from app.learning.lora import LoraParams, train_adapter

    s = run.settings
    feedback = pd.DataFrame(columns=list(FEEDBACK_COLUMNS))
    if s.es_url:
        from elasticsearch import ApiError, TransportError

        from app.events.elastic import make_client

        try:
            feedback = fetch_feedback(make_client(s), s)
        except (ApiError, TransportError) as exc:
            raise StageFailed(f"cannot read feedback from Elasticsearch at {s.es_url}: {exc}") from exc
    note = ""
    if len(feedback) < s.retrain_min_feedback:
        note = f" (only {len(feedback)} labelled rows, fewer than VQA_RETRAIN_MIN_FEEDBACK={s.retrain_min_feedback})"
    train_csv, eval_csv, summary = build_datasets(
        feedback, Path(s.data_dir) / CSV_NAME, run.run_dir, replay_rows=s.retrain_replay_rows)
    adapter = train_adapter(Path(s.model_dir), load_rows(train_csv), Path(s.images_root), Path(s.adapters_dir),
                            LoraParams(epochs=s.retrain_epochs), name=f"adapter-{run.run_dir.name}")
    run.state.update({"adapter": str(adapter), "train_csv": str(train_csv), "eval_csv": str(eval_csv),
                      "data": summary})
    return f"adapter {adapter.name} from {summary['train_rows']} rows{note}"


def _docker_ready() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def image_names(run: Run) -> dict[str, str]:
    """Image tags: the app by build, the weights by `<model version>--<adapter version>` (Dockerfile.model)."""
    from app.model.registry import MODEL_INFO_FILE, read_info

    model = read_info(Path(run.settings.model_dir), MODEL_INFO_FILE).get("version", Path(run.settings.model_dir).name)
    adapter = Path(run.state.get("adapter", "none")).name
    return {"app": f"vqa-app:{run.tag}", "model": f"vqa-model:{model}--{adapter}"}


def stage_build_images(run: Run) -> str:
    if not run.settings.pipeline_build_images:
        raise StageSkipped("VQA_PIPELINE_BUILD_IMAGES is false (set it to true to build images in local runs)")
    if not _docker_ready():
        raise StageSkipped("no Docker engine answers `docker info`")
    names = image_names(run)
    adapter = Path(run.state["adapter"]).resolve()
    if REPO_ROOT not in adapter.parents:
        raise StageFailed(f"{adapter} is outside the build context {REPO_ROOT}")
    # docker/build_images.sh is the one definition of how the images are built (base image,
    # PyTorch source, tags); the model image's tag is derived there from the same versions.
    env = {**os.environ, "APP_TAG": names["app"], "ADAPTER_SRC": str(adapter.relative_to(REPO_ROOT)),
           "MODEL_SRC": str(Path(run.settings.model_dir).resolve().relative_to(REPO_ROOT))}
    built = subprocess.run(["bash", "docker/build_images.sh", "all"], cwd=REPO_ROOT, env=env,
                           capture_output=True, text=True)
    if built.returncode != 0:
        raise StageFailed(f"docker/build_images.sh failed: {built.stderr.strip()[-500:]}")
    tags = built.stdout.split()
    if len(tags) == 2:
        names = {"app": tags[0], "model": tags[1]}
    run.state["images"] = names
    return ", ".join(names.values())


def stage_evaluate(run: Run) -> str:
    from app.learning.gate import champion_challenger
    from app.learning.lora import record_metrics
    from app.model.registry import current_adapter_dir

    s = run.settings
    if "adapter" not in run.state:
        raise StageFailed("no adapter from the training stage in this run")
    adapter = Path(run.state["adapter"])
    frame = load_rows(Path(run.state["eval_csv"]))
    report = champion_challenger(Path(s.model_dir), adapter, frame, Path(s.images_root),
                                 deployed=current_adapter_dir(s), min_accuracy=s.gate_min_accuracy,
                                 tolerance=s.gate_tolerance)
    (run.run_dir / "evaluation.json").write_text(json.dumps(report, indent=2))
    record_metrics(adapter, "evaluation", {"accuracy": report["challenger"]["accuracy"], "passed": report["passed"]})
    run.state["evaluation"] = {"passed": report["passed"], "accuracy": report["challenger"]["accuracy"],
                               "champion_accuracy": (report["champion"] or {}).get("accuracy")}
    if not report["passed"]:
        raise StageFailed("; ".join(report["reasons"]))
    return "; ".join(report["reasons"])


def stage_push(run: Run) -> str:
    registry = run.settings.image_registry
    if not registry:
        raise StageSkipped("VQA_IMAGE_REGISTRY is not set")
    if "images" not in run.state:
        raise StageSkipped("no images were built in this run")
    pushed = []
    for local in run.state["images"].values():
        remote = f"{registry.rstrip('/')}/{local}"
        for cmd in (["docker", "tag", local, remote], ["docker", "push", remote]):
            if subprocess.run(cmd).returncode != 0:
                raise StageFailed(f"`{' '.join(cmd)}` failed")
        pushed.append(remote)
    return ", ".join(pushed)


def hot_reload(settings: Settings, adapter_name: str, timeout: float = 60.0) -> str:
    """Ask the running service to load the promoted adapter and confirm it through /readyz.

    Fails (StageFailed) unless the service reports `adapter_name`: a deploy nobody can confirm is not
    a success. An empty VQA_SERVICE_URL says there is no local service to confirm (promotion only).
    """
    url = settings.service_url.rstrip("/")
    if not url:
        return "no local service to confirm (VQA_SERVICE_URL is empty); workers load CURRENT when they start"
    if settings.admin_token:
        try:
            response = requests.post(f"{url}/admin/reload", timeout=timeout,
                                     headers={"Authorization": f"Bearer {settings.admin_token}"})
        except requests.RequestException as exc:
            raise StageFailed(f"cannot confirm the deploy: the service at {url} is not reachable "
                              f"({exc.__class__.__name__})") from exc
        if response.status_code != 200:
            raise StageFailed(f"reload refused by {url}: {response.status_code} {response.text[:200]}")
    deadline = time.monotonic() + timeout
    seen = "nothing"
    while time.monotonic() < deadline:
        try:
            ready = requests.get(f"{url}/readyz", timeout=5).json()
            seen = ready.get("adapter_version", "no adapter_version")
        except (requests.RequestException, ValueError) as exc:
            seen = f"no answer ({exc.__class__.__name__})"
        if seen == adapter_name:
            return f"service at {url} now serves {adapter_name}"
        time.sleep(0.5)
    raise StageFailed(f"cannot confirm the deploy: the service at {url} did not report {adapter_name} within "
                      f"{timeout:.0f}s (last seen: {seen})")


def stage_deploy(run: Run) -> str:
    from app.model.registry import CURRENT_POINTER, current_adapter_dir, promote_adapter

    s = run.settings
    evaluation = run.state.get("evaluation")
    if not evaluation or not evaluation.get("passed"):
        raise StageFailed("the evaluation gate did not pass in this run; nothing to deploy")
    adapter = Path(run.state["adapter"])
    previous = current_adapter_dir(s)
    promote_adapter(Path(s.adapters_dir), adapter)
    try:
        detail = f"promoted {adapter.name}; " + hot_reload(s, adapter.name)
    except StageFailed:
        if previous is not None:  # unconfirmed: CURRENT goes back to what was serving
            promote_adapter(Path(s.adapters_dir), previous)
        else:
            (Path(s.adapters_dir) / CURRENT_POINTER).unlink(missing_ok=True)
        raise
    if s.kube_deploy:
        model_tag = image_names(run)["model"].split(":", 1)[1]
        venv_playbook = Path(sys.executable).parent / "ansible-playbook"
        playbook = str(venv_playbook) if venv_playbook.exists() else "ansible-playbook"
        cmd = [playbook, "-i", "playbooks/inventory", "playbooks/deploy.yml",
               "-e", f"vqa_image_tag={run.tag}", "-e", f"vqa_model_image_tag={model_tag}"]
        if subprocess.run(cmd, cwd=REPO_ROOT).returncode != 0:
            raise StageFailed(f"`{' '.join(cmd)}` failed")
        detail += f"; applied playbooks/deploy.yml with tag {run.tag}"
    else:
        detail += "; Kubernetes deploy skipped (VQA_KUBE_DEPLOY is false)"
    return detail


STAGE_FUNCTIONS: dict[str, Callable[[Run], str]] = {
    "setup": stage_setup, "train": stage_train, "build-images": stage_build_images,
    "evaluate": stage_evaluate, "push": stage_push, "deploy": stage_deploy,
}


def run_stages(run: Run, names: list[str] | None = None, echo: Callable[[str], None] = print) -> list[dict]:
    """Run the named stages (default all) in pipeline order; stop at the first failure."""
    selected = [n for n in STAGE_NAMES if names is None or n in names]
    results = run.state.setdefault("results", [])
    for name in selected:
        title = dict(STAGES)[name]
        started = time.perf_counter()
        try:
            detail, status = STAGE_FUNCTIONS[name](run), PASSED
        except StageSkipped as exc:
            detail, status = str(exc), SKIPPED
        except StageFailed as exc:
            detail, status = str(exc), FAILED
        except Exception as exc:  # a data, model or torch error must still leave a failed row and summary.json
            log.exception("stage %s failed unexpectedly", name)
            detail, status = f"unexpected {exc.__class__.__name__}: {exc}", FAILED
        seconds = round(time.perf_counter() - started, 2)
        results.append({"stage": name, "title": title, "status": status, "seconds": seconds, "detail": detail})
        echo(f"[{status.upper():7}] {title} ({seconds:.1f}s): {detail}")
        run.save()
        if status == FAILED:
            break
    (run.run_dir / "summary.json").write_text(json.dumps(results, indent=2))
    return results
