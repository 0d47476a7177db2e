"""The local Elasticsearch launcher: the CLI starts a daemon with a pid file, reports it, stops it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request

import pytest

from app.config import REPO_ROOT
from infra.elasticsearch import launcher


def _cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "infra.elasticsearch.launcher", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_start_status_stop_manage_a_daemon_on_the_requested_port(tmp_path):
    """`start --port P` returns with the node healthy on P and a pid file; `status` says so; `stop` ends it."""
    port, data = _free_port(), tmp_path / "node"
    started = _cli("start", "--port", str(port), "--data-dir", str(data))
    try:
        assert started.returncode == 0, started.stderr[-2000:]
        assert f"at http://127.0.0.1:{port}" in started.stdout
        pid = int((data / launcher.PID_FILE_NAME).read_text())
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_cluster/health", timeout=10) as resp:
            health = json.loads(resp.read())
        assert health["status"] in ("green", "yellow") and health["number_of_nodes"] == 1
        status = _cli("status", "--data-dir", str(data))
        assert status.returncode == 0 and f"running at http://127.0.0.1:{port} (pid {pid}" in status.stdout
    finally:
        stopped = _cli("stop", "--data-dir", str(data))
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert not (data / launcher.PID_FILE_NAME).exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    after = _cli("status", "--data-dir", str(data))
    assert after.returncode == 1 and "not running" in after.stdout


def test_the_version_file_pins_one_exact_version():
    """elk/VERSION holds one x.y.z version of the 9.x line, which the Python client also speaks."""
    version = launcher.es_version()
    assert version.startswith("9.") and len(version.split(".")) == 3


def test_bad_port_is_a_config_error(tmp_path):
    """A port outside 0..65535 is refused before anything starts."""
    with pytest.raises(launcher.NodeConfigError, match="port must be"):
        launcher.ElasticsearchNode(tmp_path, port=70000)
