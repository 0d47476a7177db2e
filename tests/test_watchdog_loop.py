"""One watchdog poll end to end in-process: real Elasticsearch, the Jenkins test server, a state file.

Covers trigger then suppress, restart, build status tracking, and ES / Jenkins being down or refusing.
"""

import logging
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.config import Settings
from app.events import schema as events
from app.events.elastic import make_client
from tests.jenkins_server import DEFAULT_TOKEN as TOKEN
from tests.jenkins_server import JenkinsTestServer, closed_port_url
from tests.watchdog_support import degraded_window, index_events, unique_prefix, watchdog_events
from watchdog import policy
from watchdog.loop import Watchdog
from watchdog.sources import ElasticsearchSource
from watchdog.state import FINISHED, QUEUED, RUNNING, StateStore
from watchdog.triggers import JenkinsTrigger


@pytest.fixture
def watchdog_settings(es_url, jenkins_server, tmp_path):
    return Settings(
        es_url=es_url, es_index_prefix=unique_prefix(), watchdog_min_samples=50, watchdog_cooldown_minutes=30,
        watchdog_state_file=str(tmp_path / "state.json"), jenkins_url=jenkins_server.url,
        jenkins_user="watchdog", jenkins_api_token=TOKEN, jenkins_job="vqa-retrain",
    )


def make_watchdog(watchdog_settings, *, dry_run=False, jenkins_url=None, token=None):
    overrides = {k: v for k, v in (("jenkins_url", jenkins_url), ("jenkins_api_token", token)) if v}
    trigger_settings = replace(watchdog_settings, **overrides)
    client = make_client(watchdog_settings, max_retries=0)
    return Watchdog(watchdog_settings, ElasticsearchSource(client, watchdog_settings), JenkinsTrigger(trigger_settings),
                    StateStore(watchdog_settings.watchdog_state_file), dry_run=dry_run)


@pytest.fixture
def degraded(es_client, watchdog_settings):
    now = datetime.now(UTC)
    index_events(es_client, watchdog_settings, degraded_window(now, count=60, quality=0.4))
    return now


def test_triggers_once_then_suppresses_while_the_build_runs(es_client, watchdog_settings, jenkins_server, degraded):
    """Low quality triggers one Jenkins build; the next poll is suppressed and nothing more is posted."""
    wd = make_watchdog(watchdog_settings)
    first = wd.poll()
    assert (first.decision, first.rules) == (policy.TRIGGER, (policy.LOW_QUALITY,))
    assert len(jenkins_server.posts()) == 1
    saved = StateStore(watchdog_settings.watchdog_state_file).load()
    assert (saved.last_rule, saved.ref.queue_id, saved.build_phase) == ("low_quality", 1, QUEUED)

    second = wd.poll()
    assert second.decision == policy.SUPPRESSED
    assert len(jenkins_server.posts()) == 1
    recorded = watchdog_events(es_client, watchdog_settings)
    assert [e[events.DECISION] for e in recorded] == [policy.TRIGGER, policy.SUPPRESSED]
    assert recorded[0][events.BUILD_ID] == "vqa-retrain-queue-1"
    assert recorded[0][events.SAMPLE_COUNT] == 60 and recorded[0][events.AVG_QUALITY] == pytest.approx(0.4)


def test_build_status_is_followed_and_saved(watchdog_settings, jenkins_server, degraded):
    """Polls follow the build from queued to running to finished, saving its number and result."""
    wd = make_watchdog(watchdog_settings)
    wd.poll()
    phases = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and wd.state.build_phase != FINISHED:
        wd.poll()
        phases.append(wd.state.build_phase)
        time.sleep(0.1)
    assert RUNNING in phases and phases[-1] == FINISHED
    saved = StateStore(watchdog_settings.watchdog_state_file).load()
    assert (saved.build_phase, saved.build_result, saved.ref.build_number) == (FINISHED, "SUCCESS", 1)
    # finished, but the cooldown still holds
    decision = wd.poll()
    assert decision.decision == policy.SUPPRESSED and "cooldown" in decision.reason
    assert len(jenkins_server.posts()) == 1


