"""Real container builds: Dockerfile.model fills a volume, Dockerfile.app serves /predict from it.

Needs a Docker engine (.ci/install_docker.sh) and the local base image (docker/make_base_image.sh,
built here if missing); without an engine these tests fail, they do not skip.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from PIL import Image, ImageDraw

from app.events import schema as events
from app.model.registry import MODEL_INFO_FILE, read_info

pytestmark = pytest.mark.container
log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
# Where the images come from here: the debootstrap base, and torch from pip's configured index
# (empty TORCH_INDEX_URL), since the CPU index is out of reach (docs/containers.md).
BASE_IMAGE = os.environ.get("VQA_DOCKER_BASE_IMAGE", "vqa-base:bookworm")
TORCH_INDEX_URL = os.environ.get("VQA_DOCKER_TORCH_INDEX_URL", "")
RUN_ID = uuid.uuid4().hex[:8]
TEST_IMAGE = "shapes/red-circle.png"
READY_TIMEOUT = 240.0


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the docker CLI; a failure raises with the command's output in the message."""
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])} ... exited {result.returncode}:\n"
                             f"{result.stdout[-6000:]}\n{result.stderr[-4000:]}")
    return result


def build(tag: str, dockerfile: Path, context: Path, build_args: dict[str, str], timeout: float) -> float:
    """`docker build` with host networking (pip reaches PyPI as the host does); returns seconds."""
    args = [f"--build-arg={k}={v}" for k, v in build_args.items()]
    started = time.monotonic()
    docker("build", "--network=host", "-f", str(dockerfile), "-t", tag, *args, str(context), timeout=timeout)
    seconds = time.monotonic() - started
    log.info("built %s in %.1f s", tag, seconds)
    return seconds


def remove_image(tag: str) -> None:
    # --no-prune keeps the untagged parent layers: they are the build cache of the next run.
    docker("rmi", "--force", "--no-prune", tag, check=False)


@dataclass(frozen=True)
class ModelImage:
    tag: str
    model_version: str
    adapter_version: str


@dataclass(frozen=True)
class RunningApp:
    container: str
    url: str
    model: ModelImage


@pytest.fixture(scope="session")
def engine() -> str:
    """The Docker engine's version; fails (never skips) when there is no CLI or no daemon."""
    if shutil.which("docker") is None:
        pytest.fail("the docker CLI is not installed: run .ci/install_docker.sh (CI does)")
    result = docker("version", "--format", "{{.Server.Version}}", check=False, timeout=30)
    if result.returncode != 0:
        pytest.fail(f"the Docker engine does not answer ({result.stderr.strip()}): run .ci/install_docker.sh")
    return result.stdout.strip()


@pytest.fixture(scope="session")
def base_image(engine: str) -> str:
    """The base image both Dockerfiles build on; the local debootstrap one is made (and kept) if missing."""
    if docker("image", "inspect", BASE_IMAGE, check=False).returncode != 0:
        if not BASE_IMAGE.startswith("vqa-base:"):
            pytest.fail(f"base image {BASE_IMAGE} is not present and no registry is reachable")
        started = time.monotonic()
        subprocess.run([str(REPO / "docker" / "make_base_image.sh"), BASE_IMAGE], check=True, timeout=1200)
        log.info("made %s in %.1f s", BASE_IMAGE, time.monotonic() - started)
    return BASE_IMAGE


@pytest.fixture(scope="session")
def app_image(base_image: str) -> Iterator[str]:
    """Dockerfile.app built from the repository, as CI and users build it."""
    tag = f"vqa-app:test-{RUN_ID}"
    build(tag, REPO / "Dockerfile.app", REPO,
          {"BASE_IMAGE": base_image, "TORCH_INDEX_URL": TORCH_INDEX_URL}, timeout=3000)
    yield tag
    remove_image(tag)


@pytest.fixture(scope="session")
def model_image(base_image: str, small_model_dir: Path, tiny_adapter: Path,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelImage]:
    """Dockerfile.model over a context laid out like the repository's: the small model plus a trained adapter."""
    context = tmp_path_factory.mktemp("model-context")
    shutil.copytree(small_model_dir, context / "models" / "blip-vqa-small")
    adapter_version = tiny_adapter.name
    shutil.copytree(tiny_adapter, context / "data" / "adapters" / adapter_version)
    (context / "docker").mkdir()
    shutil.copy2(REPO / "docker" / "entrypoint-model.sh", context / "docker" / "entrypoint-model.sh")
    model_version = read_info(small_model_dir, MODEL_INFO_FILE).get("version", small_model_dir.name)
    tag = f"vqa-model-test-{RUN_ID}:{model_version}--{adapter_version}"
    build(tag, REPO / "Dockerfile.model", context, {
        "BASE_IMAGE": base_image, "MODEL_VERSION": model_version,
        "ADAPTER_SRC": f"data/adapters/{adapter_version}", "ADAPTER_VERSION": adapter_version,
    }, timeout=600)
    yield ModelImage(tag, model_version, adapter_version)
    remove_image(tag)


