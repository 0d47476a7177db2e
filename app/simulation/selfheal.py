"""The self-healing story: clean traffic, then drift, the watchdog fires, retraining, redeploy, recovery.

`run_story` drives a real Elasticsearch, the service under gunicorn and the watchdog with the local
trigger; `scripts/demo_selfheal.py` and the end-to-end test run it with the same numbers.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from app.config import Settings
from app.learning.data import CSV_NAME, load_rows
from app.serving.launch import free_port, start_service, stop_service
from app.simulation.traffic import TrafficResult, send_traffic

log = logging.getLogger(__name__)


@dataclass
class StoryConfig:
    clean_requests: int = 200
    drift_requests: int = 1500
    after_requests: int = 400
    feedback_share: float = 1.0
    drift: str = "invert"
    min_samples: int = 60
    retrain_epochs: float = 10.0
    replay_rows: int = 2400
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
    env = settings.to_env()
    rows = load_rows(Path(base.data_dir) / CSV_NAME)
    train_rows, test_rows = rows[rows["split"] == "train"], rows[rows["split"] == "test"]
    images = Path(settings.images_root)
    url = settings.service_url
    service = start_service(env, port, log_path=workdir / "service.log")
    es = Elasticsearch(es_url)
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
            for q, d, v, at, ok in zip(res.quality, res.drift, res.versions, res.times, res.outcomes, strict=False):
                result.timeline.append({"phase": phase, "quality_score": q, "drift_score": d, "adapter": v,
                                        "at": at, "correct": ok})
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
        decision = poll("drifted")
        result.marks.update(trigger=time.time(), trigger_index=len(result.timeline))
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
        result.marks["redeploy"] = time.time()
        ready = requests.get(f"{url}/readyz", timeout=5).json()
        echo(f"4. The service now serves adapter {ready.get('adapter_version')}; drifted traffic on unseen images:")
        traffic("healed-drifted", test_rows, config.after_requests, config.drift, 0.0)
        traffic("healed-clean", test_rows, config.after_requests, None, 0.0)
        poll("healed")
    finally:
        stop_service(service)
    result.seconds = round(time.monotonic() - started, 1)
    return result


def plot(result: StoryResult, out: Path) -> None:
    """quality_score (dots and rolling mean) and drift_score over minutes, trigger and redeploy marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not result.timeline:
        return
    # x is the request number; the pipeline's run (no traffic) is drawn as a gap between the marks.
    gap = max(40, len(result.timeline) // 8)
    after = result.marks.get("trigger_index", len(result.timeline))
    xs = [i if i < after else i + gap for i in range(len(result.timeline))]

    def rolling(values: list[float], window: int = 25) -> list[float]:
        """Rolling mean within each side of the gap, with a NaN at the gap so lines break there."""
        out = []
        for i in range(len(values)):
            lo = max(0, i - window) if i < after else max(after, i - window)
            out.append(sum(values[lo:i + 1]) / len(values[lo:i + 1]))
        return out[:after] + [float("nan")] + out[after:]

    xs_gap = xs[:after] + [after + gap / 2] + xs[after:]
    quality = [p["quality_score"] for p in result.timeline]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.plot(xs, quality, ".", ms=2, alpha=0.3, color="tab:blue")
    ax.plot(xs_gap, rolling(quality), color="tab:blue", lw=1.8, label="quality_score (rolling mean)")
    ax.plot(xs_gap, rolling([float(p.get("correct", 0)) for p in result.timeline]), color="tab:purple", lw=1.8,
            label="accuracy vs. true answer (rolling)")
    ax.set_xlabel("request")
    ax.set_ylabel("quality_score / accuracy")
    ax.set_ylim(0, 1.05)
    ax2 = ax.twinx()
    ax2.plot(xs_gap, rolling([p["drift_score"] for p in result.timeline]), color="tab:red", lw=1.5,
             label="drift_score (rolling mean)")
    ax2.set_ylabel("drift_score", color="tab:red")
    positions = {"trigger": after, "redeploy": after + gap}
    if "redeploy" in result.marks and "trigger" in result.marks:
        seconds = result.marks["redeploy"] - result.marks["trigger"]
        ax.axvspan(after, after + gap, color="0.9")
        ax.text(after + gap / 2, 0.5, f"pipeline\n{seconds:.0f} s", ha="center", fontsize=8)
    for name, color in (("trigger", "tab:orange"), ("redeploy", "tab:green")):
        if name in result.marks:
            ax.axvline(positions[name], color=color, ls="--", lw=2, label=name)
    for phase, info in result.phases.items():
        spots = [x for x, p in zip(xs, result.timeline, strict=True) if p["phase"] == phase]
        if spots:
            ax.text((spots[0] + spots[-1]) / 2, 0.04, f"{phase}\nacc {info['accuracy']:.0%}", ha="center",
                    fontsize=8)
    lines, labels = ax.get_legend_handles_labels()
    lines2, labels2 = ax2.get_legend_handles_labels()
    ax.legend(lines + lines2, labels + labels2, loc="lower left", bbox_to_anchor=(0.0, 0.12), fontsize=8)
    ax.set_title("Self-healing: drift detected, LoRA retrained on feedback, gated, hot-reloaded")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)




def run_demo(drift: str, plot_path: Path, json_path: Path | None = None, echo=print) -> StoryResult:
    """The story with a local Elasticsearch node unless ES_URL is set; draws the plot and the numbers."""
    settings = Settings.from_env()
    with tempfile.TemporaryDirectory(prefix="vqa-demo-") as tmp:
        node = None
        es_url = settings.es_url
        if not es_url:
            from infra.elasticsearch.launcher import ElasticsearchNode

            node = ElasticsearchNode(Path(tmp) / "es", port=0)
            node.start()
            es_url = node.url
            echo(f"started Elasticsearch at {es_url}")
        try:
            result = run_story(es_url, Path(tmp), StoryConfig(drift=drift), echo=echo)
        finally:
            if node is not None:
                node.stop()
    plot(result, plot_path)
    echo(f"plot written to {plot_path} ({result.seconds}s in all)")
    if json_path:
        json_path.write_text(json.dumps(dataclasses.asdict(result), indent=2))
    return result
