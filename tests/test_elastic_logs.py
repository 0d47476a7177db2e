"""Reading events back (app/events/query.py, scripts/logs.py) on the real node: by time and kind, newest kept."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from elasticsearch import Elasticsearch

from app.config import Settings
from app.events import elastic
from app.events import query as logs
from app.events import schema as events


def _at(minutes_ago: float) -> str:
    moment = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.fixture
def seeded(es_client: Elasticsearch) -> str:
    """An index prefix holding 3 recent inferences, 1 recent error and 1 inference from 2 hours ago."""
    prefix = f"logs-{uuid.uuid4().hex[:10]}"
    elastic.install_index_template(es_client, Settings(es_url="http://unused", es_index_prefix=prefix))
    docs = [
        events.make_event(events.INFERENCE, question=f"q{i}", answer="red", quality_score=0.9, latency_seconds=0.2)
        | {events.TIMESTAMP: _at(5 - i)}
        for i in range(3)
    ]
    docs.append(events.make_event(events.ERROR, status=500, error="boom") | {events.TIMESTAMP: _at(1)})
    docs.append(events.make_event(events.INFERENCE, question="old", answer="blue") | {events.TIMESTAMP: _at(120)})
    for doc in docs:
        es_client.index(index=events.index_name(prefix, doc), id=events.document_id(doc), document=doc)
    es_client.indices.refresh(index=f"{prefix}-*")
    return prefix


def test_recent_events_are_filtered_by_time_and_kind_oldest_first(es_client, seeded):
    """--since 10m leaves out the 2-hour-old event; --event inference leaves out the error."""
    everything = logs.recent_events(es_client, seeded, since="10m")
    assert [d[events.EVENT] for d in everything] == ["inference"] * 3 + ["error"]
    inferences = logs.recent_events(es_client, seeded, since="10m", event=events.INFERENCE)
    assert [d[events.QUESTION] for d in inferences] == ["q0", "q1", "q2"]
    assert len(logs.recent_events(es_client, seeded, since="3h")) == 5


def test_limit_keeps_the_newest(es_client, seeded):
    """--limit 2 prints the two newest events, still oldest first."""
    newest = logs.recent_events(es_client, seeded, since="1d", limit=2)
    assert [d[events.EVENT] for d in newest] == ["inference", "error"]
    assert newest[0][events.QUESTION] == "q2"


def test_bad_arguments_are_precise_errors(es_client, seeded):
    """A malformed --since, an unknown kind or a zero limit raise LogsQueryError saying what to change."""
    with pytest.raises(logs.LogsQueryError, match="--since '10 minutes'"):
        logs.recent_events(es_client, seeded, since="10 minutes")
    with pytest.raises(logs.LogsQueryError, match="--event 'nope'"):
        logs.recent_events(es_client, seeded, event="nope")
    with pytest.raises(logs.LogsQueryError, match="--limit 0"):
        logs.recent_events(es_client, seeded, limit=0)


def test_command_line_prints_one_line_per_event(es_url, seeded, run_script):
    """`logs.py --since 10m --event error` prints one line with the timestamp, kind and fields."""
    done = run_script("logs", "--since", "10m", "--event", "error", "--es-url", es_url,
                      env={"ES_INDEX_PREFIX": seeded})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1
    assert " error " in lines[0] and "status=500" in lines[0] and "error=boom" in lines[0]


def test_command_line_reports_an_unreachable_node(run_script):
    """With nothing listening, the script exits 1 and names the URL."""
    done = run_script("logs", "--es-url", "http://127.0.0.1:9", env={"ES_INDEX_PREFIX": "nothing"})
    assert done.returncode == 1
    assert "cannot read events from http://127.0.0.1:9" in done.stderr
