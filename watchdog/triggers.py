"""Ways to start retraining: a Jenkins job with parameters, or the local pipeline as a subprocess.

Both answer `trigger(decision) -> TriggerRef` and `status(ref) -> BuildStatus`; failures are a
`TriggerError` that the loop logs and retries on its next poll, never a crash.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import jenkins
import requests

from app.config import REPO_ROOT, ConfigError, Settings
from app.events.elastic import public_url
from watchdog import WatchdogError
from watchdog.policy import Decision
from watchdog.state import FINISHED, QUEUED, RUNNING, UNKNOWN, TriggerRef

log = logging.getLogger(__name__)

JENKINS = "jenkins"
LOCAL = "local"
TRIGGER_KINDS = (JENKINS, LOCAL)

# The Jenkinsfile's `parameters {}` block declares exactly these (tests/test_jenkinsfile.py checks).
JENKINS_PARAMETERS = ("REASON", "RULE", "AVG_SCORE", "SAMPLE_COUNT")
JENKINS_TIMEOUT_SECONDS = 10.0

# The local pipeline: the same entry point each Jenkinsfile stage calls.
PIPELINE_COMMAND = (sys.executable, "-m", "scripts.pipeline")


class TriggerError(WatchdogError):
    """Retraining could not be started or checked (server down, bad credentials, no permission)."""


@dataclass(frozen=True)
class BuildStatus:
    """Where a triggered build is; `ref` may have learnt more (the Jenkins build number)."""

    phase: str  # QUEUED, RUNNING, FINISHED or UNKNOWN
    ref: TriggerRef
    result: str | None = None  # e.g. SUCCESS / FAILURE, once finished, when known


class Trigger(Protocol):
    kind: str
    started_phase: str  # the phase of a build right after `trigger` returned

    def trigger(self, decision: Decision) -> TriggerRef: ...

    def status(self, ref: TriggerRef) -> BuildStatus: ...


class JenkinsTrigger:
    """Builds `settings.jenkins_job` with parameters through python-jenkins.

    python-jenkins fetches the CSRF crumb from `/crumbIssuer/api/json` itself and keeps the
    session cookie the crumb is bound to.
    """

    kind = JENKINS
    started_phase = QUEUED

    def __init__(self, settings: Settings, *, timeout: float = JENKINS_TIMEOUT_SECONDS):
        if not settings.jenkins_url:
            raise ConfigError("JENKINS_URL is empty: set it, or use the local trigger (WATCHDOG_TRIGGER=local)")
        if bool(settings.jenkins_user) != bool(settings.jenkins_api_token):
            raise ConfigError("set both JENKINS_USER and JENKINS_API_TOKEN, or neither (anonymous)")
        self.job = settings.jenkins_job
        self.url = public_url(settings.jenkins_url)  # never a user:password@ part in messages
        self._token = settings.jenkins_api_token
        self.server = jenkins.Jenkins(
            settings.jenkins_url,
            username=settings.jenkins_user or None,
            password=settings.jenkins_api_token or None,
            timeout=timeout,
        )

    @staticmethod
    def parameters(decision: Decision) -> dict[str, str]:
        """The build parameters, named as the Jenkinsfile declares them."""
        stats = decision.stats
        avg = "" if stats.avg_quality is None else f"{stats.avg_quality:.4f}"
        values = (decision.reason, decision.rule, avg, str(stats.sample_count))
        return dict(zip(JENKINS_PARAMETERS, values, strict=True))

    def trigger(self, decision: Decision) -> TriggerRef:
        """Queue a build; the reference holds the queue item id."""
        try:
            queue_id = self.server.build_job(self.job, parameters=self.parameters(decision))
        except (jenkins.JenkinsException, requests.RequestException) as exc:
            raise TriggerError(
                f"Jenkins {self.url} job {self.job!r}: build request failed: {self._clean(exc)}"
            ) from exc
        log.info("Jenkins queued job %s as queue item %s", self.job, queue_id)
        return TriggerRef(kind=JENKINS, job=self.job, queue_id=queue_id)

    def status(self, ref: TriggerRef) -> BuildStatus:
        """Queue item -> build number -> build info (`building`, `result`).

        Raises `TriggerError` when Jenkins cannot be asked (the caller keeps the last known
        phase); a queue item or build Jenkins no longer knows is UNKNOWN.
        """
        if ref.kind != JENKINS:
            return BuildStatus(UNKNOWN, ref)
        try:
            if ref.build_number is None:
                item = self.server.get_queue_item(ref.queue_id)
                if item.get("cancelled"):
                    return BuildStatus(FINISHED, ref, "CANCELLED")
                executable = item.get("executable")
                if not executable:
                    return BuildStatus(QUEUED, ref)
                ref = replace(ref, build_number=int(executable["number"]))
            info = self.server.get_build_info(ref.job, ref.build_number)
        except jenkins.JenkinsException as exc:
            # python-jenkins turns a 404 into this same exception type, told apart by its message.
            if "does not exist" in str(exc):
                log.warning("Jenkins no longer knows %s: %s", ref.label, self._clean(exc))
                return BuildStatus(UNKNOWN, ref)
            raise TriggerError(f"Jenkins {self.url}: status of {ref.label} failed: {self._clean(exc)}") from exc
        except requests.RequestException as exc:
            raise TriggerError(f"Jenkins {self.url}: status of {ref.label} failed: {self._clean(exc)}") from exc
        if info.get("building"):
            return BuildStatus(RUNNING, ref)
        return BuildStatus(FINISHED, ref, info.get("result"))

    def _clean(self, exc: BaseException) -> str:
        """First line of the error (Jenkins appends whole HTML pages), with the token masked."""
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return text.replace(self._token, "***") if self._token else text


class LocalPipelineTrigger:
    """Runs `python -m scripts.pipeline --reason R --rule R --summary PATH` in the background.

    Output goes to a log file beside the state file. The process is tracked by its Popen while
    this watchdog lives and by pid (checked against the unique summary path in its command line)
    after a restart.
    """

    kind = LOCAL
    started_phase = RUNNING

    def __init__(self, settings: Settings, *, command: Sequence[str] = PIPELINE_COMMAND):
        self.command = list(command)
        self.log_dir = Path(settings.watchdog_state_file).parent
        # The pipeline runs with the watchdog's own settings (the same data, adapters and service).
        self.env = {**os.environ, **settings.to_env()}
        self._procs: dict[int, subprocess.Popen] = {}

    def trigger(self, decision: Decision) -> TriggerRef:
        """Start the pipeline; returns at once with the pid, log and summary paths."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        log_path = self.log_dir / f"pipeline-{stamp}.log"
        summary_path = self.log_dir / f"pipeline-{stamp}-summary.json"
        argv = [*self.command, "--reason", decision.reason, "--rule", decision.rule, "--summary", str(summary_path)]
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            with open(log_path, "ab") as out:
                # Own session: stopping the watchdog (Ctrl-C, SIGTERM) must not kill a half-done pipeline.
                proc = subprocess.Popen(
                    argv, cwd=REPO_ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=out,
                    stderr=subprocess.STDOUT, start_new_session=True,
                )
        except OSError as exc:
            raise TriggerError(f"cannot start the local pipeline {argv[:3]}: {exc}") from exc
        self._procs[proc.pid] = proc
        log.info("local pipeline started: pid %s, log %s", proc.pid, log_path)
        return TriggerRef(kind=LOCAL, pid=proc.pid, log_path=str(log_path), summary_path=str(summary_path))

    def status(self, ref: TriggerRef) -> BuildStatus:
        """RUNNING while the process lives; FINISHED with SUCCESS/FAILURE when this watchdog started it."""
        if ref.kind != LOCAL or ref.pid is None:
            return BuildStatus(UNKNOWN, ref)
        proc = self._procs.get(ref.pid)
        if proc is not None:
            code = proc.poll()
            if code is None:
                return BuildStatus(RUNNING, ref)
            del self._procs[ref.pid]
            return BuildStatus(FINISHED, ref, "SUCCESS" if code == 0 else f"FAILURE (exit {code})")
        # Started before a restart: the exit code is gone, only "still running or not" is knowable.
        return BuildStatus(RUNNING if _is_our_process(ref) else FINISHED, ref)

    def wait(self, ref: TriggerRef, timeout: float | None = None) -> int:
        """Wait for a pipeline this watchdog started; its exit code (for `--once` and tests)."""
        proc = self._procs[ref.pid]  # type: ignore[index]
        return proc.wait(timeout)


def _is_our_process(ref: TriggerRef) -> bool:
    """Is `ref.pid` alive and still the pipeline we started (not a zombie, not a reused pid)?"""
    proc = Path("/proc") / str(ref.pid)
    try:
        stat = (proc / "stat").read_text()
        cmdline = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X") and ref.summary_path in cmdline


def make_trigger(kind: str, settings: Settings) -> Trigger:
    """The trigger named `kind`; ConfigError for an unknown kind or missing Jenkins settings."""
    if kind == JENKINS:
        return JenkinsTrigger(settings)
    if kind == LOCAL:
        return LocalPipelineTrigger(settings)
    raise ConfigError(f"unknown trigger {kind!r}: use one of {', '.join(TRIGGER_KINDS)} (WATCHDOG_TRIGGER)")
