"""LocalPipelineTrigger: starts the pipeline command as a real subprocess and tracks it by Popen or pid.

A stand-in pipeline script (records its argv, sleeps, exits with a chosen code) keeps these fast.
"""

import json
import sys
import time
from pathlib import Path

import pytest

from app.config import ConfigError, Settings
from watchdog.policy import TRIGGER, Decision, WindowStats
from watchdog.state import FINISHED, RUNNING, TriggerRef
from watchdog.triggers import PIPELINE_COMMAND, LocalPipelineTrigger, TriggerError, make_trigger

DECISION = Decision(TRIGGER, ("high_drift",), "high_drift: avg drift_score 3.100 > 2 over 60 inferences",
                    WindowStats(60, 0.8, 3.1))

STAND_IN = """
import json, sys, time
print("pipeline starting", flush=True)
summary = sys.argv[sys.argv.index("--summary") + 1]
json.dump({"argv": sys.argv[1:]}, open(summary, "w"))
time.sleep(float({sleep!r}))
print("pipeline done", flush=True)
sys.exit({code})
"""


def stand_in(tmp_path, sleep=0.0, code=0):
    script = tmp_path / "fake_pipeline.py"
    script.write_text(STAND_IN.replace("{sleep!r}", repr(sleep)).replace("{code}", str(code)))
    return [sys.executable, str(script)]


def wait_phase(trigger, ref, phase, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = trigger.status(ref)
        if status.phase == phase:
            return status
        time.sleep(0.05)
    raise AssertionError(f"never reached {phase}")


@pytest.fixture
def state_settings(tmp_path):
    return Settings(watchdog_state_file=str(tmp_path / "state" / "watchdog_state.json"))


def test_default_command_is_the_scripts_pipeline_module():
    """By default the local trigger runs `python -m scripts.pipeline`, the entry point Jenkins stages call."""
    assert PIPELINE_COMMAND[1:] == ("-m", "scripts.pipeline")
    assert isinstance(make_trigger("local", Settings()), LocalPipelineTrigger)


def test_runs_the_pipeline_with_reason_rule_and_summary_and_logs_its_output(tmp_path, state_settings):
    """The subprocess gets --reason/--rule/--summary and its output lands in a log file beside the state."""
    trigger = LocalPipelineTrigger(state_settings, command=stand_in(tmp_path))
    ref = trigger.trigger(DECISION)
    assert trigger.wait(ref, timeout=30) == 0
    argv = json.loads(Path(ref.summary_path).read_text())["argv"]
    assert argv == ["--reason", DECISION.reason, "--rule", "high_drift", "--summary", ref.summary_path]
    log_text = Path(ref.log_path).read_text()
    assert "pipeline starting" in log_text and "pipeline done" in log_text
    assert ref.log_path.startswith(str(tmp_path / "state"))


def test_status_is_running_then_finished_with_success(tmp_path, state_settings):
    """While the process lives the build is running; after exit 0 it is finished with SUCCESS."""
    trigger = LocalPipelineTrigger(state_settings, command=stand_in(tmp_path, sleep=0.5))
    ref = trigger.trigger(DECISION)
    assert trigger.status(ref).phase == RUNNING
    assert wait_phase(trigger, ref, FINISHED).result == "SUCCESS"


def test_failing_pipeline_reports_its_exit_code(tmp_path, state_settings):
    """A pipeline exiting 3 is finished with result `FAILURE (exit 3)`."""
    trigger = LocalPipelineTrigger(state_settings, command=stand_in(tmp_path, code=3))
    ref = trigger.trigger(DECISION)
    assert wait_phase(trigger, ref, FINISHED).result == "FAILURE (exit 3)"


def test_after_restart_the_pid_is_still_tracked(tmp_path, state_settings):
    """A new trigger object (a restarted watchdog) sees the old pid running, then finished."""
    first = LocalPipelineTrigger(state_settings, command=stand_in(tmp_path, sleep=0.8))
    ref = first.trigger(DECISION)
    restarted = LocalPipelineTrigger(state_settings, command=stand_in(tmp_path))
    assert restarted.status(ref).phase == RUNNING
    status = wait_phase(restarted, ref, FINISHED)
    assert status.result is None  # the exit code died with the first watchdog
    first.wait(ref)


def test_a_reused_pid_is_not_mistaken_for_the_pipeline(state_settings):
    """A live process whose command line lacks the run's summary path is not our pipeline."""
    import os

    ref = TriggerRef(kind="local", pid=os.getpid(), summary_path="/nonexistent/pipeline-x-summary.json")
    assert LocalPipelineTrigger(state_settings).status(ref).phase == FINISHED


def test_missing_executable_is_a_trigger_error(state_settings):
    """A pipeline command that cannot be started is a TriggerError, not a crash."""
    with pytest.raises(TriggerError, match="cannot start the local pipeline"):
        LocalPipelineTrigger(state_settings, command=["/nonexistent/python"]).trigger(DECISION)


def test_unknown_trigger_kind_is_a_config_error():
    """`make_trigger` names the valid choices for an unknown kind."""
    with pytest.raises(ConfigError, match="jenkins, local"):
        make_trigger("cron", Settings())