def test_restart_neither_retriggers_nor_forgets(watchdog_settings, jenkins_server, degraded):
    """A new watchdog process on the same state file suppresses instead of posting a second build."""
    make_watchdog(watchdog_settings).poll()
    restarted = make_watchdog(watchdog_settings)
    assert restarted.state.ref.queue_id == 1
    decision = restarted.poll()
    assert decision.decision == policy.SUPPRESSED
    assert len(jenkins_server.posts()) == 1


def test_cooldown_expiry_allows_the_next_trigger(watchdog_settings, jenkins_server, degraded):
    """After the build finished and the cooldown passed, the still-degraded window triggers again."""
    wide = replace(watchdog_settings, watchdog_window_minutes=600)  # same events, a later `now`
    wd = make_watchdog(wide)
    wd.poll()
    time.sleep(1.0)  # the test build takes 0.8 s in all
    assert wd.poll(datetime.now(UTC) + timedelta(minutes=29)).decision == policy.SUPPRESSED
    decision = wd.poll(datetime.now(UTC) + timedelta(minutes=31))
    assert decision.decision == policy.TRIGGER
    assert len(jenkins_server.posts()) == 2


def test_elasticsearch_down_logs_and_triggers_nothing(watchdog_settings, jenkins_server, caplog):
    """With Elasticsearch unreachable the poll logs an error, returns no decision and posts nothing."""
    down = replace(watchdog_settings, es_url=closed_port_url())
    wd = make_watchdog(down)
    with caplog.at_level(logging.ERROR, logger="watchdog.loop"):
        assert wd.poll() is None
    assert "poll skipped, will retry next poll" in caplog.text and "failed" in caplog.text
    assert jenkins_server.posts() == []
    assert not StateStore(watchdog_settings.watchdog_state_file).path.exists()


def test_jenkins_down_is_trigger_failed_then_retried(es_client, watchdog_settings, jenkins_server, degraded, caplog):
    """Jenkins down: `trigger_failed` is logged and recorded, no state; the next poll (Jenkins up) triggers."""
    wd = make_watchdog(watchdog_settings, jenkins_url=closed_port_url())
    with caplog.at_level(logging.ERROR, logger="watchdog.loop"):
        failed = wd.poll()
    assert failed.decision == policy.TRIGGER_FAILED and "build request failed" in failed.reason
    assert "will retry next poll" in caplog.text
    assert not StateStore(watchdog_settings.watchdog_state_file).path.exists()

    wd.trigger = JenkinsTrigger(watchdog_settings)  # Jenkins is back
    assert wd.poll().decision == policy.TRIGGER
    assert [e[events.DECISION] for e in watchdog_events(es_client, watchdog_settings)] == [
        policy.TRIGGER_FAILED, policy.TRIGGER]


@pytest.mark.parametrize(("server_kwargs", "token", "status"), [
    ({}, "ffffffffffffffffffffffffffffffff", "401"),
    ({"forbid_build": True}, None, "403"),
])
def test_jenkins_refusing_is_trigger_failed_without_state(watchdog_settings, degraded, caplog, server_kwargs, token,
                                                          status):
    """401 (bad token) and 403 (no build permission) give `trigger_failed` naming the status; token unlogged."""
    caplog.set_level(logging.DEBUG)
    with JenkinsTestServer(token=TOKEN, **server_kwargs) as server:
        wd = make_watchdog(watchdog_settings, jenkins_url=server.url, token=token)
        decision = wd.poll()
        assert server.queue == {}
    assert decision.decision == policy.TRIGGER_FAILED and status in decision.reason
    assert not StateStore(watchdog_settings.watchdog_state_file).path.exists()
    assert TOKEN not in caplog.text and (token or TOKEN) not in caplog.text


