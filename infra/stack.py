"""`make up`'s local stack: Elasticsearch, the VQA service under gunicorn and the watchdog, supervised.

`Stack` starts its children in order, restarts one that dies with exponential backoff (and says so in
the log), and stops everything loudly when one keeps dying. `up()` is what `python -m scripts.stack up` runs.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from app.config import REPO_ROOT, Settings
from app.serving.launch import ServiceStartError, start_service, stop_service
from infra.elasticsearch.launcher import ElasticsearchNode, NodeError
from infra.processes import describe_returncode, end_group

log = logging.getLogger("stack")


class StackError(RuntimeError):
    """A child of the stack could not be started or kept running; the message names it and why."""


class ChildStartError(StackError):
    """One start of one child failed (the supervisor may try again)."""


@dataclass(frozen=True)
class Backoff:
    """When to restart a dead child, and when to give up on it."""

    initial: float = 1.0  # seconds before the first restart
    maximum: float = 30.0  # the delay doubles per death in a row, up to this
    stable_seconds: float = 60.0  # a child that ran this long before dying starts afresh at `initial`
    max_failures: int = 5  # this many deaths or failed starts in a row: stop the stack

    def delay(self, failures: int) -> float:
        return min(self.maximum, self.initial * 2 ** max(0, failures - 1))


class Child:
    """One supervised part of the stack: start it, ask whether it still runs, stop it."""

    name = "child"

    def start(self) -> None:
        """Start and wait until it works; raise ChildStartError if it does not."""
        raise NotImplementedError

    def exit_status(self) -> str | None:
        """None while it runs; else how it ended, e.g. `killed by SIGKILL`."""
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def clean_up(self) -> list[int]:
        """After it died: end what it left running (returns those pids), so a restart starts clean."""
        return []

    def describe(self) -> str:
        """Where it is, for the log: a pid, a URL."""
        return ""


class ElasticsearchChild(Child):
    """The local single-node Elasticsearch; a restart keeps its port and its data."""

    name = "Elasticsearch"

    def __init__(self, node: ElasticsearchNode) -> None:
        self.node = node

    def start(self) -> None:
        try:
            self.node.start()
        except NodeError as exc:
            raise ChildStartError(f"Elasticsearch did not start: {exc}") from exc

    def exit_status(self) -> str | None:
        return self.node.exit_status()

    def stop(self) -> None:
        self.node.stop()

    def describe(self) -> str:
        return f"{self.node.url}, pid {self.node.pid}"


class ProcessChild(Child):
    """A child process started by `launch()`, stopped by `halt(proc)`.

    `own_group`: `launch()` starts it as the leader of a new session (its own process group), so what it
    leaves behind when it dies (gunicorn's workers) can be ended before the restart.
    """

    def __init__(self, name: str, launch: Callable[[], subprocess.Popen], halt: Callable[[subprocess.Popen], None],
                 *, own_group: bool = False):
        self.name = name
        self._launch = launch
        self._halt = halt
        self.own_group = own_group
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        try:
            self.proc = self._launch()
        except (ServiceStartError, OSError, subprocess.SubprocessError) as exc:
            raise ChildStartError(f"{self.name} did not start: {exc}") from exc

    def exit_status(self) -> str | None:
        if self.proc is None:
            return "not started"
        returncode = self.proc.poll()
        return None if returncode is None else describe_returncode(returncode)

    def stop(self) -> None:
        if self.proc is not None:
            self._halt(self.proc)
            self.clean_up()

    def clean_up(self) -> list[int]:
        if self.proc is None or not self.own_group:
            return []
        return end_group(self.proc.pid)

    def describe(self) -> str:
        return f"pid {self.proc.pid}" if self.proc is not None else "not started"


@dataclass
class _Watch:
    child: Child
    started_at: float = 0.0
    failures: int = 0  # deaths and failed starts in a row
    restarts: int = 0
    retry_at: float | None = None  # set while the child is dead and waiting for its restart


class Stack:
    """Children started in order and stopped in reverse; `run()` keeps them running.

    A dead child is restarted after `backoff.delay(n)` for its n-th death in a row; the others keep
    running meanwhile (the service spools events while Elasticsearch is away). After
    `backoff.max_failures` deaths in a row, `run()` raises StackError and the caller stops everything.
    """

    def __init__(self, children: Sequence[Child], *, backoff: Backoff | None = None, poll_seconds: float = 0.5):
        self._watches = [_Watch(child) for child in children]
        self.backoff = backoff or Backoff()
        self.poll_seconds = poll_seconds

    @property
    def children(self) -> list[Child]:
        return [watch.child for watch in self._watches]

    def child(self, name: str) -> Child:
        return self._watch(name).child

    def restarts(self, name: str) -> int:
        """How often the named child has been brought back."""
        return self._watch(name).restarts

    def _watch(self, name: str) -> _Watch:
        for watch in self._watches:
            if watch.child.name == name:
                return watch
        raise KeyError(f"no child named {name!r}; the stack has {[w.child.name for w in self._watches]}")

    def start(self) -> None:
        """Start every child in order; if one fails, raise (the caller's `stop()` ends the ones started)."""
        for watch in self._watches:
            watch.child.start()
            watch.started_at = time.monotonic()
            log.info("started %s (%s)", watch.child.name, watch.child.describe())

    def run(self, stop: threading.Event) -> None:
        """Supervise until `stop` is set; raises StackError when a child cannot be kept running."""
        while not stop.wait(self.poll_seconds):
            self.check(stop)

    def check(self, stop: threading.Event | None = None) -> None:
        """One round: notice dead children, schedule their restart, and restart those that are due."""
        for watch in self._watches:
            if stop is not None and stop.is_set():
                return  # a dying child during shutdown is expected, not a fault
            now = time.monotonic()
            if watch.retry_at is None:
                status = watch.child.exit_status()
                if status is None:
                    continue
                uptime = now - watch.started_at
                watch.failures = watch.failures + 1 if uptime < self.backoff.stable_seconds else 1
                left = watch.child.clean_up()
                self._give_up_if_exhausted(watch, f"died ({status})")
                delay = self.backoff.delay(watch.failures)
                log.error("%s died (%s) after %.0f s; restarting it in %.1f s (failure %d of %d in a row)%s",
                          watch.child.name, status, uptime, delay, watch.failures, self.backoff.max_failures,
                          f"; ended what it left running: pids {left}" if left else "")
                watch.retry_at = time.monotonic() + delay
            if now >= watch.retry_at:
                self._restart(watch)

    def _restart(self, watch: _Watch) -> None:
        started = time.monotonic()
        try:
            watch.child.start()
        except ChildStartError as exc:
            watch.failures += 1
            self._give_up_if_exhausted(watch, f"could not be restarted ({exc})")
            delay = self.backoff.delay(watch.failures)
            log.error("%s; next try in %.1f s (failure %d of %d in a row)", exc, delay, watch.failures,
                      self.backoff.max_failures)
            watch.retry_at = time.monotonic() + delay
            return
        watch.retry_at = None
        watch.restarts += 1
        watch.started_at = time.monotonic()
        log.warning("%s is back (%s) after a restart that took %.1f s; %d restart(s) so far",
                    watch.child.name, watch.child.describe(), watch.started_at - started, watch.restarts)

    def _give_up_if_exhausted(self, watch: _Watch, what: str) -> None:
        if watch.failures > self.backoff.max_failures:
            raise StackError(f"{watch.child.name} {what}: {watch.failures} failures in a row, "
                             f"each within {self.backoff.stable_seconds:.0f} s of its start; giving up")

    def stop(self) -> None:
        """Stop the children in reverse order (the service flushes its events before Elasticsearch goes)."""
        for watch in reversed(self._watches):
            if watch.started_at or watch.retry_at is not None:
                watch.child.stop()
        log.info("stack stopped")


@dataclass(frozen=True)
class StackOptions:
    """What `make up` starts, and where (the defaults are `make up`'s)."""

    port: int = 5000
    es_port: int = 9200  # 0: any free loopback port (kept across restarts)
    es_data_dir: Path | None = None  # default: <VQA_DATA_DIR>/elasticsearch
    trigger: str = "local"
    watchdog: bool = True
    watchdog_args: tuple[str, ...] = ()
    service_log: Path | None = None  # default: the service logs to this process's terminal
    service_timeout: float = 180.0
    backoff: Backoff = field(default_factory=Backoff)


def local_stack(settings: Settings, options: StackOptions) -> Stack:
    """The stack `make up` runs: a local Elasticsearch (unless ES_URL names one), the service, the watchdog."""
    children: list[Child] = []
    node: ElasticsearchNode | None = None
    if not settings.es_url:
        node = ElasticsearchNode(options.es_data_dir or Path(settings.data_dir) / "elasticsearch", port=options.es_port)
        children.append(ElasticsearchChild(node))
    # The pipeline confirms hot reloads through /admin/reload: a per-run token if none is set.
    admin_token = settings.admin_token or secrets.token_hex(16)

    def env() -> dict[str, str]:
        # Read at each (re)start: with es_port 0 the node's port is known only once it has started.
        return {**settings.to_env(), "ES_URL": node.url if node is not None else settings.es_url,
                "VQA_ADMIN_TOKEN": admin_token, "PORT": str(options.port),
                "VQA_SERVICE_URL": f"http://{_local_host(settings.bind_host)}:{options.port}"}

    # Each child leads its own process group: Ctrl-C reaches only this supervisor, which stops them in
    # order, and a dead child's leftovers can be ended as a group.
    children.append(ProcessChild(
        "service",
        lambda: start_service(env(), options.port, host=settings.bind_host, log_path=options.service_log,
                              timeout=options.service_timeout, new_session=True),
        stop_service, own_group=True,
    ))
    if options.watchdog:
        cmd = [sys.executable, "-m", "watchdog", "--trigger", options.trigger, *options.watchdog_args]
        children.append(ProcessChild(
            "watchdog",
            lambda: subprocess.Popen(cmd, cwd=REPO_ROOT, env={**os.environ, **env()}, start_new_session=True),
            stop_service, own_group=True,
        ))
    return Stack(children, backoff=options.backoff)


def _local_host(bind_host: str) -> str:
    return "127.0.0.1" if bind_host in ("", "0.0.0.0", "::") else bind_host


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def up(settings: Settings, options: StackOptions) -> int:
    """Start the stack, print where everything is, supervise it until Ctrl-C or SIGTERM; 1 if it gave up."""
    stack = local_stack(settings, options)
    # SIGTERM stops as Ctrl-C does: children first, then exit. SIGINT explicitly too: a shell starts a
    # background job with SIGINT ignored, and Python then never raises KeyboardInterrupt.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    try:
        stack.start()
        print(_banner(stack, settings, options), flush=True)
        stack.run(threading.Event())
    except KeyboardInterrupt:
        return 0
    except StackError as exc:
        log.critical("%s; stopping the whole stack", exc)
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the shutdown short
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C may
        stack.stop()
    return 0


def _banner(stack: Stack, settings: Settings, options: StackOptions) -> str:
    node = next((c.node for c in stack.children if isinstance(c, ElasticsearchChild)), None)
    es_url = node.url if node is not None else settings.es_url
    service_url = f"http://{_local_host(settings.bind_host)}:{options.port}"
    exposed = "" if settings.bind_host in ("127.0.0.1", "localhost", "::1") else (
        f"\n                 bound to {settings.bind_host}:{options.port}: reachable from the network (VQA_BIND_HOST)")
    watchdog = f"trigger={options.trigger}, state in {settings.watchdog_state_file}" if options.watchdog else "off"
    return f"""
VQA stack is up (a child that dies is restarted; the log says so)
  service        {service_url}   (try: curl -s -X POST {service_url}/predict -H 'Content-Type: application/json' \\
                   -d '{{"image_path": "test/0.png", "question": "what color is the shape?"}}'){exposed}
  elasticsearch  {es_url}   (recent events: ES_URL={es_url} .venv/bin/python -m scripts.logs --since 10m)
  watchdog       {watchdog}
Ctrl-C stops everything.
"""
