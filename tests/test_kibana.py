"""The Kibana saved objects: well-formed, self-contained, built on LOG_EVENT fields, and imported right.

Kibana cannot run here; the import is checked against a local HTTP server that records the request,
and the dashboard's aggregations are run on the real Elasticsearch node.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app.config import Settings
from app.events import elastic
from app.events import kibana as kibana_import
from app.events import schema as events


def _objects() -> list[dict]:
    return [json.loads(line) for line in kibana_import.NDJSON_PATH.read_text().splitlines()]


def _fields_used(obj: dict) -> set[str]:
    attrs = obj["attributes"]
    used: set[str] = set()
    if obj["type"] == "index-pattern":
        used.add(attrs["timeFieldName"])
    if obj["type"] == "search":
        used.update(attrs["columns"])
        used.update(field for field, _order in attrs["sort"])
    if obj["type"] == "visualization":
        for agg in json.loads(attrs["visState"])["aggs"]:
            if "field" in agg.get("params", {}):
                used.add(agg["params"]["field"])
    source = json.loads(attrs.get("kibanaSavedObjectMeta", {}).get("searchSourceJSON", "{}"))
    query = source.get("query", {}).get("query", "")
    used.update(re.findall(r"([@\w.]+)\s*:", query))
    return used


def test_the_committed_file_is_what_the_generator_builds():
    """elk/kibana/saved_objects.ndjson is up to date with app/events/schema.py (`kibana_import.py --write`)."""
    assert kibana_import.NDJSON_PATH.read_text() == kibana_import.to_ndjson(kibana_import.build_saved_objects())


def test_every_line_parses_and_every_reference_resolves_inside_the_file():
    """Each NDJSON line is an object with type/id/attributes, and each reference names an object in the file."""
    objects = _objects()
    ids = {(o["type"], o["id"]) for o in objects}
    assert len(ids) == len(objects), "duplicate ids"
    assert {o["type"] for o in objects} == {"index-pattern", "search", "visualization", "dashboard"}
    for obj in objects:
        for ref in obj["references"]:
            assert (ref["type"], ref["id"]) in ids, f"{obj['id']} refers to missing {ref}"
    dashboard = next(o for o in objects if o["type"] == "dashboard")
    panel_refs = {p["panelRefName"] for p in json.loads(dashboard["attributes"]["panelsJSON"])}
    assert panel_refs == {r["name"] for r in dashboard["references"]}


def test_every_field_the_objects_use_is_a_log_event_field():
    """Columns, sort, aggregation fields, KQL fields and the time field all exist in events.FIELD_TYPES."""
    for obj in _objects():
        unknown = _fields_used(obj) - set(events.FIELD_TYPES)
        assert not unknown, f"{obj['type']} {obj['id']} uses unknown fields {unknown}"


def test_the_data_view_and_search_are_the_ones_asked_for():
    """A data view on vqa-logs-* timed by @timestamp and a "LOG_EVENT" search with the four columns."""
    objects = {o["type"]: o for o in _objects()}
    view = objects["index-pattern"]["attributes"]
    assert (view["title"], view["timeFieldName"]) == ("vqa-logs-*", events.TIMESTAMP)
    search = objects["search"]["attributes"]
    assert search["title"] == "LOG_EVENT"
    assert search["columns"] == [events.QUESTION, events.ANSWER, events.QUALITY_SCORE, events.LATENCY_SECONDS]


def test_the_dashboard_aggregations_run_on_elasticsearch(es_client):
    """avg(quality_score), p95(latency_seconds) per time bucket and the error count answer on real data."""
    prefix = f"kib-{uuid.uuid4().hex[:10]}"
    elastic.install_index_template(es_client, Settings(es_url="http://unused", es_index_prefix=prefix))
    docs = [events.make_event(events.INFERENCE, quality_score=q, latency_seconds=q / 10) for q in (0.2, 0.4, 0.9)]
    docs.append(events.make_event(events.ERROR, status=500, error="boom"))
    for doc in docs:
        es_client.index(index=events.index_name(prefix, doc), id=events.document_id(doc), document=doc)
    es_client.indices.refresh(index=f"{prefix}-*")
    for obj in (o for o in _objects() if o["type"] == "visualization"):
        vis = json.loads(obj["attributes"]["visState"])
        source = json.loads(obj["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
        field, value = re.fullmatch(r'(\w+) : "(\w+)"', source["query"]["query"]).groups()
        metric = next(a for a in vis["aggs"] if a["schema"] == "metric")
        aggs = {}
        if metric["type"] != "count":
            aggs = {"m": {metric["type"]: metric["params"]}}
        found = es_client.search(index=f"{prefix}-*", size=0, query={"term": {field: value}}, aggs={
            "t": {"date_histogram": {"field": events.TIMESTAMP, "fixed_interval": "1h"}, "aggs": aggs}})
        buckets = found["aggregations"]["t"]["buckets"]
        total = sum(b["doc_count"] for b in buckets)
        if obj["id"] == "vqa-avg-quality":
            assert total == 3 and buckets[-1]["m"]["value"] == pytest.approx(0.5, abs=1e-6)
        elif obj["id"] == "vqa-p95-latency":
            assert 0.08 <= buckets[-1]["m"]["values"]["95.0"] <= 0.09 + 1e-6
        elif obj["id"] == "vqa-error-count":
            assert total == 1
        else:
            assert total == 0  # no watchdog events seeded


class _Recorder(BaseHTTPRequestHandler):
    """Records one import request and answers as Kibana does."""

    requests: list[dict] = []
    answer: dict = {"success": True, "successCount": 7}

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        body = self.rfile.read(length)
        boundary = re.search(r"boundary=([^;]+)", self.headers["Content-Type"]).group(1).strip('"').encode()
        part = body.split(b"--" + boundary)[1]
        _head, _, payload = part.partition(b"\r\n\r\n")
        type(self).requests.append({
            "path": self.path, "xsrf": self.headers.get("kbn-xsrf"), "auth": self.headers.get("Authorization"),
            "disposition": _head.decode(), "ndjson": payload.rstrip(b"\r\n").decode(),
        })
        data = json.dumps(type(self).answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def kibana_stub():
    """A local HTTP server standing in for Kibana's import API; yields its URL."""
    _Recorder.requests = []
    _Recorder.answer = {"success": True, "successCount": 7}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_import_posts_the_file_with_overwrite_xsrf_and_credentials(kibana_stub, run_script):
    """The script POSTs multipart `file` to /api/saved_objects/_import?overwrite=true with kbn-xsrf and basic auth."""
    done = run_script("kibana_import", "--kibana-url", kibana_stub + "/", "--index-prefix", "prod-events",
                      env={"KIBANA_USERNAME": "elastic", "KIBANA_PASSWORD": "pw"})
    assert done.returncode == 0, done.stderr
    [req] = _Recorder.requests
    assert req["path"] == "/api/saved_objects/_import?overwrite=true"
    assert req["xsrf"]
    assert req["auth"] == "Basic " + base64.b64encode(b"elastic:pw").decode()
    assert 'name="file"' in req["disposition"] and "saved_objects.ndjson" in req["disposition"]
    sent = [json.loads(line) for line in req["ndjson"].splitlines()]
    assert len(sent) == len(_objects())
    assert next(o for o in sent if o["type"] == "index-pattern")["attributes"]["title"] == "prod-events-*"
    assert "imported 7 objects" in done.stdout


def test_a_refused_import_fails_with_kibanas_errors(kibana_stub, run_script):
    """When Kibana answers success=false the script exits 1 and shows Kibana's error list."""
    _Recorder.answer = {"success": False, "errors": [{"id": "vqa-overview", "error": {"type": "missing_references"}}]}
    done = run_script("kibana_import", "--kibana-url", kibana_stub)
    assert done.returncode == 1
    assert "missing_references" in done.stderr
