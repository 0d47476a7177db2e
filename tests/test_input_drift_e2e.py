"""End to end without labels: greyscale traffic makes the watchdog fire `input_drift` once; clean traffic nothing.

The real Elasticsearch, the service under gunicorn shipping its events, the watchdog in-process reading the
window's signatures from Elasticsearch and the reference from the service, the Jenkins test server as trigger.
"""

from __future__ import annotations

import time

from elasticsearch import Elasticsearch

from app.config import Settings
from app.events import schema as events
from app.events.elastic import make_client
from app.learning.data import CSV_NAME, load_rows
from app.simulation.traffic import send_traffic
from tests.watchdog_support import unique_prefix, watchdog_events
from watchdog import policy
from watchdog.loop import Watchdog
from watchdog.sources import ElasticsearchSource
from watchdog.state import StateStore
from watchdog.triggers import JenkinsTrigger

REQUESTS = 120


def wait_for_inferences(client: Elasticsearch, prefix: str, count: int, timeout: float = 60.0) -> int:
    """Refresh and count the shipped inference events until `count` are searchable (or the time is up)."""
    deadline, found = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        client.indices.refresh(index=events.index_pattern(prefix), allow_no_indices=True, ignore_unavailable=True)
        found = client.count(index=events.index_pattern(prefix), allow_no_indices=True, ignore_unavailable=True,
                             query={"term": {events.EVENT: events.INFERENCE}})["count"]
        if found >= count:
            break
        time.sleep(0.3)
    return found


def test_greyscale_without_feedback_fires_input_drift_once_and_clean_traffic_fires_nothing(
        es_url, es_client, gunicorn, jenkins_server, small_model_dir, images_root, dataset_dir, tmp_path):
    """Clean traffic: `check`, the test ran and passed. Greyscale traffic, no feedback at all: one `trigger`
    naming `input_drift` alone (quality and drift_score stay healthy), then `suppressed` by the cooldown."""
    prefix = unique_prefix()
    url = gunicorn({
        "VQA_MODEL_DIR": str(small_model_dir), "VQA_IMAGES_ROOT": str(images_root), "ES_URL": es_url,
        "ES_INDEX_PREFIX": prefix, "VQA_SHIP_FLUSH_SECONDS": "0.2", "VQA_ADAPTERS_DIR": str(tmp_path / "adapters"),
        "VQA_SPOOL_DIR": str(tmp_path / "spool"), "VQA_RELOAD_POLL_SECONDS": "0",
    })
    settings = Settings(
        es_url=es_url, es_index_prefix=prefix, service_url=url, watchdog_min_samples=50,
        watchdog_cooldown_minutes=30, watchdog_state_file=str(tmp_path / "state.json"),
        jenkins_url=jenkins_server.url, jenkins_user=jenkins_server.user, jenkins_api_token=jenkins_server.token,
    )
    watchdog = Watchdog(settings, ElasticsearchSource(make_client(settings), settings), JenkinsTrigger(settings),
                        StateStore(settings.watchdog_state_file))
    test_rows = load_rows(dataset_dir / CSV_NAME, split="test")

    clean = send_traffic(url, test_rows, images_root, count=REQUESTS, seed=1, progress=False)
    assert clean.answered == REQUESTS and clean.feedback == 0
    assert wait_for_inferences(es_client, prefix, REQUESTS) == REQUESTS
    calm = watchdog.poll()
    assert (calm.decision, calm.rules) == (policy.CHECK, (policy.NONE,)), calm.reason
    assert calm.stats.drift_test.p_value > settings.watchdog_drift_test_alpha, calm.reason
    assert jenkins_server.posts() == []

    grey = send_traffic(url, test_rows, images_root, count=REQUESTS, drift="greyscale", seed=2, progress=False)
    assert grey.answered == REQUESTS and grey.feedback == 0
    assert min(grey.quality) > 0 and sum(grey.drift) / len(grey.drift) < settings.watchdog_drift_threshold
    assert wait_for_inferences(es_client, prefix, 2 * REQUESTS) == 2 * REQUESTS
    fired = watchdog.poll()
    assert (fired.decision, fired.rules) == (policy.TRIGGER, (policy.INPUT_DRIFT,)), fired.reason
    assert fired.stats.feedback_count == 0 and fired.stats.drift_test.signed == 2 * REQUESTS
    again = watchdog.poll()
    assert (again.decision, again.rules) == (policy.SUPPRESSED, (policy.INPUT_DRIFT,)), again.reason
    assert len(jenkins_server.posts()) == 1

    recorded = watchdog_events(es_client, settings)
    assert [e[events.DECISION] for e in recorded] == [policy.CHECK, policy.TRIGGER, policy.SUPPRESSED]
    trigger_event = recorded[1]
    assert trigger_event[events.RULE] == [policy.INPUT_DRIFT]
    assert trigger_event[events.DRIFT_TEST_P_VALUE] <= settings.watchdog_drift_test_alpha
    assert trigger_event[events.DRIFT_TEST_STATISTIC] > recorded[0][events.DRIFT_TEST_STATISTIC]
