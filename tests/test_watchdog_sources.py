"""ElasticsearchSource against a real Elasticsearch: exact window statistics and decision events.

Documents with known values are indexed under a per-test prefix; the aggregation must reproduce them.
"""

from datetime import UTC, datetime, timedelta

import pytest

from app.config import Settings
from app.events import schema as events
from tests.jenkins_server import closed_port_url
from tests.watchdog_support import feedback, index_events, inference, unique_prefix, watchdog_events
from watchdog.policy import SUPPRESSED, TRIGGER, Decision, WindowStats
from watchdog.sources import ElasticsearchSource, SourceError
from watchdog.state import TriggerRef


@pytest.fixture
def es_settings(es_url):
    return Settings(es_url=es_url, es_index_prefix=unique_prefix(), watchdog_window_minutes=15.0)


def test_window_stats_match_the_indexed_events(es_client, es_settings):
    """Counts, averages and accuracy cover only in-window inference/feedback events."""
    now = datetime.now(UTC)
    inside = [inference(now - timedelta(minutes=m), q, d)
              for m, q, d in [(1, 0.9, 1.0), (2, 0.5, 2.0), (5, 0.7, 3.0), (14, 0.3, None)]]
    outside = [inference(now - timedelta(minutes=16), 0.0, 99.0), inference(now + timedelta(minutes=1), 0.0, 99.0)]
    labels = [feedback(now - timedelta(minutes=m), ok) for m, ok in [(1, True), (2, True), (3, True), (4, False)]]
    unlabelled = [feedback(now - timedelta(minutes=1), None)]
    old_label = [feedback(now - timedelta(minutes=30), False)]
    other = [events.make_event(events.ERROR, **{events.QUALITY_SCORE: 0.0, events.STATUS: 500})]
    index_events(es_client, es_settings, inside + outside + labels + unlabelled + old_label + other)

    stats = ElasticsearchSource(es_client, es_settings).window_stats(now)

    assert stats.sample_count == 4
    assert stats.avg_quality == pytest.approx((0.9 + 0.5 + 0.7 + 0.3) / 4)
    assert stats.avg_drift == pytest.approx((1.0 + 2.0 + 3.0) / 3)  # the event without drift is not a zero
    assert (stats.feedback_count, stats.accuracy) == (4, pytest.approx(0.75))
    assert stats.window_minutes == 15.0


def test_only_the_model_serving_now_is_judged(es_client, es_settings):
    """After a redeploy, events of the replaced adapter no longer count; feedback follows its prediction."""
    now = datetime.now(UTC)

    def served(doc, adapter):
        return {**doc, events.MODEL_VERSION: "base-1", events.ADAPTER_VERSION: adapter}

    old = [served(inference(now - timedelta(minutes=m), 0.2, 9.0), "adapter-old") for m in (5, 6, 7)]
    old_label = [served(feedback(now - timedelta(minutes=5), False), "adapter-old")]
    new = [served(inference(now - timedelta(minutes=m), 0.9, 0.8), "adapter-new") for m in (1, 2)]
    new_label = [served(feedback(now - timedelta(minutes=1), True), "adapter-new")]
    index_events(es_client, es_settings, old + old_label + new + new_label)

    stats = ElasticsearchSource(es_client, es_settings).window_stats(now)

    assert stats.sample_count == 2 and stats.avg_quality == pytest.approx(0.9)
    assert (stats.feedback_count, stats.accuracy) == (1, 1.0)


def test_same_feedback_twice_counts_once(es_client, es_settings):
    """Feedback on one request has one document id, so a replayed label is not counted twice."""
    now = datetime.now(UTC)
    label = feedback(now - timedelta(minutes=1), False)
    index_events(es_client, es_settings, [label, dict(label)])
    assert ElasticsearchSource(es_client, es_settings).window_stats(now).feedback_count == 1


def test_no_indices_yet_means_no_samples(es_client, es_settings):
    """Before the first event there is no index; the stats are zero samples, not an error."""
    stats = ElasticsearchSource(es_client, es_settings).window_stats(datetime.now(UTC))
    assert stats == WindowStats(0, None, None, 0, None, 15.0)


def test_record_decision_writes_a_watchdog_event(es_client, es_settings):
    """A decision becomes a `watchdog` event in today's index with decision, rule list, numbers and build id."""
    decision = Decision(TRIGGER, ("low_quality", "high_drift"), "low_quality: avg 0.4 < 0.75",
                        WindowStats(80, 0.4, 2.5, 0, None, 15.0))
    ref = TriggerRef(kind="jenkins", job="vqa-retrain", queue_id=9)
    source = ElasticsearchSource(es_client, es_settings)
    doc = source.record_decision(decision, ref)
    (stored,) = watchdog_events(es_client, es_settings)
    assert stored == doc
    assert stored[events.DECISION] == TRIGGER and stored[events.RULE] == ["low_quality", "high_drift"]
    assert stored[events.BUILD_ID] == "vqa-retrain-queue-9" and stored[events.SAMPLE_COUNT] == 80
    assert stored[events.AVG_DRIFT] == 2.5 and events.ACCURACY not in stored
    hit = es_client.search(index=f"{es_settings.es_index_prefix}-*",
                           query={"term": {events.RULE: "high_drift"}})["hits"]["hits"]
    assert hit[0]["_index"] == events.index_name(es_settings.es_index_prefix, doc)
    assert hit[0]["_id"] == doc[events.REQUEST_ID]


def test_decision_events_are_searchable_by_decision(es_client, es_settings):
    """Kibana can filter decisions by the keyword fields `decision` and `rule`."""
    source = ElasticsearchSource(es_client, es_settings)
    stats = WindowStats(80, 0.4, 0.1, 0, None, 15.0)
    source.record_decision(Decision(SUPPRESSED, ("low_quality",), "cooldown", stats))
    source.record_decision(Decision(TRIGGER, ("low_quality",), "fired", stats))
    es_client.indices.refresh(index=f"{es_settings.es_index_prefix}-*")
    count = es_client.count(index=f"{es_settings.es_index_prefix}-*", query={"bool": {"filter": [
        {"term": {events.DECISION: SUPPRESSED}}, {"term": {events.RULE: "low_quality"}}]}})["count"]
    assert count == 1


def test_elasticsearch_down_is_a_source_error():
    """A source pointed at a closed port raises SourceError for both reading and writing."""
    from app.events.elastic import make_client

    es_settings = Settings(es_url=closed_port_url())
    source = ElasticsearchSource(make_client(es_settings, max_retries=0), es_settings)
    with pytest.raises(SourceError, match="search on vqa-logs-\\* failed"):
        source.window_stats(datetime.now(UTC))
    with pytest.raises(SourceError, match="could not store"):
        source.record_decision(Decision(TRIGGER, ("low_quality",), "r", WindowStats(1, 0.1, 0.1)))


def test_first_decision_creates_the_index_with_the_project_mappings(es_client, es_settings):
    """When the watchdog writes the day's first event, the index still gets the template's explicit mappings."""
    stats = WindowStats(0, None, None, 0, None, 15.0)
    ElasticsearchSource(es_client, es_settings).record_decision(Decision("check", ("min_samples",), "few", stats))
    mapping = es_client.indices.get_mapping(index=es_settings.es_index_prefix + "-*")
    properties = next(iter(mapping.body.values()))["mappings"]["properties"]
    assert properties[events.QUALITY_SCORE]["type"] == "float"
    assert properties[events.REQUEST_ID]["type"] == "keyword"