@pytest.fixture(scope="session")
def models_volume(model_image: ModelImage) -> Iterator[str]:
    """A named volume the model image's init run has filled, as an init container fills an emptyDir."""
    volume = f"vqa-models-test-{RUN_ID}"
    docker("volume", "create", volume)
    try:
        docker("run", "--rm", "--name", f"vqa-model-init-{RUN_ID}", "-v", f"{volume}:/models", model_image.tag)
        yield volume
    finally:
        docker("volume", "rm", "--force", volume, check=False)


@pytest.fixture(scope="session")
def images_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An images root holding one easy-VQA-like picture (a red circle on white)."""
    root = tmp_path_factory.mktemp("images")
    picture = root / TEST_IMAGE
    picture.parent.mkdir()
    image = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(image).ellipse((12, 12, 52, 52), fill=(220, 20, 20))
    image.save(picture)
    for path in (root, picture.parent):
        path.chmod(0o755)  # the container's user is not the test's
    picture.chmod(0o644)
    return root


def wait_ready(container: str, url: str) -> dict:
    """Poll /readyz until it answers 200; on timeout fail with the container's log."""
    deadline = time.monotonic() + READY_TIMEOUT
    last = "no answer"
    while time.monotonic() < deadline:
        state = docker("inspect", "-f", "{{.State.Status}}", container).stdout.strip()
        if state != "running":
            break
        try:
            reply = requests.get(f"{url}/readyz", timeout=5)
            if reply.status_code == 200:
                return reply.json()
            last = f"{reply.status_code} {reply.text[:300]}"
        except (requests.ConnectionError, requests.Timeout) as exc:
            # gunicorn binds the port before its worker has imported the app, and docker-proxy
            # accepts before the container listens: a refused or a slow answer both mean "not yet".
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(1)
    logs = docker("logs", "--tail", "60", container, check=False)
    pytest.fail(f"app container not ready ({last}); log:\n{logs.stdout}{logs.stderr}")


@pytest.fixture(scope="session")
def running_app(app_image: str, model_image: ModelImage, models_volume: str, images_dir: Path,
                ) -> Iterator[RunningApp]:
    """The app image run as the Kubernetes Deployment runs it: read-only root with writable /tmp and
    spool, HOME=/tmp, no capabilities, no privilege escalation."""
    name = f"vqa-app-test-{RUN_ID}"
    docker("run", "--detach", "--name", name, "--publish", "127.0.0.1::5000",
           "--read-only", "--tmpfs", "/tmp", "--tmpfs", "/var/lib/vqa/spool:uid=10001,gid=10001",
           "--env", "HOME=/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
           "--health-interval", "2s", "--health-start-period", "5s",
           "--env", "VQA_TORCH_THREADS=1",
           "-v", f"{models_volume}:/models:ro", "-v", f"{images_dir}:/data/images:ro", app_image)
    try:
        port = docker("port", name, "5000/tcp").stdout.strip().splitlines()[0].rsplit(":", 1)[1]
        url = f"http://127.0.0.1:{port}"
        started = time.monotonic()
        ready = wait_ready(name, url)
        log.info("app container ready in %.1f s: %s", time.monotonic() - started, ready)
        yield RunningApp(name, url, model_image)
    finally:
        docker("rm", "--force", name, check=False)


def test_model_container_fills_the_volume_and_points_current_at_its_adapter(
        model_image: ModelImage, models_volume: str) -> None:
    """The init run leaves base/, adapters/<version>/ and adapters/CURRENT naming that version."""
    listing = docker("run", "--rm", "-v", f"{models_volume}:/models:ro", "--entrypoint", "sh", model_image.tag,
                     "-c", "cat /models/adapters/CURRENT /models/MODEL_IMAGE; cd /models && find . -type f | sort")
    lines = listing.stdout.splitlines()
    adapter = model_image.adapter_version
    assert lines[0] == adapter
    assert f"adapter_version={adapter}" in lines and f"model_version={model_image.model_version}" in lines
    files = set(lines)
    assert {"./base/config.json", "./base/model.safetensors", f"./adapters/{adapter}/adapter_config.json",
            f"./adapters/{adapter}/adapter_model.safetensors"} <= files
    assert not any(".incoming." in f or ".old." in f for f in files), "staging leftovers in the volume"


