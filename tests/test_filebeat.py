"""elk/filebeat/filebeat.yml agrees with app/events/schema.py, and its documents match the shipper's.

Filebeat itself cannot run here: the config is parsed and checked against the module constants, its
JavaScript processor runs in Node.js against Filebeat's event API (Get/Put), and the resulting
document is indexed into the real Elasticsearch node next to the shipper's copy of the same event.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid

import pytest
import yaml

from app.config import REPO_ROOT, Settings
from app.events import elastic
from app.events import schema as events

FILEBEAT_YML = REPO_ROOT / "elk" / "filebeat" / "filebeat.yml"
KUBERNETES_FIELDS = {"kubernetes.namespace", "kubernetes.pod.name", "kubernetes.node.name", "kubernetes.container.name"}

# Filebeat's JavaScript event API, as far as the processor uses it: Get/Put on dotted keys, Cancel.
NODE_HARNESS = r"""
const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));
function lookup(obj, key) {
  return key.split('.').reduce((o, k) => (o !== null && o !== undefined && k in o) ? o[k] : null, obj);
}
const out = input.events.map(fields => {
  const event = {
    fields: fields, cancelled: false,
    Get(key) { return lookup(this.fields, key); },
    Put(key, value) {
      const parts = key.split('.'); let o = this.fields;
      parts.slice(0, -1).forEach(k => { if (!(k in o)) o[k] = {}; o = o[k]; });
      o[parts[parts.length - 1]] = value;
    },
    Cancel() { this.cancelled = true; },
  };
  const process = new Function(input.source + '\nreturn process;')();
  process(event);
  return event.cancelled ? null : event.fields;
});
process.stdout.write(JSON.stringify(out));
"""


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(FILEBEAT_YML.read_text())


def _processor(config: dict, name: str) -> dict:
    return next(p[name] for p in config["processors"] if name in p)


def _all_kinds() -> list[dict]:
    return [
        events.make_event(events.INFERENCE, question="what color?", answer="red", quality_score=0.8,
                          latency_seconds=0.12, drift_score=0.3, model_version="m", adapter_version="a",
                          image_path="test/1.png"),
        events.make_event(events.ERROR, status=500, error="model failed"),
        events.make_event(events.FEEDBACK, request_id="abc123", correct_answer="blue", is_correct=False),
        events.make_event(events.WATCHDOG, decision="retrain", rule="quality", reason="avg below 0.75",
                          sample_count=60, avg_quality_score=0.6, avg_drift_score=1.0, accuracy=0.7,
                          feedback_count=25, build_id="42"),
        events.make_event(events.RELOAD, model_version="m", adapter_version="b", reason="promoted"),
    ]


def test_input_reads_container_stdout_and_keeps_only_log_event_lines(config):
    """filestream + container parser on /var/log/containers; include_lines matches exactly format_line()'s lines."""
    [source] = config["filebeat.inputs"]
    assert source["type"] == "filestream" and source["id"]
    assert source["paths"] == ["/var/log/containers/*.log"]
    assert source["parsers"] == [{"container": {"stream": "stdout", "format": "auto"}}]
    patterns = [re.compile(p) for p in source["include_lines"]]
    for doc in _all_kinds():
        assert any(p.search(events.format_line(doc)) for p in patterns)
    for other in ("INFO app: settings loaded", '127.0.0.1 - "POST /predict" 200', "LOG_EVENTS are great", ""):
        assert not any(p.search(other) for p in patterns), other


def test_decoding_uses_the_log_prefix_and_puts_fields_at_the_top(config):
    """dissect strips `LOG_EVENT `; decode_json_fields writes to the root, overwriting @timestamp."""
    dissect = _processor(config, "dissect")
    assert dissect["tokenizer"] == f"{events.LOG_PREFIX} %{{json}}"
    decode = _processor(config, "decode_json_fields")
    assert decode["fields"] == [f"{dissect['target_prefix']}.json"]
    assert decode["target"] == "" and decode["overwrite_keys"] is True


def test_the_kept_field_list_is_the_one_generated_from_the_schema():
    """filebeat.yml's include_fields block is what `scripts.kibana_import --write` generates from the schema."""
    from app.events.kibana import FILEBEAT_PATH, filebeat_config

    text = FILEBEAT_PATH.read_text()
    assert filebeat_config(text) == text


def test_kept_fields_are_the_event_fields_plus_pod_metadata(config):
    """include_fields lists every events.FIELD_TYPES field (Filebeat always keeps @timestamp) and the pod."""
    kept = set(_processor(config, "include_fields")["fields"])
    assert kept == (set(events.FIELD_TYPES) - {events.TIMESTAMP}) | KUBERNETES_FIELDS


