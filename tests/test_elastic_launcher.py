"""The local Elasticsearch launcher: the CLI starts a daemon with a pid file, reports it, stops it.

A pid file is trusted only when it names a live node of its data directory: not a zombie, not a
dead pid, not a pid since reused by another program.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from app.config import REPO_ROOT
from infra import processes
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
    # Gone, or exited and waiting for init to reap it (the CLI that started it is no longer its parent).
    assert processes.classify(pid) in (processes.GONE, processes.ZOMBIE)
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


def _wait_state(pid: int, state: str, timeout: float = 30.0) -> str | None:
    deadline = time.monotonic() + timeout
    while processes.process_state(pid) != state and time.monotonic() < deadline:
        time.sleep(0.05)
    return processes.process_state(pid)


def test_a_killed_nodes_zombie_does_not_stop_the_cli_from_starting_a_new_node(tmp_path):
    """After kill -9 of a node whose parent has not reaped it, `start` on its data dir starts a new node."""
    data = tmp_path / "node"
    node = launcher.ElasticsearchNode(data, port=0)
    node.start()
    killed = node.pid
    try:
        os.kill(killed, signal.SIGKILL)
        # This process is the parent and does not reap it (as `make up` did not): it stays a zombie.
        assert _wait_state(killed, "Z") == "Z"
        started = _cli("start", "--port", "0", "--data-dir", str(data))
        assert started.returncode == 0, started.stdout + started.stderr[-2000:]
        stale = f"ignoring the stale pid file {data / launcher.PID_FILE_NAME}: pid {killed} is a zombie"
        assert stale in started.stderr, started.stderr[-2000:]
        new_pid = int((data / launcher.PID_FILE_NAME).read_text())
        assert new_pid != killed
        status = _cli("status", "--data-dir", str(data))
        assert status.returncode == 0 and f"(pid {new_pid}, cluster" in status.stdout, status.stdout
    finally:
        stopped = _cli("stop", "--data-dir", str(data))
        node._proc.wait(10)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout


def test_a_pid_file_naming_a_dead_pid_or_another_program_is_stale_and_nothing_is_signalled(tmp_path):
    """`status` calls such a pid file stale, `stop` removes it and leaves the program that now has the pid alone."""
    data = tmp_path / "node"
    data.mkdir()
    node = launcher.ElasticsearchNode(data, port=0)
    gone = subprocess.Popen(["true"])
    gone.wait()
    node.pid_file.write_text(str(gone.pid))
    assert node.pid_state() == processes.GONE and not node.running()
    status = _cli("status", "--data-dir", str(data))
    assert status.returncode == 1 and f"stale pid file {node.pid_file}: pid {gone.pid} is not running" in status.stdout

    other = subprocess.Popen(["sleep", "60"])
    try:
        node.pid_file.write_text(str(other.pid))
        assert node.pid_state() == processes.OTHER and not node.running()
        stopped = _cli("stop", "--data-dir", str(data))
        assert stopped.returncode == 0 and "removed the stale pid file" in stopped.stdout, stopped.stdout
        assert not node.pid_file.exists()
        assert other.poll() is None, "stop signalled a program that is not the node"
    finally:
        other.kill()
        other.wait()

    zombie = subprocess.Popen(["true"])
    assert _wait_state(zombie.pid, "Z") == "Z"
    node.pid_file.write_text(str(zombie.pid))
    assert node.pid_state() == processes.ZOMBIE and not node.running()
    zombie.wait()
