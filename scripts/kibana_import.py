"""Import the VQA Kibana objects (data view, LOG_EVENT search, dashboard) into a Kibana.

    python scripts/kibana_import.py --kibana-url http://kibana:5601 [--index-prefix vqa-logs]
    python scripts/kibana_import.py --write   # regenerate elk/kibana/saved_objects.ndjson

Credentials come from KIBANA_USERNAME / KIBANA_PASSWORD (or --user; the password only from the
environment). Field names are taken from app/events.py, so the objects follow the LOG_EVENT schema.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests

from app import events
from app.config import REPO_ROOT

NDJSON_PATH = REPO_ROOT / "elk" / "kibana" / "saved_objects.ndjson"
DEFAULT_PREFIX = "vqa-logs"
DATA_VIEW_ID = "vqa-log-events"
SEARCH_ID = "vqa-log-event-search"
DASHBOARD_ID = "vqa-overview"
SEARCH_COLUMNS = (events.QUESTION, events.ANSWER, events.QUALITY_SCORE, events.LATENCY_SECONDS)
INDEX_REF = "kibanaSavedObjectMeta.searchSourceJSON.index"
CORE_MIGRATION_VERSION = "8.8.0"
USER_ENV, PASSWORD_ENV = "KIBANA_USERNAME", "KIBANA_PASSWORD"


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
    """The data view on `<prefix>-*`, the LOG_EVENT search, four panels and the dashboard."""
    data_view = {
        "type": "index-pattern", "id": DATA_VIEW_ID, "coreMigrationVersion": CORE_MIGRATION_VERSION,
        "typeMigrationVersion": "8.0.0",
        "attributes": {"title": prefix + events.INDEX_PATTERN_SUFFIX, "timeFieldName": events.TIMESTAMP,
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
    ]
    grid = [(0, 0, 24, 12), (24, 0, 24, 12), (0, 12, 12, 12), (12, 12, 36, 12)]
    panels, references = [], []
    for i, (obj, (x, y, w, h)) in enumerate(zip(panels_objects, grid, strict=True)):
        ref = f"panel_{i}"
        panels.append({"panelIndex": str(uuid.UUID(int=i + 1)), "gridData": {"x": x, "y": y, "w": w, "h": h,
                       "i": str(uuid.UUID(int=i + 1))}, "embeddableConfig": {}, "panelRefName": ref,
                       "version": CORE_MIGRATION_VERSION, "type": "visualization"})
        references.append({"name": ref, "type": "visualization", "id": obj["id"]})
    panels.append({"panelIndex": str(uuid.UUID(int=99)), "gridData": {"x": 0, "y": 24, "w": 48, "h": 15,
                   "i": str(uuid.UUID(int=99))}, "embeddableConfig": {}, "panelRefName": "panel_4",
                   "version": CORE_MIGRATION_VERSION, "type": "search"})
    references.append({"name": "panel_4", "type": "search", "id": SEARCH_ID})
    dashboard = {
        "type": "dashboard", "id": DASHBOARD_ID, "coreMigrationVersion": CORE_MIGRATION_VERSION,
        "typeMigrationVersion": "8.7.0",
        "attributes": {
            "title": "VQA service health", "description": "Quality, latency, errors and watchdog decisions.",
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
            obj["attributes"]["title"] = prefix + events.INDEX_PATTERN_SUFFIX
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


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = argparse.ArgumentParser(
        description="Import the VQA data view, LOG_EVENT search and dashboard into Kibana "
        f"(user/password from {USER_ENV}/{PASSWORD_ENV}), or regenerate the NDJSON file with --write.",
    )
    parser.add_argument("--kibana-url", help="Kibana base URL, e.g. http://127.0.0.1:5601")
    parser.add_argument("--index-prefix", default=DEFAULT_PREFIX, help="events index prefix (ES_INDEX_PREFIX)")
    parser.add_argument("--user", default=os.environ.get(USER_ENV, ""), help=f"Kibana user (default ${USER_ENV})")
    parser.add_argument("--file", type=Path, default=NDJSON_PATH, help="the saved-objects NDJSON")
    parser.add_argument("--write", action="store_true", help="regenerate --file from app/events.py and exit")
    args = parser.parse_args(argv)
    if args.write:
        args.file.write_text(to_ndjson(build_saved_objects()))
        print(f"wrote {args.file}")
        return 0
    if not args.kibana_url:
        parser.error("--kibana-url is required (or --write)")
    password = os.environ.get(PASSWORD_ENV, "")
    auth = (args.user, password) if args.user else None
    try:
        result = import_objects(args.kibana_url, load_objects(args.file, args.index_prefix), auth)
    except (KibanaImportError, requests.RequestException) as exc:
        print(f"import into {args.kibana_url} failed: {exc}", file=sys.stderr)
        return 1
    print(f"imported {result.get('successCount', 0)} objects into {args.kibana_url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
