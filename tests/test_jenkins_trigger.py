"""JenkinsTrigger against the Jenkins test server: crumb, auth, parameters, status, failures.

The server speaks Jenkins' REST protocol, so python-jenkins runs unmodified against it.
"""

import base64
import logging
import time

import pytest

from app.config import ConfigError, Settings
from tests.jenkins_server import CRUMB_FIELD, JenkinsTestServer, closed_port_url, jenkinsfile_parameters
from tests.jenkins_server import DEFAULT_TOKEN as TOKEN
from watchdog.policy import TRIGGER, Decision, WindowStats
from watchdog.state import FINISHED, QUEUED, RUNNING, UNKNOWN
from watchdog.triggers import JENKINS_PARAMETERS, JenkinsTrigger, TriggerError

DECISION = Decision(TRIGGER, ("low_quality", "high_drift"), "low_quality: avg quality_score 0.412 < 0.75",
                    WindowStats(sample_count=87, avg_quality=0.41234, avg_drift=2.4))


def settings_for(url: str, token: str = TOKEN, user: str = "watchdog") -> Settings:
    return Settings(jenkins_url=url, jenkins_user=user, jenkins_api_token=token, jenkins_job="vqa-retrain")


def wait_for(trigger, ref, phase, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = trigger.status(ref)
        if status.phase == phase:
            return status
        ref = status.ref
        time.sleep(0.05)
    raise AssertionError(f"build never reached {phase}")


def test_trigger_posts_the_issued_crumb_auth_and_parameters(jenkins_server):
    """The POST carries the crumb the server issued, Basic auth for user:token, and the four parameters."""
    ref = JenkinsTrigger(settings_for(jenkins_server.url)).trigger(DECISION)
    assert (ref.kind, ref.job, ref.queue_id) == ("jenkins", "vqa-retrain", 1)

    (post,) = jenkins_server.posts()
    assert post.path == "/job/vqa-retrain/buildWithParameters"
    (crumb,) = jenkins_server.crumbs.values()
    assert post.headers[CRUMB_FIELD] == crumb
    assert post.headers["Authorization"] == "Basic " + base64.b64encode(f"watchdog:{TOKEN}".encode()).decode()
    assert post.params == {
        "REASON": DECISION.reason, "RULE": "low_quality,high_drift", "AVG_SCORE": "0.4123", "SAMPLE_COUNT": "87",
    }
    crumb_requests = [r for r in jenkins_server.requests if r.path == "/crumbIssuer/api/json"]
    assert len(crumb_requests) == 1


def test_trigger_parameters_are_the_ones_the_jenkinsfile_declares(jenkins_server):
    """The job (defined from the Jenkinsfile) keeps every parameter the trigger sends: none is dropped."""
    trigger = JenkinsTrigger(settings_for(jenkins_server.url))
    status = wait_for(trigger, trigger.trigger(DECISION), RUNNING)
    info = trigger.server.get_build_info("vqa-retrain", status.ref.build_number)
    sent = {p["name"]: p["value"] for p in info["actions"][0]["parameters"]}
    assert tuple(sent) == JENKINS_PARAMETERS == tuple(jenkinsfile_parameters())
    assert sent == JenkinsTrigger.parameters(DECISION)


def test_status_follows_queue_then_build_then_result(jenkins_server):
    """Status goes queued -> running (build number learnt from the queue item) -> finished with its result."""
    trigger = JenkinsTrigger(settings_for(jenkins_server.url))
    ref = trigger.trigger(DECISION)
    assert trigger.status(ref).phase == QUEUED
    running = wait_for(trigger, ref, RUNNING)
    assert running.ref.build_number == 1 and running.ref.label == "vqa-retrain#1"
    finished = wait_for(trigger, running.ref, FINISHED)
    assert finished.result == "SUCCESS"


def test_failed_build_reports_its_result():
    """A build Jenkins marks FAILURE is finished with result FAILURE."""
    with JenkinsTestServer(token=TOKEN, queue_seconds=0, build_seconds=0, result="FAILURE") as server:
        trigger = JenkinsTrigger(settings_for(server.url))
        assert wait_for(trigger, trigger.trigger(DECISION), FINISHED).result == "FAILURE"


def test_expired_queue_item_is_unknown_but_a_known_build_number_still_works():
    """When Jenkins forgets the queue item the phase is unknown, unless the build number was already learnt."""
    with JenkinsTestServer(token=TOKEN, queue_seconds=0, build_seconds=0, queue_item_ttl=0.2) as server:
        trigger = JenkinsTrigger(settings_for(server.url))
        ref = trigger.trigger(DECISION)
        learnt = trigger.status(ref)
        time.sleep(0.3)
        assert trigger.status(ref).phase == UNKNOWN
        assert trigger.status(learnt.ref).phase == FINISHED


def test_wrong_token_is_a_trigger_error_and_nothing_is_queued(jenkins_server, caplog):
    """A bad API token gives a TriggerError mentioning 401; no build is queued and the token is not logged."""
    caplog.set_level(logging.DEBUG)
    bad = "ffffffffffffffffffffffffffffffff"
    with pytest.raises(TriggerError, match="401"):
        JenkinsTrigger(settings_for(jenkins_server.url, token=bad)).trigger(DECISION)
    assert jenkins_server.queue == {}
    assert bad not in caplog.text


def test_missing_build_permission_is_a_trigger_error():
    """A user without Job/Build permission gets 403, reported as a TriggerError, with nothing queued."""
    with JenkinsTestServer(token=TOKEN, forbid_build=True) as server:
        with pytest.raises(TriggerError, match="403"):
            JenkinsTrigger(settings_for(server.url)).trigger(DECISION)
        assert server.queue == {}


def test_jenkins_down_is_a_trigger_error_for_trigger_and_status():
    """A closed port raises TriggerError (not a raw requests error) from both trigger and status."""
    trigger = JenkinsTrigger(settings_for(closed_port_url()))
    with pytest.raises(TriggerError, match="build request failed"):
        trigger.trigger(DECISION)
    from watchdog.state import TriggerRef

    with pytest.raises(TriggerError, match="status of vqa-retrain-queue-3"):
        trigger.status(TriggerRef(kind="jenkins", job="vqa-retrain", queue_id=3))


def test_status_with_bad_credentials_is_an_error_not_unknown(jenkins_server):
    """A 401 on status is a TriggerError (keep the last phase), not UNKNOWN (which would unblock triggering)."""
    ref = JenkinsTrigger(settings_for(jenkins_server.url)).trigger(DECISION)
    with pytest.raises(TriggerError, match="401"):
        JenkinsTrigger(settings_for(jenkins_server.url, token="wrong")).status(ref)


def test_token_never_reaches_the_logs(jenkins_server, caplog):
    """A full trigger and status cycle at DEBUG level (urllib3 included) never logs the API token."""
    caplog.set_level(logging.DEBUG)
    trigger = JenkinsTrigger(settings_for(jenkins_server.url))
    wait_for(trigger, trigger.trigger(DECISION), FINISHED)
    assert "queue item 1" in caplog.text  # the capture did see the trigger's own logging
    assert TOKEN not in caplog.text
    assert base64.b64encode(f"watchdog:{TOKEN}".encode()).decode() not in caplog.text


def test_configuration_errors_are_clear():
    """No URL, or a user without token, is a ConfigError naming the variable to set."""
    with pytest.raises(ConfigError, match="JENKINS_URL"):
        JenkinsTrigger(Settings(jenkins_url=""))
    with pytest.raises(ConfigError, match="JENKINS_API_TOKEN"):
        JenkinsTrigger(Settings(jenkins_url="http://127.0.0.1:1", jenkins_user="u", jenkins_api_token=""))


def test_credentials_in_the_url_are_not_repeated_in_errors():
    """A JENKINS_URL with user:password@ is shown without them in TriggerError messages."""
    url = closed_port_url().replace("http://", "http://admin:s3cr3t-pw@")
    with pytest.raises(TriggerError) as info:
        JenkinsTrigger(settings_for(url)).trigger(DECISION)
    assert "s3cr3t-pw" not in str(info.value) and "127.0.0.1" in str(info.value)
