"""`make test` installs what the tests need (`make prereqs`), and a step that needs root says how to get it.

The install steps live in .ci/ (and docker/make_base_image.sh); they share .ci/lib.sh.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.config import REPO_ROOT

CI = REPO_ROOT / ".ci"
INSTALL_STEPS = sorted(CI.glob("install_*.sh")) + [REPO_ROOT / "docker" / "make_base_image.sh"]


def test_make_test_runs_every_install_step_before_pytest():
    """`make -n test` lists each .ci/install_*.sh and the base image step once, all before pytest; CI runs it."""
    # -o: treat the virtualenv as built, so a pyproject.toml newer than its stamp does not add the venv's lines.
    planned = subprocess.run(["make", "-n", "-o", ".venv/.installed-stamp", "test"], cwd=REPO_ROOT,
                             capture_output=True, text=True, check=True).stdout.splitlines()
    pytest_line = next(i for i, line in enumerate(planned) if "-m pytest" in line)
    for step in INSTALL_STEPS:
        command = f"bash {step.relative_to(REPO_ROOT)}"
        assert planned.count(command) == 1, f"`{command}` is not one line of `make prereqs`"
        assert planned.index(command) < pytest_line, f"`{command}` runs after pytest"
    assert "\nmake test " in (CI / "run").read_text()


@pytest.mark.parametrize("script", sorted(CI.glob("*.sh")) + [CI / "run"], ids=lambda p: p.name)
def test_ci_scripts_pass_shellcheck(script: Path) -> None:
    """Each CI script is ShellCheck-clean (following .ci/lib.sh), and each one run directly is executable."""
    shellcheck = Path(sys.executable).parent / "shellcheck"
    result = subprocess.run([str(shellcheck), str(script)], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    if script.name != "lib.sh":
        assert script.stat().st_mode & 0o111, f"{script} is not executable"


@pytest.fixture
def readable_copy() -> Iterator[Path]:
    """The base image step and .ci/lib.sh copied where any user can read them (pytest's tmp dirs are root-only)."""
    root = Path(tempfile.mkdtemp(prefix="vqa-prereqs-", dir="/tmp"))
    try:
        for rel in ("docker/make_base_image.sh", ".ci/lib.sh"):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / rel, root / rel)
        for path in [root, *root.rglob("*")]:
            path.chmod(0o755)
        yield root
    finally:
        shutil.rmtree(root)


def _unprivileged() -> list[str]:
    """The prefix that runs a command as a user who is not root and cannot use sudo."""
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.fail("setpriv (util-linux) is missing: it runs this test's command as `nobody`")
        return ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups"]
    sudo = shutil.which("sudo")
    if sudo and subprocess.run([sudo, "-n", "true"], capture_output=True, check=False).returncode == 0:
        pytest.skip("this user can use sudo without a password: the refusal cannot happen here")
    return []


def test_a_step_that_needs_root_without_root_or_sudo_stops_with_the_command_to_run(readable_copy: Path):
    """Run as `nobody`, the base image step refuses at once and names the one command to run as root."""
    script = readable_copy / "docker" / "make_base_image.sh"
    tag = "vqa-base:never-built-by-a-test"
    result = subprocess.run([*_unprivileged(), "env", "HOME=/tmp", "bash", str(script), tag], cwd="/tmp",
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert any("needs root" in line and "cannot use sudo" in line for line in lines), result.stderr
    assert lines[-1] == f"[make_base_image]     bash {script} {tag}", result.stderr


def test_without_apt_get_a_step_names_the_packages_it_needs_and_stops():
    """On a system without apt-get, `need_apt` names the packages to install by other means and exits 1."""
    script = f'STEP=probe; source "{CI / "lib.sh"}"; PATH=/nonexistent need_apt docker.io debootstrap; echo went-on'
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 1 and "went-on" not in result.stdout
    assert result.stderr.startswith("[probe] no apt-get here to install docker.io debootstrap:"), result.stderr
