"""One typed settings object, read from environment variables once.

Every setting of the service, the event shipper and the watchdog lives here with its
default and its meaning; the README's configuration table is generated from `FIELDS`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MAX_IMAGE_PIXELS = 25_000_000  # also the limit for dataset images in training and evaluation


class ConfigError(ValueError):
    """A setting has a value that cannot be used; the message names the variable."""


def _setting(env: str, default: Any, doc: str, *, secret: bool = False, choices: tuple[str, ...] = ()) -> Any:
    return field(default=default, metadata={"env": env, "doc": doc, "secret": secret, "choices": choices})


TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


@dataclass(frozen=True)
class Settings:
    """All configuration; build with `Settings.from_env()` or `Settings(**overrides)`."""

    # --- model and data -------------------------------------------------------------
    model_dir: str = _setting(
        "VQA_MODEL_DIR", str(REPO_ROOT / "models" / "blip-vqa-small"),
        "Base BLIP VQA model directory (anything `BlipForQuestionAnswering.from_pretrained` loads).",
    )
    adapters_dir: str = _setting(
        "VQA_ADAPTERS_DIR", str(REPO_ROOT / "data" / "adapters"),
        "Where LoRA adapters are saved; its `CURRENT` file names the promoted adapter.",
    )
    adapter_dir: str = _setting(
        "VQA_ADAPTER_DIR", "",
        "Explicit PEFT LoRA adapter to load; empty: the one `CURRENT` names, or none.",
    )
    data_dir: str = _setting(
        "VQA_DATA_DIR", str(REPO_ROOT / "data"),
        "Data root: holds `VQA_Dataset.csv` and, by default, the images root.",
    )
    images_root: str = _setting(
        "VQA_IMAGES_ROOT", str(REPO_ROOT / "data" / "images"),
        "`image_path` in requests and in the CSV is relative to this folder; nothing outside it is read.",
    )
    torch_threads: int = _setting(
        "VQA_TORCH_THREADS", 0,
        "CPU threads for PyTorch; 0: PyTorch's default (all cores), but 1 per worker under gunicorn.",
    )
    max_answer_tokens: int = _setting("VQA_MAX_ANSWER_TOKENS", 8, "Longest answer generated, in tokens.")

    # --- request limits -------------------------------------------------------------
    max_question_chars: int = _setting("VQA_MAX_QUESTION_CHARS", 512, "Longest accepted question (400 above).")
    max_content_length: int = _setting(
        "VQA_MAX_CONTENT_LENGTH", 10 * 1024 * 1024, "Largest accepted request body in bytes (413 above)."
    )
    max_image_pixels: int = _setting(
        "VQA_MAX_IMAGE_PIXELS", DEFAULT_MAX_IMAGE_PIXELS,
        "Largest accepted image, width x height (decompression-bomb guard)."
    )
    reload_poll_seconds: float = _setting(
        "VQA_RELOAD_POLL_SECONDS", 2.0,
        "How often each worker checks the adapters' `CURRENT` pointer for a new promoted adapter; 0 disables.",
    )
    recent_predictions: int = _setting(
        "VQA_RECENT_PREDICTIONS", 100_000, "Predictions remembered in memory for `POST /feedback` lookups."
    )
    bind_host: str = _setting(
        "VQA_BIND_HOST", "127.0.0.1",
        "Address `make up` binds the service to; 0.0.0.0 exposes it to the network.",
    )
    admin_token: str = _setting(
        "VQA_ADMIN_TOKEN", "",
        "Bearer token for `POST /admin/reload`; empty disables the endpoint.", secret=True,
    )
    feedback_token: str = _setting(
        "VQA_FEEDBACK_TOKEN", "",
        "Bearer token `POST /feedback` requires (labels become training data); empty: open to whoever reaches "
        "the service.", secret=True,
    )
    receipt_key: str = _setting(
        "VQA_RECEIPT_KEY", "",
        "Key that signs the `receipt` each answer carries, so any worker or replica accepts its `POST /feedback`; "
        "give every replica the same one. Empty: gunicorn makes one per start, shared by its workers.", secret=True,
    )

    # --- serving: processes, threads and dynamic batching ------------------------------
    web_concurrency: int = _setting(
        "WEB_CONCURRENCY", 1, "gunicorn worker processes; each holds one copy of the model and batches on its own."
    )
    gunicorn_threads: int = _setting(
        "GUNICORN_THREADS", 32,
        "Request threads per worker; requests in flight beyond `VQA_MAX_BATCH` queue for the next batch.",
    )
    max_batch: int = _setting("VQA_MAX_BATCH", 16, "Most requests answered together in one batched model call.")
    batch_wait_ms: float = _setting(
        "VQA_BATCH_WAIT_MS", 10.0,
        "Longest wait for more requests to fill a batch, only while more are coming; an idle service never waits.",
    )
    queue_size: int = _setting(
        "VQA_QUEUE_SIZE", 64, "Requests a worker holds waiting for the model; beyond it `/predict` answers 503."
    )
    request_timeout_s: float = _setting(
        "VQA_REQUEST_TIMEOUT_S", 10.0, "A request still waiting for the model after this many seconds answers 503."
    )
    balance_connections: bool = _setting(
        "VQA_BALANCE_CONNECTIONS", True,
        "With several workers, a worker holding more than its share of keep-alive connections answers "
        "`Connection: close` so the client reconnects to a less loaded one.",
    )
    keepalive_linger_ms: float = _setting(
        "VQA_KEEPALIVE_LINGER_MS", 5.0,
        "How long the thread that answered a keep-alive request waits on that connection for the next one "
        "(no hand-off between threads when it comes); 0: gunicorn's gthread behaviour.",
    )
    metrics_dir: str = _setting(
        "PROMETHEUS_MULTIPROC_DIR", "",
        "Folder where several worker processes share their metrics (prometheus_client reads it too); "
        "gunicorn sets a fresh one when empty.",
    )

    # --- Elasticsearch and event shipping -------------------------------------------
    es_url: str = _setting(
        "ES_URL", "", "Elasticsearch URL; empty: shipping is off and events only go to stdout (for Filebeat)."
    )
    es_username: str = _setting("ES_USERNAME", "", "Elasticsearch basic-auth user.")
    es_password: str = _setting("ES_PASSWORD", "", "Elasticsearch basic-auth password.", secret=True)
    es_api_key: str = _setting("ES_API_KEY", "", "Elasticsearch API key (used instead of user/password).", secret=True)
    es_index_prefix: str = _setting("ES_INDEX_PREFIX", "vqa-logs", "Events go to `<prefix>-YYYY.MM.DD`.")
    spool_dir: str = _setting(
        "VQA_SPOOL_DIR", str(REPO_ROOT / "data" / "spool"),
        "Disk spool for events Elasticsearch has not accepted yet (replayed later).",
    )
    ship_queue_size: int = _setting("VQA_SHIP_QUEUE_SIZE", 10_000, "In-memory event queue; overflow goes to the spool.")
    ship_batch_size: int = _setting("VQA_SHIP_BATCH_SIZE", 200, "Events per bulk request.")
    ship_flush_seconds: float = _setting("VQA_SHIP_FLUSH_SECONDS", 1.0, "Longest wait before a partial batch is sent.")

    # --- retraining pipeline -----------------------------------------------------------
    build_number: str = _setting("BUILD_NUMBER", "", "Jenkins' build number: names the pipeline run and the image tag.")
    gate_min_accuracy: float = _setting("VQA_GATE_MIN_ACCURACY", 0.8, "Evaluation gate: lowest accuracy to promote.")
    gate_tolerance: float = _setting(
        "VQA_GATE_TOLERANCE", 0.0, "How much lower than the deployed model's accuracy a new adapter may score."
    )
    retrain_epochs: float = _setting("VQA_RETRAIN_EPOCHS", 10.0, "LoRA epochs in the pipeline's training stage.")
    retrain_replay_rows: int = _setting(
        "VQA_RETRAIN_REPLAY_ROWS", 2400, "Original training rows mixed into retraining (so nothing is forgotten)."
    )
    retrain_min_feedback: int = _setting(
        "VQA_RETRAIN_MIN_FEEDBACK", 50, "Labelled feedback rows needed to retrain on production data."
    )
    pipeline_build_images: bool = _setting(
        "VQA_PIPELINE_BUILD_IMAGES", False,
        "true: the local pipeline builds the Docker images (slow); false: skipped. Booleans take 1/0, true/false, "
        "yes/no, on/off.",
    )
    image_registry: str = _setting("VQA_IMAGE_REGISTRY", "", "Registry to push images to; empty: push is skipped.")
    kube_deploy: bool = _setting(
        "VQA_KUBE_DEPLOY", False,
        "true: the deploy stage also runs the Ansible playbook against the current kube context.",
    )

    # --- watchdog -------------------------------------------------------------------
    watchdog_poll_seconds: float = _setting("WATCHDOG_POLL_SECONDS", 60.0, "Seconds between checks.")
    watchdog_window_minutes: float = _setting("WATCHDOG_WINDOW_MINUTES", 15.0, "Look-back window of each check.")
    watchdog_min_samples: int = _setting(
        "WATCHDOG_MIN_SAMPLES", 50, "Fewest inferences in the window to decide anything."
    )
    watchdog_quality_threshold: float = _setting(
        "WATCHDOG_QUALITY_THRESHOLD", 0.75, "Trigger when average quality_score falls below this."
    )
    watchdog_drift_threshold: float = _setting(
        "WATCHDOG_DRIFT_THRESHOLD", 2.0, "Trigger when average drift_score rises above this."
    )
    watchdog_drift_test_alpha: float = _setting(
        "WATCHDOG_DRIFT_TEST_ALPHA", 0.005,
        "Trigger `input_drift` when the window drift test's p-value is at most this (its false-alarm rate).",
    )
    watchdog_drift_test_max_events: int = _setting(
        "WATCHDOG_DRIFT_TEST_MAX_EVENTS", 1000, "The window drift test uses at most this many newest inferences."
    )
    watchdog_accuracy_threshold: float = _setting(
        "WATCHDOG_ACCURACY_THRESHOLD", 0.8, "Trigger when labelled-feedback accuracy falls below this."
    )
    watchdog_min_feedback: int = _setting(
        "WATCHDOG_MIN_FEEDBACK", 20, "Fewest feedback labels in the window for the accuracy rule."
    )
    watchdog_cooldown_minutes: float = _setting("WATCHDOG_COOLDOWN_MINUTES", 30.0, "Quiet time after a trigger.")
    watchdog_state_file: str = _setting(
        "WATCHDOG_STATE_FILE", str(REPO_ROOT / "data" / "watchdog_state.json"),
        "Where the watchdog keeps its last trigger and build across restarts.",
    )
    watchdog_trigger: str = _setting(
        "WATCHDOG_TRIGGER", "jenkins", "`jenkins` or `local` (runs `python -m scripts.pipeline`).",
        choices=("jenkins", "local"),
    )
    service_url: str = _setting(
        "VQA_SERVICE_URL", "http://127.0.0.1:5000",
        "The service: the local pipeline hot-reloads it after promotion; the watchdog reads its `/drift/reference`."
    )
    jenkins_url: str = _setting("JENKINS_URL", "", "Jenkins base URL.")
    jenkins_user: str = _setting("JENKINS_USER", "", "Jenkins user that owns the API token.")
    jenkins_api_token: str = _setting("JENKINS_API_TOKEN", "", "Jenkins API token.", secret=True)
    jenkins_job: str = _setting("JENKINS_JOB", "vqa-retrain", "Jenkins job to build with parameters.")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read every field from `environ` (default `os.environ`), then apply overrides."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(f.metadata["env"])
            if raw is None or raw == "":
                continue
            values[f.name] = _coerce(f, raw)
        values.update(overrides)
        return cls(**values)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            choices = f.metadata["choices"]
            if choices and getattr(self, f.name) not in choices:
                raise ConfigError(f"{f.metadata['env']}={getattr(self, f.name)!r} is not one of: {', '.join(choices)}")

    def to_env(self) -> dict[str, str]:
        """The environment variables that reproduce these settings in a child process."""
        return {f.metadata["env"]: str(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict with secrets masked, safe to log."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = "***" if f.metadata["secret"] and value else value
        return out

    def __repr__(self) -> str:  # secrets must never reach a log through repr()
        return f"Settings({self.redacted()!r})"


FIELDS = dataclasses.fields(Settings)


def _coerce(f: dataclasses.Field, raw: str) -> Any:
    kind = type(f.default)
    if kind is bool:
        word = raw.strip().lower()
        if word in TRUE_WORDS or word in FALSE_WORDS:
            return word in TRUE_WORDS
        words = ", ".join(TRUE_WORDS + FALSE_WORDS)
        raise ConfigError(f"{f.metadata['env']}={raw!r} is not a boolean: use one of {words}")
    try:
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{f.metadata['env']}={raw!r} is not a valid {kind.__name__}") from exc
    return raw


def markdown_table() -> str:
    """The README configuration table, generated from the dataclass."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for f in FIELDS:
        default = f.default
        if isinstance(default, str) and default.startswith(str(REPO_ROOT)):
            default = default.replace(str(REPO_ROOT) + os.sep, "")
        if isinstance(default, bool):
            default = str(default).lower()
        shown = f"`{default}`" if default != "" else "(empty)"
        rows.append(f"| `{f.metadata['env']}` | {shown} | {f.metadata['doc']} |")
    return "\n".join(rows)


README_TABLE_MARKERS = ("<!-- config-table:start -->", "<!-- config-table:end -->")


def with_config_table(readme_text: str) -> str:
    """`readme_text` with the text between the config-table markers replaced by `markdown_table()`."""
    start, end = README_TABLE_MARKERS
    head, rest = readme_text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{markdown_table()}\n{end}{tail}"
