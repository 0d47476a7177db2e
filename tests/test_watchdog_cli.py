"""`python -m watchdog` as a subprocess: identity of the package, configuration errors, end-to-end polls.

The end-to-end runs use the real Elasticsearch and the Jenkins test server, configured only through
the environment variables an operator would set.
"""

import importlib.metadata
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

import watchdog
from app.config import FIELDS, REPO_ROOT, Settings
from app.events import schema as events
from tests.jenkins_server import CRUMB_FIELD, JenkinsTestServer, closed_port_url
from tests.watchdog_support import degraded_window, index_events, unique_prefix, watchdog_events

TOKEN = "9988776655443322110099887766554433"


CONSOLE_SCRIPT = Path(sys.executable).parent / "vqa-watchdog"


def run_watchdog(env: dict[str, str], *args: str, cwd=REPO_ROOT, console: bool = False) -> subprocess.CompletedProcess:
    """Run the CLI with only `env` as configuration (the caller's own settings variables removed)."""
    base = {k: v for k, v in os.environ.items() if k not in {f.metadata["env"] for f in FIELDS}}
    entry = [str(CONSOLE_SCRIPT)] if console else [sys.executable, "-m", "watchdog"]
    return subprocess.run([*entry, *args], cwd=cwd, env={**base, **env}, capture_output=True, text=True, timeout=120)


def test_import_watchdog_is_this_project():
    """`import watchdog` is this repo's package, not PyPI's filesystem-events `watchdog`."""
    assert watchdog.__project__ == "vqa-selfheal"
    assert REPO_ROOT in __import__("pathlib").Path(watchdog.__file__).resolve().parents


def test_pypi_watchdog_is_not_installed_beside_it():
    """PyPI's `watchdog` would shadow this package when run outside the repo; it must not be installed."""
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.distribution("watchdog")


def test_python_m_watchdog_and_the_console_script_run_this_cli(tmp_path):
    """`python -m watchdog --help` (from the repo) and `vqa-watchdog --help` (from anywhere) work."""
    module = run_watchdog({}, "--help")
    console = run_watchdog({}, "--help", cwd=tmp_path, console=True)
    for proc in (module, console):
        assert proc.returncode == 0, proc.stderr
        assert "--dry-run" in proc.stdout and "Poll Elasticsearch" in proc.stdout


def _fake_pypi_watchdog(root: Path) -> Path:
    """A site folder holding what `pip install watchdog` leaves: its dist-info and a `watchdog` package."""
    (root / "watchdog").mkdir(parents=True)
    (root / "watchdog" / "__init__.py").write_text('"""PyPI watchdog stand-in"""\n')
    info = root / "watchdog-6.0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: watchdog\nVersion: 6.0.0\n")
    (info / "RECORD").write_text("")
    return root


@pytest.mark.parametrize("console", [False, True], ids=["python -m watchdog", "vqa-watchdog"])
def test_pypi_watchdog_beside_the_project_fails_loudly_with_the_fix(tmp_path, console):
    """With PyPI's watchdog installed, both entry points exit non-zero and say to uninstall it."""
    site = _fake_pypi_watchdog(tmp_path / "site")
    proc = run_watchdog({"PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{site}" if not console else str(site)},
                        "--help", cwd=REPO_ROOT if not console else tmp_path, console=console)
    assert proc.returncode != 0
    assert "PyPI's `watchdog` package (6.0.0) is installed" in proc.stderr
    assert "pip uninstall watchdog" in proc.stderr


@pytest.mark.parametrize(("env", "args", "message"), [
    ({}, ["--once", "--trigger", "local"], "ES_URL is empty"),
    ({"ES_URL": "http://127.0.0.1:9"}, ["--once", "--trigger", "jenkins"], "JENKINS_URL is empty"),
    ({"ES_URL": "http://127.0.0.1:9", "JENKINS_URL": "http://127.0.0.1:9", "JENKINS_USER": "u"}, ["--once"],
     "JENKINS_API_TOKEN"),
    ({"ES_URL": "http://127.0.0.1:9", "WATCHDOG_MIN_SAMPLES": "lots"}, ["--once"], "WATCHDOG_MIN_SAMPLES='lots'"),
    ({"ES_URL": "http://127.0.0.1:9", "WATCHDOG_TRIGGER": "cron"}, ["--once"],
     "WATCHDOG_TRIGGER='cron' is not one of: jenkins, local"),
    ({"ES_URL": "ftp://nowhere"}, ["--once", "--trigger", "local"], "not an http(s)://host"),
    ({"ES_URL": "http://127.0.0.1:9"}, ["--once", "--trigger", "local", "--interval", "0"], "must be positive"),
])
def test_bad_configuration_exits_2_with_a_message(tmp_path, env, args, message):
    """Each configuration mistake exits with status 2 and names what to fix, before any poll."""
    proc = run_watchdog({"WATCHDOG_STATE_FILE": str(tmp_path / "s.json"), **env}, *args)
    assert proc.returncode == 2, proc.stderr
    assert "configuration error" in proc.stderr and message in proc.stderr


