"""Run-wide fixtures: the small model, a real Elasticsearch node, the app, its client, a gunicorn server."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.config import REPO_ROOT, Settings
from app.data import CSV_NAME, export_easy_vqa
from app.launch import start_service

pytest_plugins = ["tests.fixtures_es"]

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


def start_gunicorn(env_overrides: dict[str, str], port: int, log_path: Path, threads: int = 4):
    """A real gunicorn serving `app:create_app()` on a loopback port, ready when /readyz is 200."""
    return start_service(env_overrides, port, log_path=log_path, extra_args=["--threads", str(threads)], timeout=90)


@pytest.fixture(scope="session")
def tiny_adapter(tmp_path_factory, small_model_dir: Path, images_root: Path, dataset_dir: Path) -> Path:
    """A LoRA adapter trained for a few steps (real PEFT training, built once per run)."""
    from app.adapters import LoraParams, train_adapter
    from app.data import load_rows

    frame = load_rows(dataset_dir / CSV_NAME, split="train", limit=64)
    out = tmp_path_factory.mktemp("adapters")
    return train_adapter(small_model_dir, frame, images_root, out, LoraParams(max_steps=3, batch_size=16),
                         name="adapter-tiny")
