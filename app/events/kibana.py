"""The Kibana objects for LOG_EVENTs: the data view, the saved search, the panels and the dashboard.

Built from the event schema, so every field they name exists in the index mapping; `import_objects`
sends them to Kibana's saved-objects import API.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import requests

from app.config import REPO_ROOT
from app.events import schema as events

NDJSON_PATH = REPO_ROOT / "elk" / "kibana" / "saved_objects.ndjson"
DEFAULT_PREFIX = "vqa-logs"
DATA_VIEW_ID = "vqa-log-events"
SEARCH_ID = "vqa-log-event-search"
DASHBOARD_ID = "vqa-overview"
SEARCH_COLUMNS = (events.QUESTION, events.ANSWER, events.QUALITY_SCORE, events.LATENCY_SECONDS)
INDEX_REF = "kibanaSavedObjectMeta.searchSourceJSON.index"
CORE_MIGRATION_VERSION = "8.8.0"


class KibanaImportError(ValueError):
    """Kibana refused the import; the message lists what it said."""


def _search_source(query: str) -> dict[str, str]:
    source = {"query": {"query": query, "language": "kuery"}, "filter": [], "indexRefName": INDEX_REF}
    return {"searchSourceJSON": json.dumps(source, sort_keys=True)}


def _index_reference() -> list[dict[str, str]]:
    return [{"name": INDEX_REF, "type": "index-pattern", "id": DATA_VIEW_ID}]


def _line_chart(vis_id: str, title: str, metric: dict[str, Any], query: str, chart: str = "line") -> dict[str, Any]:
    """A legacy (aggregation-based) time-series chart of one metric, importable by Kibana 8 and 9."""
    vis_state = {
        "title": title,
        "type": chart,
        "aggs": [
            {"id": "1", "enabled": True, "schema": "metric", **metric},
            {"id": "2", "enabled": True, "type": "date_histogram", "schema": "segment",
             "params": {"field": events.TIMESTAMP, "interval": "auto", "min_doc_count": 1,
                        "extended_bounds": {}, "useNormalizedEsInterval": True}},
        ],
        "params": {
            "type": chart,
            "addLegend": True, "legendPosition": "right", "addTooltip": True, "addTimeMarker": False,
            "categoryAxes": [{"id": "CategoryAxis-1", "type": "category", "position": "bottom", "show": True,
                              "scale": {"type": "linear"}, "labels": {"show": True, "filter": True, "truncate": 100},
                              "title": {}}],
            "valueAxes": [{"id": "ValueAxis-1", "name": "LeftAxis-1", "type": "value", "position": "left",
                           "show": True, "scale": {"type": "linear", "mode": "normal"},
                           "labels": {"show": True, "rotate": 0, "filter": False, "truncate": 100},
                           "title": {"text": title}}],
            "seriesParams": [{"show": True, "type": chart, "mode": "normal", "data": {"id": "1", "label": title},
                              "valueAxis": "ValueAxis-1", "drawLinesBetweenPoints": True, "lineWidth": 2,
                              "showCircles": True, "interpolate": "linear"}],
            "grid": {"categoryLines": False}, "times": [], "thresholdLine": {"show": False},
        },
    }
    return _visualization(vis_id, title, query, vis_state)


def _visualization(vis_id: str, title: str, query: str, vis_state: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "visualization", "id": vis_id, "coreMigrationVersion": CORE_MIGRATION_VERSION,
        "typeMigrationVersion": "8.5.0",
        "attributes": {"title": title, "description": "", "uiStateJSON": "{}", "version": 1,
                       "visState": json.dumps(vis_state, sort_keys=True),
                       "kibanaSavedObjectMeta": _search_source(query)},
        "references": _index_reference(),
    }


def _metric(vis_id: str, title: str, query: str) -> dict[str, Any]:
    vis_state = {
        "title": title, "type": "metric",
        "aggs": [{"id": "1", "enabled": True, "type": "count", "schema": "metric", "params": {}}],
        "params": {"addTooltip": True, "addLegend": False, "type": "metric",
                   "metric": {"percentageMode": False, "useRanges": False, "colorSchema": "Green to Red",
                              "metricColorMode": "None", "colorsRange": [{"from": 0, "to": 10000}],
                              "labels": {"show": True}, "invertColors": False,
                              "style": {"bgFill": "#000", "bgColor": False, "labelColor": False, "subText": "",
                                        "fontSize": 60}}},
    }
    return _visualization(vis_id, title, query, vis_state)


def _kql(field: str, value: str) -> str:
    return f"{field} : \"{value}\""


def build_saved_objects(prefix: str = DEFAULT_PREFIX) -> list[dict[str, Any]]:
    """The data view on `<prefix>-*`, the LOG_EVENT search, five panels and the dashboard."""
    data_view = {
        "type": "index-pattern", "id": DATA_VIEW_ID, "coreMigrationVersion": CORE_MIGRATION_VERSION,
        "typeMigrationVersion": "8.0.0",
        "attributes": {"title": events.index_pattern(prefix), "timeFieldName": events.TIMESTAMP,
                       "name": "VQA LOG_EVENTs"},
        "references": [],
    }
    search = {
        "type": "search", "id": SEARCH_ID, "coreMigrationVersion": CORE_MIGRATION_VERSION,
        "typeMigrationVersion": "8.0.0",
        "attributes": {"title": events.LOG_PREFIX, "description": "Every inference with its answer and scores.",
                       "columns": list(SEARCH_COLUMNS), "sort": [[events.TIMESTAMP, "desc"]],
                       "kibanaSavedObjectMeta": _search_source(_kql(events.EVENT, events.INFERENCE))},
        "references": _index_reference(),
    }
    inference = _kql(events.EVENT, events.INFERENCE)
    panels_objects = [
        _line_chart("vqa-avg-quality", "Average quality_score",
                    {"type": "avg", "params": {"field": events.QUALITY_SCORE}}, inference),
        _line_chart("vqa-p95-latency", "p95 latency_seconds",
                    {"type": "percentiles", "params": {"field": events.LATENCY_SECONDS, "percents": [95]}},
                    inference),
        _metric("vqa-error-count", "Errors", _kql(events.EVENT, events.ERROR)),
        _line_chart("vqa-watchdog-events", "Watchdog decisions",
                    {"type": "count", "params": {}}, _kql(events.EVENT, events.WATCHDOG), chart="histogram"),
        # The window drift test of each poll: 0.5 while inputs look like the training images, towards 1
        # as they stop (greyscale, inversion), whatever the answers' confidence says.
        _line_chart("vqa-window-drift", "Window drift test: novelty AUC (max per bucket)",
                    {"type": "max", "params": {"field": events.DRIFT_TEST_STATISTIC}},
                    _kql(events.EVENT, events.WATCHDOG)),
    ]
    grid = [(0, 0, 24, 12), (24, 0, 24, 12), (0, 12, 12, 12), (12, 12, 36, 12), (0, 24, 48, 12)]
    panels, references = [], []
    for i, (obj, (x, y, w, h)) in enumerate(zip(panels_objects, grid, strict=True)):
        ref = f"panel_{i}"
        panels.append({"panelIndex": str(uuid.UUID(int=i + 1)), "gridData": {"x": x, "y": y, "w": w, "h": h,
                       "i": str(uuid.UUID(int=i + 1))}, "embeddableConfig": {}, "panelRefName": ref,
                       "version": CORE_MIGRATION_VERSION, "type": "visualization"})
        references.append({"name": ref, "type": "visualization", "id": obj["id"]})
    search_ref = f"panel_{len(panels_objects)}"
    panels.append({"panelIndex": str(uuid.UUID(int=99)), "gridData": {"x": 0, "y": 36, "w": 48, "h": 15,
                   "i": str(uuid.UUID(int=99))}, "embeddableConfig": {}, "panelRefName": search_ref,
                   "version": CORE_MIGRATION_VERSION, "type": "search"})
    references.append({"name": search_ref, "type": "search", "id": SEARCH_ID})
    dashboard = {
        "type": "dashboard", "id": DASHBOARD_ID, "coreMigrationVersion": CORE_MIGRATION_VERSION,
        "typeMigrationVersion": "8.7.0",
        "attributes": {
            "title": "VQA service health",
            "description": "Quality, latency, errors, watchdog decisions and the window drift test.",
            "panelsJSON": json.dumps(panels, sort_keys=True), "timeRestore": True, "timeFrom": "now-24h",
            "timeTo": "now", "refreshInterval": {"pause": False, "value": 30000},
            "optionsJSON": json.dumps({"useMargins": True, "syncColors": False, "hidePanelTitles": False}),
            "version": 1,
            "kibanaSavedObjectMeta": {"searchSourceJSON": json.dumps(
                {"query": {"query": "", "language": "kuery"}, "filter": []})},
        },
        "references": references,
    }
    return [data_view, search, *panels_objects, dashboard]


def to_ndjson(objects: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(obj, sort_keys=True) + "\n" for obj in objects)


def load_objects(path: Path = NDJSON_PATH, prefix: str = DEFAULT_PREFIX) -> list[dict[str, Any]]:
    """The committed objects, with the data view retargeted to `<prefix>-*`."""
    objects = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for obj in objects:
        if obj["type"] == "index-pattern":
            obj["attributes"]["title"] = events.index_pattern(prefix)
    return objects


def import_objects(
    kibana_url: str, objects: list[dict[str, Any]], auth: tuple[str, str] | None = None, timeout: float = 30.0
) -> dict[str, Any]:
    """POST the objects to `/api/saved_objects/_import?overwrite=true`; returns Kibana's answer."""
    resp = requests.post(
        kibana_url.rstrip("/") + "/api/saved_objects/_import",
        params={"overwrite": "true"},
        headers={"kbn-xsrf": "vqa-selfheal"},
        files={"file": ("saved_objects.ndjson", to_ndjson(objects).encode(), "application/ndjson")},
        auth=auth, timeout=timeout,
    )
    try:
        body = resp.json()
    except ValueError:
        body = {"raw": resp.text[:500]}
    if resp.status_code != 200 or not body.get("success", False):
        raise KibanaImportError(f"Kibana answered {resp.status_code}: {json.dumps(body)[:1000]}")
    return body


FILEBEAT_PATH = REPO_ROOT / "elk" / "filebeat" / "filebeat.yml"
_BEGIN, _END = "# BEGIN fields generated", "# END fields generated"


def filebeat_config(text: str) -> str:
    """filebeat.yml `text` with its `include_fields` list regenerated from the LOG_EVENT schema.

    Filebeat reads static YAML, so the list is written into the file between two marker comments;
    everything else in the file is kept as written.
    """
    lines = text.splitlines(keepends=True)
    begin = next(i for i, line in enumerate(lines) if _BEGIN in line)
    end = next(i for i, line in enumerate(lines) if _END in line)
    indent = lines[begin][: len(lines[begin]) - len(lines[begin].lstrip())]
    fields = [f"{indent}- {name}\n" for name in events.FIELD_TYPES if name != events.TIMESTAMP]
    return "".join(lines[: begin + 1] + fields + lines[end:])
