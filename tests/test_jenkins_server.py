"""The Jenkins test server is strict where Jenkins is: auth, crumbs bound to the session, POST only.

Without these checks the trigger tests could pass against a server that accepts anything.
"""

import jenkins
import pytest
import requests

from tests.jenkins_server import CRUMB_FIELD
from tests.jenkins_server import DEFAULT_TOKEN as TOKEN
from tests.jenkins_server import DEFAULT_USER as USER


def test_python_jenkins_reads_identity_version_and_job(jenkins_server):
    """python-jenkins' whoami, version and job-info calls work and show the job's declared parameters."""
    server = jenkins.Jenkins(jenkins_server.url, username=USER, password=TOKEN)
    assert server.get_whoami()["id"] == USER
    assert server.get_version() == "2.462.3"
    info = server.get_job_info("vqa-retrain")
    names = [p["name"] for p in info["property"][0]["parameterDefinitions"]]
    assert names == ["REASON", "RULE", "AVG_SCORE", "SAMPLE_COUNT"]


def test_anonymous_and_wrong_token_get_401(jenkins_server):
    """Requests without credentials or with a wrong token are refused with 401."""
    assert requests.get(jenkins_server.url + "/api/json", timeout=5).status_code == 401
    assert requests.get(jenkins_server.url + "/api/json", auth=(USER, "nope"), timeout=5).status_code == 401


def test_post_without_crumb_or_with_another_sessions_crumb_is_403(jenkins_server):
    """A build POST needs the crumb issued to the same session: none, or one from another session, is 403."""
    url = jenkins_server.url + "/job/vqa-retrain/buildWithParameters"
    with requests.Session() as s:
        s.auth = (USER, TOKEN)
        assert s.post(url, params={"RULE": "x"}, timeout=5).status_code == 403
        crumb = s.get(jenkins_server.url + "/crumbIssuer/api/json", timeout=5).json()["crumb"]
    with requests.Session() as other:
        other.auth = (USER, TOKEN)
        other.get(jenkins_server.url + "/crumbIssuer/api/json", timeout=5)
        assert other.post(url, headers={CRUMB_FIELD: crumb}, timeout=5).status_code == 403
    assert jenkins_server.queue == {}


def test_undeclared_parameters_are_dropped_and_missing_ones_defaulted(jenkins_server):
    """Like Jenkins, a build keeps only declared parameters, filling the rest from their defaults."""
    server = jenkins.Jenkins(jenkins_server.url, username=USER, password=TOKEN)
    queue_id = server.build_job("vqa-retrain", parameters={"RULE": "high_drift", "EXTRA": "1"})
    assert jenkins_server.queue[queue_id].params == {
        "REASON": "manual run", "RULE": "high_drift", "AVG_SCORE": "", "SAMPLE_COUNT": "",
    }


def test_unknown_job_is_404(jenkins_server):
    """An unknown job is not found, as python-jenkins expects."""
    server = jenkins.Jenkins(jenkins_server.url, username=USER, password=TOKEN)
    with pytest.raises(jenkins.NotFoundException):
        server.build_job("nope", parameters={"RULE": "x"})