def test_output_index_matches_the_shipper_and_no_template_is_installed(config):
    """Index `${ES_INDEX_PREFIX:vqa-logs}-%{+yyyy.MM.dd}`; connection from ${ES_URL}; Filebeat's template off."""
    out = config["output.elasticsearch"]
    assert out["hosts"] == ["${ES_URL}"]
    prefix = Settings().es_index_prefix
    assert out["index"] == "${ES_INDEX_PREFIX:" + prefix + "}-%{+yyyy.MM.dd}"
    assert "${ES_PASSWORD" in out["password"] and "${ES_USERNAME" in out["username"]
    assert config["setup.template.enabled"] is False and config["setup.ilm.enabled"] is False
    doc = _all_kinds()[0]
    day = doc[events.TIMESTAMP][:10].replace("-", ".")  # what %{+yyyy.MM.dd} makes of the event's @timestamp
    assert events.index_name(Settings().es_index_prefix, doc) == f"{Settings().es_index_prefix}-{day}"


def _run_script(config: dict, docs: list[dict]) -> list[dict | None]:
    node = shutil.which("node")
    assert node, "Node.js runs the Filebeat JavaScript processor in this test; install nodejs"
    source = _processor(config, "script")["source"]
    done = subprocess.run([node, "-e", NODE_HARNESS], input=json.dumps({"source": source, "events": docs}),
                          capture_output=True, text=True, check=True, timeout=60)
    return json.loads(done.stdout)


def test_the_script_sets_the_document_id_the_shipper_uses(config):
    """@metadata._id is events.document_id(): request_id, or feedback-<request_id> for feedback."""
    docs = _all_kinds()
    results = _run_script(config, [dict(d) for d in docs])
    for doc, result in zip(docs, results, strict=True):
        assert result["@metadata"]["_id"] == events.document_id(doc)


def _filebeat_document(config: dict, doc: dict) -> tuple[str, dict]:
    """What filebeat.yml makes of the container line carrying `doc`: (_id, document body)."""
    line = events.format_line(doc)
    assert line.startswith(_processor(config, "dissect")["tokenizer"].split("%{")[0])
    fields = {
        "@timestamp": "2030-01-01T00:00:00.000Z",  # read time, replaced by the event's own
        "message": line, "stream": "stdout", "input": {"type": "filestream"},
        "log": {"file": {"path": "/var/log/containers/vqa-abc_default_vqa-123.log"}, "offset": 0},
        "agent": {"type": "filebeat"}, "ecs": {"version": "8.0.0"}, "host": {"name": "node-1"},
        "container": {"id": "123", "runtime": "containerd"},
        "kubernetes": {"namespace": "default", "pod": {"name": "vqa-abc", "uid": "u"}, "node": {"name": "node-1"},
                       "container": {"name": "vqa"}, "labels": {"app_kubernetes_io/name": "vqa"}},
    }
    fields["vqa_line"] = {"json": line[len(events.LOG_PREFIX) + 1:]}
    fields.update(json.loads(fields["vqa_line"]["json"]))  # decode_json_fields, target "", overwrite_keys
    [fields] = _run_script(config, [fields])
    doc_id = fields["@metadata"]["_id"]
    kept = set(_processor(config, "include_fields")["fields"]) | {"@timestamp"}
    body: dict = {}
    for key in kept:
        value = fields
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is not None:
            target = body
            *parents, last = key.split(".")
            for part in parents:
                target = target.setdefault(part, {})
            target[last] = value
    return doc_id, body


def test_filebeat_and_shipper_documents_land_as_one(es_client, config):
    """Indexing the shipper's and Filebeat's copy of each event leaves one document per event, same fields."""
    prefix = f"fb-{uuid.uuid4().hex[:10]}"
    elastic.install_index_template(es_client, Settings(es_url="http://unused", es_index_prefix=prefix))
    docs = _all_kinds()
    for doc in docs:
        index = events.index_name(prefix, doc)
        es_client.index(index=index, id=events.document_id(doc), document=doc)  # the shipper's write
        doc_id, body = _filebeat_document(config, doc)
        assert {k: v for k, v in body.items() if k != "kubernetes"} == doc
        assert body["kubernetes"] == {"namespace": "default", "pod": {"name": "vqa-abc"},
                                      "node": {"name": "node-1"}, "container": {"name": "vqa"}}
        es_client.index(index=index, id=doc_id, document=body)  # Filebeat's write, same index and id
    es_client.indices.refresh(index=f"{prefix}-*")
    hits = es_client.search(index=f"{prefix}-*", size=50)["hits"]["hits"]
    assert len(hits) == len(docs)
    by_id = {h["_id"]: h["_source"] for h in hits}
    for doc in docs:
        stored = by_id[events.document_id(doc)]
        assert {k: v for k, v in stored.items() if k != "kubernetes"} == doc
