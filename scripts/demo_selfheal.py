"""Watch the service heal itself: clean traffic, then drift, the watchdog fires, retraining, redeploy.

Starts what it needs (a local Elasticsearch unless ES_URL is set, the service on a free port,
the watchdog with the local trigger), tells the story step by step, and draws quality_score
and drift_score over time with the trigger and the redeploy marked (docs/self-healing.png).
  python scripts/demo_selfheal.py
The end-to-end test runs the same `run_story` with smaller numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests  # noqa: E402

from app.config import REPO_ROOT, Settings  # noqa: E402
from app.data import CSV_NAME, load_rows  # noqa: E402
from app.traffic import TrafficResult, send_traffic  # noqa: E402

log = logging.getLogger("demo")


@dataclass
class StoryConfig:
    clean_requests: int = 120
    drift_requests: int = 400
    after_requests: int = 200
    feedback_share: float = 1.0
    drift: str = "invert"
    min_samples: int = 60
    retrain_epochs: float = 4.0
    replay_rows: int = 600
    seed: int = 0


@dataclass
class StoryResult:
    phases: dict[str, dict] = field(default_factory=dict)
    decisions: list[dict] = field(default_factory=list)
    pipeline_exit: int | None = None
    pipeline_summary: list[dict] = field(default_factory=list)
    timeline: list[dict] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env_for(settings: Settings) -> dict[str, str]:
    return {f.metadata["env"]: str(getattr(settings, f.name)) for f in dataclasses.fields(settings)}


def _start_service(env: dict[str, str], port: int, log_path: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}", "app:create_app()"],
        cwd=REPO_ROOT, env={**os.environ, **env}, stdout=log_path.open("w"), stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited: {log_path.read_text()[-2000:]}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise RuntimeError("the service did not become ready")


def _record(result: StoryResult, phase: str, traffic: TrafficResult) -> dict:
    summary = traffic.summary()
    result.phases[phase] = summary
    return summary


def run_story(es_url: str, workdir: Path, config: StoryConfig, echo=print) -> StoryResult:
    """The self-healing story against a real Elasticsearch, service and watchdog; returns what happened."""
    from elasticsearch import Elasticsearch

    from watchdog.loop import Watchdog
    from watchdog.sources import ElasticsearchSource
    from watchdog.state import StateStore
    from watchdog.triggers import LocalPipelineTrigger

    started = time.monotonic()
    port = free_port()
    prefix = f"vqa-demo-{secrets.token_hex(3)}"
    settings = Settings.from_env(
        es_url=es_url, es_index_prefix=prefix, adapters_dir=str(workdir / "adapters"),
        spool_dir=str(workdir / "spool"), watchdog_state_file=str(workdir / "watchdog" / "state.json"),
        data_dir=str(workdir / "data"), service_url=f"http://127.0.0.1:{port}",
        admin_token=secrets.token_hex(12), reload_poll_seconds=1.0, ship_flush_seconds=0.2,
        watchdog_min_samples=config.min_samples, watchdog_min_feedback=min(20, config.min_samples),
        retrain_epochs=config.retrain_epochs, retrain_replay_rows=config.replay_rows,
        retrain_min_feedback=10, watchdog_window_minutes=60.0,
    )
    base = Settings.from_env()
    data_dir = workdir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    # The pipeline reads the dataset CSV from its data dir and writes its runs there.
    if not (data_dir / CSV_NAME).exists():
        (data_dir / CSV_NAME).symlink_to(Path(base.data_dir) / CSV_NAME)
    env = _env_for(settings)
    rows = load_rows(Path(base.data_dir) / CSV_NAME)
    train_rows, test_rows = rows[rows["split"] == "train"], rows[rows["split"] == "test"]
    images = Path(settings.images_root)
    url = settings.service_url
    service = _start_service(env, port, workdir / "service.log")
    es = Elasticsearch(es_url)
    os.environ.update(env)  # the watchdog's local trigger starts the pipeline with this environment
    try:
        watchdog = Watchdog(settings, ElasticsearchSource(es, settings), LocalPipelineTrigger(settings),
                            StateStore(settings.watchdog_state_file))

        def poll(label: str) -> dict:
            time.sleep(1.0)  # let the shipper flush
            es.indices.refresh(index=f"{prefix}-*")
            decision = watchdog.poll()
            entry = {"phase": label, "decision": decision.decision, "rule": decision.rule, "reason": decision.reason,
                     "at": time.time()}
            result.decisions.append(entry)
            echo(f"  watchdog: {decision.decision} (rule: {decision.rule}) {decision.reason}")
            return entry

        def traffic(phase: str, frame, count: int, drift: str | None, feedback: float) -> dict:
            t0 = time.time()
            res = send_traffic(url, frame, images, count=count, drift=drift, feedback_share=feedback,
                               seed=config.seed + len(result.phases), progress=False)
            for q, d, v in zip(res.quality, res.drift, res.versions, strict=False):
                result.timeline.append({"phase": phase, "quality_score": q, "drift_score": d, "adapter": v})
            summary = _record(result, phase, res)
            echo(f"  {phase}: accuracy {summary['accuracy']:.1%}, mean quality_score "
                 f"{summary['mean_quality_score']}, mean drift_score {summary['mean_drift_score']} "
                 f"({summary['answered']} answered, {summary['errors']} errors, {time.time() - t0:.0f}s)")
            return summary

        result = StoryResult()
        echo("1. Clean traffic: the model is healthy.")
        traffic("clean", test_rows, config.clean_requests, None, 0.0)
        poll("clean")
        echo(f"2. The inputs drift ({config.drift}); users send feedback on {config.feedback_share:.0%} of answers.")
        traffic("drifted", train_rows, config.drift_requests, config.drift, config.feedback_share)
        result.marks["trigger"] = len(result.timeline)
        decision = poll("drifted")
        if decision["decision"] != "trigger":
            echo("  the watchdog did not trigger; stopping the story here")
            return result
        echo("3. The watchdog started the local pipeline; waiting for it (train, evaluate, promote, reload).")
        ref = watchdog.state.ref
        result.pipeline_exit = watchdog.trigger.wait(ref, timeout=1800)
        summary_path = Path(ref.summary_path)
        if summary_path.is_file():
            result.pipeline_summary = json.loads(summary_path.read_text())
        for stage in result.pipeline_summary:
            echo(f"  [{stage['status']:7}] {stage['title']} ({stage['seconds']}s): {stage['detail']}")
        result.marks["redeploy"] = len(result.timeline)
        ready = requests.get(f"{url}/readyz", timeout=5).json()
        echo(f"4. The service now serves adapter {ready.get('adapter_version')}; drifted traffic on unseen images:")
        traffic("healed-drifted", test_rows, config.after_requests, config.drift, 0.0)
        traffic("healed-clean", test_rows, config.after_requests // 2, None, 0.0)
        poll("healed")
    finally:
        service.terminate()
        service.wait(30)
        os.environ.update({k: v for k, v in _env_for(base).items() if k in os.environ})
    result.seconds = round(time.monotonic() - started, 1)
    return result


def plot(result: StoryResult, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = list(range(len(result.timeline)))
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.plot(xs, [p["quality_score"] for p in result.timeline], ".", ms=3, alpha=0.5, label="quality_score")
    ax.set_xlabel("request")
    ax.set_ylabel("quality_score")
    ax.set_ylim(0, 1.05)
    ax2 = ax.twinx()
    drift = [p["drift_score"] for p in result.timeline]
    window = 15
    smooth = [sum(drift[max(0, i - window):i + 1]) / len(drift[max(0, i - window):i + 1]) for i in xs]
    ax2.plot(xs, smooth, color="tab:red", lw=1.5, label="drift_score (rolling mean)")
    ax2.set_ylabel("drift_score", color="tab:red")
    for name, color in (("trigger", "tab:orange"), ("redeploy", "tab:green")):
        if name in result.marks:
            ax.axvline(result.marks[name], color=color, ls="--", lw=2, label=name)
    start = 0
    for phase, info in result.phases.items():
        end = start + info["answered"]
        ax.text((start + end) / 2, 0.03, f"{phase}\nacc {info['accuracy']:.0%}", ha="center", fontsize=8)
        start = end
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper right", fontsize=8)
    ax.set_title("Self-healing: drift detected, LoRA retrained, gated and hot-reloaded")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plot", type=Path, default=REPO_ROOT / "docs" / "self-healing.png")
    parser.add_argument("--drift", default="invert", choices=["invert", "greyscale"])
    parser.add_argument("--json", type=Path, default=None, help="also write the story's numbers here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env()
    with tempfile.TemporaryDirectory(prefix="vqa-demo-") as tmp:
        node = None
        es_url = settings.es_url
        if not es_url:
            from scripts.esnode.launcher import ElasticsearchNode

            node = ElasticsearchNode(Path(tmp) / "es", port=0)
            node.start()
            es_url = node.url
            print(f"started Elasticsearch at {es_url}")
        try:
            result = run_story(es_url, Path(tmp), StoryConfig(drift=args.drift))
        finally:
            if node is not None:
                node.stop()
    plot(result, args.plot)
    print(f"plot written to {args.plot} ({result.seconds}s in all)")
    if args.json:
        args.json.write_text(json.dumps(dataclasses.asdict(result), indent=2))
    return 0 if result.pipeline_exit == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