def test_damaged_state_file_exits_2(tmp_path):
    """A damaged state file stops the watchdog rather than forgetting the last trigger."""
    state = tmp_path / "state.json"
    state.write_text("{half")
    proc = run_watchdog({"ES_URL": "http://127.0.0.1:9", "WATCHDOG_STATE_FILE": str(state)}, "--once",
                        "--trigger", "local")
    assert proc.returncode == 2 and "state.json is not valid" in proc.stderr


def test_once_with_elasticsearch_down_exits_1_and_says_why(tmp_path):
    """--once against a closed Elasticsearch port logs the error and exits 1; no state is written."""
    proc = run_watchdog({"ES_URL": closed_port_url(), "WATCHDOG_STATE_FILE": str(tmp_path / "s.json")},
                        "--once", "--trigger", "local")
    assert proc.returncode == 1
    assert "poll skipped, will retry next poll" in proc.stderr
    assert not (tmp_path / "s.json").exists()


@pytest.fixture
def stack(es_client, es_url, tmp_path):
    """A degraded window in Elasticsearch, a Jenkins test server with a slow build, and the env to reach both."""
    settings = Settings(es_url=es_url, es_index_prefix=unique_prefix())
    index_events(es_client, settings, degraded_window(datetime.now(UTC), count=80, quality=0.3))
    with JenkinsTestServer(user="watchdog", token=TOKEN, queue_seconds=0.1, build_seconds=60) as server:
        env = {
            "ES_URL": es_url, "ES_INDEX_PREFIX": settings.es_index_prefix,
            "WATCHDOG_STATE_FILE": str(tmp_path / "state.json"), "WATCHDOG_TRIGGER": "jenkins",
            "JENKINS_URL": server.url, "JENKINS_USER": "watchdog", "JENKINS_API_TOKEN": TOKEN,
            "JENKINS_JOB": "vqa-retrain",
        }
        yield settings, server, env


def test_once_dry_run_end_to_end_decides_but_changes_nothing(es_client, stack, tmp_path):
    """`--once --dry-run` logs a trigger decision for low quality, yet posts nothing and writes nothing."""
    settings, server, env = stack
    proc = run_watchdog(env, "--once", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "[dry-run] decision=trigger rule=low_quality samples=80" in proc.stderr
    assert server.posts() == []
    assert not (tmp_path / "state.json").exists()
    assert watchdog_events(es_client, settings) == []


def test_once_end_to_end_triggers_jenkins_then_suppresses(es_client, stack, tmp_path):
    """`--once` posts one build (crumb, auth, parameters), saves state, records the event; a rerun suppresses."""
    settings, server, env = stack
    first = run_watchdog(env, "--once")
    assert first.returncode == 0, first.stderr
    assert "decision=trigger rule=low_quality samples=80 build=vqa-retrain-queue-1" in first.stderr
    assert TOKEN not in first.stderr + first.stdout
    (post,) = server.posts()
    assert post.headers[CRUMB_FIELD] in server.crumbs.values()
    assert post.params["RULE"] == "low_quality" and post.params["SAMPLE_COUNT"] == "80"
    assert post.params["AVG_SCORE"] == "0.3000"
    state = json.loads((tmp_path / "state.json").read_text())
    assert (state["trigger_kind"], state["ref"]["queue_id"], state["last_rule"]) == ("jenkins", 1, "low_quality")

    dry = run_watchdog(env, "--once", "--dry-run")  # the build is running on the server now
    assert "[dry-run] decision=suppressed" in dry.stderr and "vqa-retrain#1 is still running" in dry.stderr
    again = run_watchdog(env, "--once")
    assert again.returncode == 0 and "decision=suppressed" in again.stderr
    assert len(server.posts()) == 1
    decisions = [e[events.DECISION] for e in watchdog_events(es_client, settings)]
    assert decisions == ["trigger", "suppressed"]


def test_once_with_jenkins_down_exits_1_and_keeps_no_state(es_client, stack, tmp_path):
    """--once whose trigger fails (Jenkins down) exits 1, records `trigger_failed`, and saves no state."""
    settings, _server, env = stack
    proc = run_watchdog({**env, "JENKINS_URL": closed_port_url()}, "--once")
    assert proc.returncode == 1
    assert "decision=trigger_failed" in proc.stderr and "will retry next poll" in proc.stderr
    assert not (tmp_path / "state.json").exists()
    assert [e[events.DECISION] for e in watchdog_events(es_client, settings)] == ["trigger_failed"]


def test_long_running_mode_stops_cleanly_on_sigterm(tmp_path):
    """Without --once it keeps polling (here through an ES outage) and exits 0 on SIGTERM."""
    import signal
    import time

    base = {k: v for k, v in os.environ.items() if k not in {f.metadata["env"] for f in FIELDS}}
    env = {**base, "ES_URL": closed_port_url(), "WATCHDOG_STATE_FILE": str(tmp_path / "s.json")}
    log_path = tmp_path / "watchdog.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "watchdog", "--trigger", "local", "--interval", "0.1"],
                                cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while log_path.read_text().count("poll skipped") < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = log_path.read_text()
    assert text.count("poll skipped") >= 2 and "received SIGTERM" in text and "watchdog stopped" in text