def test_model_image_labels_carry_model_and_adapter_versions(model_image: ModelImage) -> None:
    """The image's labels and tag name the versions it carries, and it runs as a non-root user."""
    config = json.loads(docker("image", "inspect", "-f", "{{json .Config}}", model_image.tag).stdout)
    labels = config["Labels"]
    assert model_image.tag.endswith(f":{model_image.model_version}--{model_image.adapter_version}")
    assert labels["io.vqa.model.version"] == model_image.model_version
    assert labels["io.vqa.adapter.version"] == model_image.adapter_version
    assert labels["org.opencontainers.image.version"] == f"{model_image.model_version}--{model_image.adapter_version}"
    assert config["User"].split(":")[0] not in ("", "0", "root")


def test_model_image_from_the_repository_without_adapter_serves_the_base_alone(
        base_image: str, small_model_dir: Path) -> None:
    """Built from the repository with the default (no) adapter, re-runs replace base/ and set no CURRENT."""
    model_src = small_model_dir.resolve().relative_to(REPO).as_posix()
    tag = f"vqa-model-test-{RUN_ID}:repo"
    volume = f"vqa-models-repo-{RUN_ID}"
    build(tag, REPO / "Dockerfile.model", REPO, {"BASE_IMAGE": base_image, "MODEL_SRC": model_src}, timeout=600)
    try:
        docker("volume", "create", volume)
        for _ in range(2):
            first = docker("run", "--rm", "-v", f"{volume}:/models", tag)
            assert "no adapter in this image" in first.stderr
        listing = docker("run", "--rm", "-v", f"{volume}:/models:ro", "--entrypoint", "sh", tag, "-c",
                         "cd /models && find . | sort").stdout.splitlines()
        assert "./base/config.json" in listing and "./adapters" in listing
        assert "./adapters/CURRENT" not in listing
        assert not any(".incoming." in f or ".old." in f for f in listing), listing
        labels = json.loads(docker("image", "inspect", "-f", "{{json .Config.Labels}}", tag).stdout)
        assert labels["io.vqa.adapter.version"] == "none"
    finally:
        docker("volume", "rm", "--force", volume, check=False)
        remove_image(tag)


def test_model_container_refuses_an_unwritable_target(model_image: ModelImage) -> None:
    """Run without a writable volume, the init container exits non-zero and says why."""
    result = docker("run", "--rm", "--read-only", model_image.tag, "/nonexistent", check=False)
    assert result.returncode != 0
    assert "not a writable directory" in result.stderr


def test_app_is_ready_with_the_mounted_model_and_adapter(running_app: RunningApp) -> None:
    """/readyz is 200 and names the base model and the adapter CURRENT points at."""
    body = requests.get(f"{running_app.url}/readyz", timeout=10).json()
    assert body["status"] == "ok"
    assert body[events.ADAPTER_VERSION] == running_app.model.adapter_version
    assert body[events.MODEL_VERSION] == running_app.model.model_version
    assert requests.get(f"{running_app.url}/healthz", timeout=10).status_code == 200


def test_predict_with_an_image_path_answers_in_the_container(running_app: RunningApp) -> None:
    """POST /predict with a JSON image_path under the mounted images root answers 200 with its fields."""
    reply = requests.post(f"{running_app.url}/predict",
                          json={"image_path": TEST_IMAGE, "question": "what color is the shape?"}, timeout=60)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert isinstance(body[events.ANSWER], str) and body[events.ANSWER]
    assert 0.0 <= body[events.QUALITY_SCORE] <= 1.0
    assert body[events.LATENCY_SECONDS] >= 0.0
    assert body[events.ADAPTER_VERSION] == running_app.model.adapter_version


def test_predict_with_an_uploaded_image_answers_in_the_container(running_app: RunningApp, images_dir: Path) -> None:
    """POST /predict as multipart (image + question) answers 200 too."""
    with (images_dir / TEST_IMAGE).open("rb") as fh:
        reply = requests.post(f"{running_app.url}/predict", data={"question": "what shape is it?"},
                              files={"image": ("circle.png", fh, "image/png")}, timeout=60)
    assert reply.status_code == 200, reply.text
    assert set(reply.json()) >= {events.ANSWER, events.QUALITY_SCORE, events.LATENCY_SECONDS}


