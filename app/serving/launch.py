"""Run the service under gunicorn as a child process and wait until it is ready.

One way to start it, shared by `make up` (infra/stack.py), the benchmark, the demo and the tests.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from app.config import REPO_ROOT


class ServiceStartError(RuntimeError):
    """gunicorn exited or did not become ready; the message ends with its log."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float, log_path: Path | None = None) -> None:
    """Poll `<url>/readyz` until it answers 200; raise if the process dies or time runs out."""
    tail = (lambda: log_path.read_text()[-2000:]) if log_path else (lambda: "see its output above")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceStartError(f"gunicorn exited with {proc.returncode}: {tail()}")
        try:
            if requests.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    proc.terminate()
    raise ServiceStartError(f"the service at {url} was not ready after {timeout:.0f}s: {tail()}")


def start_service(env: dict[str, str], port: int, *, host: str = "127.0.0.1", log_path: Path | None = None,
                  extra_args: list[str] | None = None, timeout: float = 120.0,
                  new_session: bool = False, app_spec: str = "app:create_app()",
                  config: Path | None = REPO_ROOT / "gunicorn.conf.py") -> subprocess.Popen:
    """Start `gunicorn app:create_app()` with `env` over os.environ; returns once /readyz is 200.

    The log is appended to, so a restarted service keeps the earlier run's lines. `new_session`: gunicorn
    and its workers get a process group of their own, which a supervisor can end as a whole. `app_spec`
    and `config` (None: gunicorn's defaults and `extra_args` only) start another app the same way.
    """
    out = log_path.open("a") if log_path else None
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", *(["-c", str(config)] if config else []), "--bind", f"{host}:{port}",
             *(extra_args or []), app_spec],
            cwd=REPO_ROOT, env={**os.environ, **env, "PORT": str(port)}, stdout=out,
            stderr=subprocess.STDOUT if out else None, start_new_session=new_session,
        )
    finally:
        if out is not None:
            out.close()  # the child has its own copy
    # A wildcard bind answers on loopback; a specific address only on itself.
    ready_host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else f"[{host}]" if ":" in host else host
    wait_ready(f"http://{ready_host}:{port}", proc, timeout, log_path)
    return proc


def stop_service(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM (gunicorn flushes the shipper on worker exit), SIGKILL after `timeout`; always reaps."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()