def test_jenkins_down_while_a_build_runs_keeps_it_blocking(watchdog_settings, jenkins_server, degraded):
    """If Jenkins cannot be asked about the running build, it stays `queued`/`running` and keeps blocking."""
    wide = replace(watchdog_settings, watchdog_window_minutes=600)  # same events, a later `now`
    make_watchdog(wide).poll()
    wd = make_watchdog(wide, jenkins_url=closed_port_url())
    decision = wd.poll(datetime.now(UTC) + timedelta(hours=2))  # long after the cooldown
    assert decision.decision == policy.SUPPRESSED and "still queued" in decision.reason
    assert StateStore(watchdog_settings.watchdog_state_file).load().build_phase == QUEUED


def test_dry_run_triggers_nothing_and_writes_nothing(es_client, watchdog_settings, jenkins_server, degraded):
    """--dry-run decides `trigger` but posts nothing, saves no state and records no event."""
    decision = make_watchdog(watchdog_settings, dry_run=True).poll()
    assert decision.decision == policy.TRIGGER
    assert jenkins_server.posts() == []
    assert not StateStore(watchdog_settings.watchdog_state_file).path.exists()
    assert watchdog_events(es_client, watchdog_settings) == []


def test_too_few_samples_is_recorded_as_a_check(es_client, watchdog_settings, jenkins_server):
    """Ten bad inferences are below the minimum: a `check` with rule `min_samples`, recorded, nothing posted."""
    index_events(es_client, watchdog_settings, degraded_window(datetime.now(UTC), count=10, quality=0.1))
    decision = make_watchdog(watchdog_settings).poll()
    assert (decision.decision, decision.rules) == (policy.CHECK, (policy.MIN_SAMPLES,))
    assert jenkins_server.posts() == []
    (event,) = watchdog_events(es_client, watchdog_settings)
    assert event[events.RULE] == [policy.MIN_SAMPLES] and event[events.SAMPLE_COUNT] == 10


def test_run_keeps_polling_through_an_outage_until_stopped(watchdog_settings, caplog):
    """`run` polls repeatedly while Elasticsearch is down, never raising, and returns when stopped."""
    import threading

    wd = make_watchdog(replace(watchdog_settings, es_url=closed_port_url()))
    stop = threading.Event()
    thread = threading.Thread(target=wd.run, args=(0.05, stop))
    with caplog.at_level(logging.INFO, logger="watchdog.loop"):
        thread.start()
        deadline = time.monotonic() + 10
        while caplog.text.count("poll skipped") < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    assert caplog.text.count("poll skipped") >= 3 and "watchdog stopped" in caplog.text


def test_local_trigger_through_the_loop(es_client, watchdog_settings, tmp_path, degraded):
    """With the local trigger the poll starts the pipeline process, and later polls see it finish."""
    from watchdog.triggers import LocalPipelineTrigger

    script = tmp_path / "pipeline_stand_in.py"
    script.write_text("import sys, time\ntime.sleep(0.3)\nprint('ran', sys.argv[1:])\n")
    trigger = LocalPipelineTrigger(watchdog_settings, command=[sys.executable, str(script)])
    wd = Watchdog(watchdog_settings, ElasticsearchSource(make_client(watchdog_settings), watchdog_settings), trigger,
                  StateStore(watchdog_settings.watchdog_state_file))
    decision = wd.poll()
    assert decision.decision == policy.TRIGGER and wd.state.build_phase == RUNNING
    assert trigger.wait(wd.state.ref, timeout=30) == 0
    wd.poll()
    saved = StateStore(watchdog_settings.watchdog_state_file).load()
    assert (saved.ref.kind, saved.build_phase, saved.build_result) == ("local", FINISHED, "SUCCESS")
    assert "ran ['--reason', 'low_quality:" in Path(saved.ref.log_path).read_text()
    assert watchdog_events(es_client, watchdog_settings)[0][events.BUILD_ID] == f"local-pid-{saved.ref.pid}"
