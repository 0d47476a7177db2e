"""Shared fixtures: the small model, the dataset, service settings, the app, a gunicorn server, a Jenkins
test server and a runner for the command-line scripts. The real Elasticsearch node is in fixtures_es.py, the
Kubernetes control plane in fixtures_kube.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.config import REPO_ROOT, Settings
from app.learning.data import CSV_NAME, export_easy_vqa
from app.serving.launch import free_port, start_service, stop_service
from tests.jenkins_server import JenkinsTestServer

pytest_plugins = ["tests.fixtures_es", "tests.fixtures_kube"]

SMALL_MODEL = REPO_ROOT / "models" / "blip-vqa-small"


class NullShipper:
    """Stands in for the shipper where a test is about the HTTP edge, not Elasticsearch."""

    def __init__(self):
        self.events: list[dict] = []

    def submit(self, doc: dict) -> None:
        self.events.append(doc)

    def health(self) -> tuple[str, str]:
        return "disabled", "no Elasticsearch in this test"

    def stats(self) -> dict[str, int]:
        return {"shipped": 0}

    def close(self, timeout: float = 10.0) -> None:
        pass


@pytest.fixture(scope="session")
def dataset_dir() -> Path:
    """The easy-VQA export (made once; `make test` prepares it already)."""
    data_dir = REPO_ROOT / "data"
    if not (data_dir / CSV_NAME).is_file():
        export_easy_vqa(data_dir)
    return data_dir


@pytest.fixture(scope="session")
def images_root(dataset_dir: Path) -> Path:
    return dataset_dir / "images"


@pytest.fixture(scope="session")
def small_model_dir() -> Path:
    """The committed small BLIP model; `make model` rebuilds it."""
    if not (SMALL_MODEL / "config.json").is_file():
        pytest.fail(f"{SMALL_MODEL} is missing: run `make model`")
    return SMALL_MODEL


@pytest.fixture
def null_shipper() -> NullShipper:
    """A shipper that records events in `.events` instead of sending them to Elasticsearch."""
    return NullShipper()


@pytest.fixture
def settings(tmp_path: Path, small_model_dir: Path, images_root: Path) -> Settings:
    """Settings for one test: the small model, the dataset images, private adapters and spool dirs."""
    return Settings(
        model_dir=str(small_model_dir), images_root=str(images_root), data_dir=str(images_root.parent),
        adapters_dir=str(tmp_path / "adapters"), spool_dir=str(tmp_path / "spool"), es_url="",
        watchdog_state_file=str(tmp_path / "watchdog_state.json"), max_content_length=2 * 1024 * 1024,
        max_image_pixels=1_000_000, reload_poll_seconds=0.2,
    )


@pytest.fixture
def app(settings: Settings):
    """The Flask app with the model loaded and a recording stand-in shipper."""
    from app import create_app

    application = create_app(settings, shipper=NullShipper())
    assert application.extensions["vqa"].models.wait_ready(60), application.extensions["vqa"].models.error
    yield application
    application.extensions["vqa"].close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Starts real gunicorn servers of `app:create_app()` on loopback ports: `gunicorn(env) -> base URL`.

    Ready when /readyz is 200; each one's log is `<tmp_path>/gunicorn-<port>.log`; all are stopped after the test.
    `app_spec` and `config` start another WSGI app (see `start_service`).
    """
    procs = []

    def start(env: dict[str, str], *, threads: int = 4, extra_args: list[str] | None = None, **app) -> str:
        port = free_port()
        procs.append(start_service(env, port, log_path=tmp_path / f"gunicorn-{port}.log",
                                   extra_args=["--threads", str(threads), *(extra_args or [])], timeout=90, **app))
        return f"http://127.0.0.1:{port}"

    yield start
    for proc in procs:
        stop_service(proc)


@pytest.fixture
def jenkins_server() -> Iterator[JenkinsTestServer]:
    """A server speaking Jenkins' REST API (tests/jenkins_server.py), job `vqa-retrain`; `.url`, `.user`, `.token`."""
    with JenkinsTestServer(queue_seconds=0.3, build_seconds=0.5) as server:
        yield server


@pytest.fixture
def run_script() -> Callable[..., subprocess.CompletedProcess]:
    """Runs `python -m scripts.NAME ARGS...` from the repo root: `run_script(name, *args, env={...})`."""

    def run(name: str, *args: str, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", f"scripts.{name}", *args], cwd=REPO_ROOT, capture_output=True,
                              text=True, env={**os.environ, **(env or {})}, timeout=timeout)

    return run


@pytest.fixture(scope="session")
def tiny_adapter(tmp_path_factory, small_model_dir: Path, images_root: Path, dataset_dir: Path) -> Path:
    """A LoRA adapter trained for a few steps (real PEFT training, built once per run)."""
    from app.learning.data import load_rows
    from app.learning.lora import LoraParams, train_adapter

    frame = load_rows(dataset_dir / CSV_NAME, split="train", limit=64)
    out = tmp_path_factory.mktemp("adapters")
    return train_adapter(small_model_dir, frame, images_root, out, LoraParams(max_steps=3, batch_size=16),
                         name="adapter-tiny")