def test_predict_refuses_a_path_outside_the_images_root(running_app: RunningApp) -> None:
    """An image_path escaping the images root is a 400, not a file read."""
    reply = requests.post(f"{running_app.url}/predict",
                          json={"image_path": "../../etc/passwd", "question": "what is it?"}, timeout=30)
    assert reply.status_code == 400, reply.text


def test_app_logs_each_inference_as_a_log_event_line(running_app: RunningApp) -> None:
    """`docker logs` (what Filebeat reads) carries one LOG_EVENT line per answered request."""
    reply = requests.post(f"{running_app.url}/predict",
                          json={"image_path": TEST_IMAGE, "question": "is there a circle?"}, timeout=60)
    assert reply.status_code == 200, reply.text
    request_id = reply.json()[events.REQUEST_ID]
    logs = docker("logs", running_app.container).stdout
    docs = [doc for doc in map(events.parse_line, logs.splitlines()) if doc]
    mine = [doc for doc in docs if doc.get(events.REQUEST_ID) == request_id]
    assert len(mine) == 1 and mine[0][events.EVENT] == events.INFERENCE


def test_app_process_runs_as_non_root(running_app: RunningApp) -> None:
    """Inside the container the service's user id is not 0, and PID 1 is gunicorn itself (exec form)."""
    uid = docker("exec", running_app.container, "id", "-u").stdout.strip()
    assert uid.isdigit() and int(uid) != 0
    cmdline = docker("exec", running_app.container, "cat", "/proc/1/cmdline").stdout.split("\0")
    assert "gunicorn" in cmdline[0] or "gunicorn" in cmdline[1]


def test_app_healthcheck_reports_healthy(running_app: RunningApp) -> None:
    """The image's HEALTHCHECK (Python probing /healthz) turns the container healthy."""
    deadline = time.monotonic() + 60
    status = ""
    while time.monotonic() < deadline:
        status = docker("inspect", "-f", "{{.State.Health.Status}}", running_app.container).stdout.strip()
        if status == "healthy":
            break
        time.sleep(1)
    assert status == "healthy"


def test_app_image_bakes_in_no_model(app_image: str) -> None:
    """No weights, adapter or model config anywhere in the app image; /models does not exist."""
    probe = (
        "import os\n"
        "names = ('.safetensors', 'pytorch_model.bin', 'adapter_config.json', 'vqa_model.json')\n"
        "tops = ('/opt', '/home', '/srv', '/var', '/data', '/usr/local', '/tmp')\n"
        "hits = [os.path.join(d, f) for t in tops for d, _, fs in os.walk(t) for f in fs if f.endswith(names)]\n"
        "print(os.path.exists('/models'), len(hits), hits[:5])\n"
    )
    out = docker("run", "--rm", "--entrypoint", "python", app_image, "-c", probe).stdout.split(" ", 2)
    assert out[0] == "False", "/models exists in the image"
    assert out[1] == "0", f"model files in the image: {out[2]}"


def test_watchdog_in_the_image_is_the_projects_package(app_image: str) -> None:
    """`python -m watchdog` in the image is this project's CLI and PyPI's watchdog is not installed."""
    helped = docker("run", "--rm", app_image, "python", "-m", "watchdog", "--help")
    assert "python -m watchdog" in helped.stdout and "retraining" in helped.stdout
    pypi = docker("run", "--rm", app_image, "pip", "show", "watchdog", check=False)
    assert pypi.returncode != 0, pypi.stdout


def test_docker_stop_ends_the_service_cleanly(app_image: str, models_volume: str, images_dir: Path) -> None:
    """SIGTERM reaches gunicorn as PID 1: `docker stop` ends it with status 0 well inside the grace period."""
    name = f"vqa-app-stop-{RUN_ID}"
    docker("run", "--detach", "--name", name, "--publish", "127.0.0.1::5000",
           "-v", f"{models_volume}:/models:ro", "-v", f"{images_dir}:/data/images:ro", app_image)
    try:
        port = docker("port", name, "5000/tcp").stdout.strip().splitlines()[0].rsplit(":", 1)[1]
        wait_ready(name, f"http://127.0.0.1:{port}")
        started = time.monotonic()
        docker("stop", "--time", "30", name, timeout=60)
        stopped_in = time.monotonic() - started
        exit_code = docker("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip()
        assert exit_code == "0", docker("logs", "--tail", "30", name).stderr
        assert stopped_in < 25, f"took {stopped_in:.1f} s: SIGTERM did not reach gunicorn"
    finally:
        docker("rm", "--force", name, check=False)
