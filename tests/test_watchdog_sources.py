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


# --- the window drift test's inputs: signatures from Elasticsearch, the reference from the service ---------------


def synthetic_reference(seed: int = 0):
    """A window reference fitted on random signals and pixel statistics (16 + 8 dims)."""
    import numpy as np

    from app.model.window_drift import WindowReference

    rng = np.random.default_rng(seed)
    return WindowReference.fit(rng.normal(size=(600, 16)), rng.uniform(0.2, 0.8, size=(600, 8)), components=4)


class StaticReferences:
    """Stands in for ServiceReferences: one reference for every version, and the versions it was asked for."""

    def __init__(self, reference):
        self.reference = reference
        self.asked: list[tuple[str, str]] = []

    def get(self, model_version, adapter_version):
        self.asked.append((model_version, adapter_version))
        return self.reference


def signed(at, signature, adapter="adapter-1"):
    return {**inference(at, 0.95, 0.7), events.SIGNATURE: [float(v) for v in signature],
            events.MODEL_VERSION: "base-1", events.ADAPTER_VERSION: adapter}


def test_signatures_come_back_whole_and_in_order_for_the_judged_model_only(es_client, es_settings):
    """Each signature reads back as indexed (order kept); the replaced adapter's and unsigned events are left out."""
    now = datetime.now(UTC)
    ours = [signed(now - timedelta(minutes=m), [3.0 - m, -1.5, 0.25, 10.0 + m]) for m in (1, 2, 3)]
    replaced = [signed(now - timedelta(minutes=4), [9.0, 9.0, 9.0, 9.0], adapter="adapter-0")]
    unsigned = [{**inference(now - timedelta(minutes=1), 0.9), events.MODEL_VERSION: "base-1",
                 events.ADAPTER_VERSION: "adapter-1"}]
    index_events(es_client, es_settings, ours + replaced + unsigned)
    source = ElasticsearchSource(es_client, es_settings)
    versions = source.serving_versions(now)
    assert source.window_signatures(now, versions) == [[2.0, -1.5, 0.25, 11.0], [1.0, -1.5, 0.25, 12.0],
                                                       [0.0, -1.5, 0.25, 13.0]]


@pytest.mark.parametrize(("shift", "rejected"), [(0.0, False), (5.0, True)])
def test_the_window_is_tested_against_the_serving_models_reference(es_client, shift, rejected):
    """60 signed inferences like the reference pass; shifted pixel statistics are rejected, p-value attached."""
    import numpy as np

    settings = Settings(es_url="http://unused", es_index_prefix=unique_prefix(), watchdog_min_samples=50)
    reference = synthetic_reference()
    rng = np.random.default_rng(1)
    window = reference.signatures(rng.normal(size=(60, 16)), rng.uniform(0.2, 0.8, size=(60, 8)))
    window[:, -2] += shift  # e.g. saturation gone: the greyscale case
    now = datetime.now(UTC)
    index_events(es_client, settings, [signed(now - timedelta(seconds=5 * i + 1), s) for i, s in enumerate(window)])
    references = StaticReferences(reference)
    stats = ElasticsearchSource(es_client, settings, references).window_stats(now)
    test = stats.drift_test
    assert references.asked == [("base-1", "adapter-1")]
    assert (test.signed, test.inputs) == (60, 60) and (test.p_value <= 0.005) is rejected
    assert test.statistic > 0.9 if rejected else 0.3 < test.statistic < 0.7


def test_too_few_signed_inferences_skip_the_test_without_asking_for_a_reference(es_client):
    """With fewer signed inferences than WATCHDOG_MIN_SAMPLES the reference is not fetched and no p-value exists."""
    settings = Settings(es_url="http://unused", es_index_prefix=unique_prefix(), watchdog_min_samples=5)
    now = datetime.now(UTC)
    docs = [signed(now - timedelta(seconds=i + 1), [0.0] * 12) for i in range(3)]
    docs += [{**inference(now - timedelta(seconds=i + 10), 0.9), events.MODEL_VERSION: "base-1",
              events.ADAPTER_VERSION: "adapter-1"} for i in range(5)]
    index_events(es_client, settings, docs)
    references = StaticReferences(synthetic_reference())
    stats = ElasticsearchSource(es_client, settings, references).window_stats(now)
    assert stats.sample_count == 8 and stats.drift_test.signed == 3 and stats.drift_test.p_value is None
    assert references.asked == []


@pytest.fixture
def reference_service():
    """A local HTTP server answering GET /drift/reference as the service does; `.answer` sets what it says."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        answer = (200, {})
        hits = 0

        def do_GET(self):
            type(self).hits += 1
            status, body = type(self).answer
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    server.handler = Handler
    yield server
    server.shutdown()
    server.server_close()


def test_the_reference_is_fetched_from_the_service_once_per_version(reference_service):
    """ServiceReferences reads /drift/reference, checks the versions and asks again only when they change."""
    from watchdog.sources import ReferenceUnavailable, ServiceReferences

    reference = synthetic_reference()
    reference_service.handler.answer = (200, {events.MODEL_VERSION: "base-1", events.ADAPTER_VERSION: "a-1",
                                              "reference": reference.to_dict()})
    references = ServiceReferences(reference_service.url + "/")
    got = references.get("base-1", "a-1")
    assert got.dims == reference.dims and (got.calibration == reference.calibration).all()
    references.get("base-1", "a-1")
    assert reference_service.handler.hits == 1
    with pytest.raises(ReferenceUnavailable, match="serves base-1/a-1, the window's newest inferences come from "
                                                   "base-1/a-2"):
        references.get("base-1", "a-2")


@pytest.mark.parametrize(("answer", "message"), [
    ((404, {"error": "no window drift reference"}), "answered 404: no window drift reference"),
    ((200, {events.MODEL_VERSION: "base-1", events.ADAPTER_VERSION: "a-1", "reference": {"index": []}}),
     "no usable reference"),
])
def test_a_service_without_a_usable_reference_is_reported_not_raised_further(reference_service, answer, message):
    """A 404 or a malformed reference is ReferenceUnavailable with the service's words."""
    from watchdog.sources import ReferenceUnavailable, ServiceReferences

    reference_service.handler.answer = answer
    with pytest.raises(ReferenceUnavailable, match=message):
        ServiceReferences(reference_service.url).get("base-1", "a-1")


def test_an_unreachable_service_skips_the_test_and_the_poll_goes_on(es_client):
    """No service at VQA_SERVICE_URL: the window statistics still come back, the test says why it did not run."""
    nobody = closed_port_url()
    settings = Settings(es_url="http://unused", es_index_prefix=unique_prefix(), watchdog_min_samples=5,
                        service_url=nobody)
    now = datetime.now(UTC)
    index_events(es_client, settings, [signed(now - timedelta(seconds=i + 1), [float(i)] * 12) for i in range(6)])
    stats = ElasticsearchSource(es_client, settings).window_stats(now)
    assert stats.sample_count == 6 and stats.drift_test.p_value is None
    assert stats.drift_test.skipped.startswith(f"no reference: GET {nobody}/drift/reference failed")
