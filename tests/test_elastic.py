"""The client factory and index template against a real Elasticsearch node (and a recording HTTP peer).

Mappings must match `events.FIELD_TYPES` exactly, unknown fields must never break ingestion, and the
client must send the credentials it was configured with.
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app.config import Settings
from app.events import elastic
from app.events import schema as events


def _prefix() -> str:
    return f"tmpl-{uuid.uuid4().hex[:10]}"


def test_template_maps_every_event_field_and_is_idempotent(es_client):
    """Installing twice leaves one template whose mappings are exactly events.FIELD_TYPES."""
    settings = Settings(es_url="http://unused", es_index_prefix=_prefix())
    first = elastic.install_index_template(es_client, settings)
    second = elastic.install_index_template(es_client, settings)
    assert first == second
    found = es_client.indices.get_index_template(name=elastic.template_name(settings.es_index_prefix))
    [template] = found["index_templates"]
    body = template["index_template"]
    assert body["index_patterns"] == [f"{settings.es_index_prefix}-*"]
    assert body["template"]["mappings"]["properties"] == events.FIELD_TYPES
    assert body["template"]["mappings"]["dynamic"] is False
    if first["ilm_policy"] is None:  # the Maven-built local node has no ILM module
        assert "lifecycle" not in json.dumps(body["template"]["settings"])
    else:
        assert body["template"]["settings"]["index"]["lifecycle"]["name"] == first["ilm_policy"]


def test_new_indices_get_the_mapping_and_unknown_fields_are_kept_not_indexed(es_client):
    """A daily index created by an event has the template's types; an unknown field stays in _source only."""
    settings = Settings(es_url="http://unused", es_index_prefix=_prefix())
    elastic.install_index_template(es_client, settings)
    doc = events.make_event(events.INFERENCE, question="what shape?", answer="circle", quality_score=0.9)
    doc["brand_new_field"] = {"nested": "value"}
    index = events.index_name(settings.es_index_prefix, doc)
    es_client.index(index=index, id=events.document_id(doc), document=doc, refresh=True)

    mapping = es_client.indices.get_mapping(index=index)[index]["mappings"]
    assert mapping["properties"][events.QUALITY_SCORE] == {"type": "float"}
    assert "brand_new_field" not in mapping["properties"]
    stored = es_client.get(index=index, id=events.document_id(doc))["_source"]
    assert stored["brand_new_field"] == {"nested": "value"}
    hits = es_client.search(index=index, query={"range": {events.QUALITY_SCORE: {"gte": 0.85}}})
    assert hits["hits"]["total"]["value"] == 1


def test_fields_added_later_reach_existing_indices(es_client):
    """Re-installing after an index exists adds mapped fields to that index too."""
    settings = Settings(es_url="http://unused", es_index_prefix=_prefix())
    index = f"{settings.es_index_prefix}-2026.01.01"
    es_client.indices.create(index=index, mappings={"dynamic": False, "properties": {}})
    elastic.install_index_template(es_client, settings)
    properties = es_client.indices.get_mapping(index=index)[index]["mappings"]["properties"]
    assert properties[events.LATENCY_SECONDS] == {"type": "float"}


def test_make_client_refuses_unusable_urls():
    """An empty or non-http ES_URL is a ElasticConfigError naming the problem, without the password."""
    with pytest.raises(elastic.ElasticConfigError, match="ES_URL is empty"):
        elastic.make_client(Settings(es_url=""))
    with pytest.raises(elastic.ElasticConfigError, match="not an http") as err:
        elastic.make_client(Settings(es_url="ftp://user:hunter2@host"))
    assert "hunter2" not in str(err.value)


def test_public_url_drops_user_and_password():
    """Credentials embedded in a URL never reach a message."""
    assert elastic.public_url("https://u:p@es.example:9243/base/") == "https://es.example:9243/base"
    assert elastic.public_url("http://127.0.0.1:9200") == "http://127.0.0.1:9200"


class _Recorder(BaseHTTPRequestHandler):
    """Records the Authorization header and answers like Elasticsearch's cluster health."""

    headers_seen: list[str] = []

    def do_GET(self) -> None:
        type(self).headers_seen.append(self.headers.get("Authorization", ""))
        body = json.dumps({"cluster_name": "rec", "status": "green"}).encode()
        self.send_response(200)
        self.send_header("X-elastic-product", "Elasticsearch")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"es_username": "vqa", "es_password": "pw"}, "Basic " + base64.b64encode(b"vqa:pw").decode()),
        ({"es_username": "vqa", "es_password": "pw", "es_api_key": "a2V5"}, "ApiKey a2V5"),
        ({}, ""),
    ],
)
def test_make_client_sends_the_configured_credentials(overrides, expected):
    """Basic auth from user/password, the API key when set (it wins), nothing when neither is set."""
    _Recorder.headers_seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings = Settings(es_url=f"http://127.0.0.1:{server.server_address[1]}", **overrides)
        client = elastic.make_client(settings)
        assert client.cluster.health()["status"] == "green"
        client.close()
    finally:
        server.shutdown()
        server.server_close()
    assert _Recorder.headers_seen == [expected]
