"""Print recent LOG_EVENTs from Elasticsearch, one line each, oldest first.

    python scripts/logs.py --since 10m [--event inference] [--limit 50] [--json]

Connection settings come from the environment (ES_URL, ES_USERNAME/ES_PASSWORD or ES_API_KEY,
ES_INDEX_PREFIX), as for the service; `--es-url` overrides ES_URL.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from elasticsearch import ApiError, Elasticsearch, TransportError

from app import events
from app.config import Settings
from app.elastic import index_pattern, make_client, public_url

SINCE_PATTERN = re.compile(r"^(\d+)([smhd])$")
# Shown after the timestamp and kind, in this order, when the event has them.
LINE_FIELDS = (
    events.REQUEST_ID, events.QUESTION, events.ANSWER, events.QUALITY_SCORE, events.LATENCY_SECONDS,
    events.DRIFT_SCORE, events.STATUS, events.ERROR_MESSAGE, events.CORRECT_ANSWER, events.IS_CORRECT,
    events.DECISION, events.RULE, events.REASON, events.SAMPLE_COUNT, events.AVG_QUALITY, events.AVG_DRIFT,
    events.ACCURACY, events.BUILD_ID, events.MODEL_VERSION, events.ADAPTER_VERSION,
)


class LogsQueryError(ValueError):
    """An argument of the query cannot be used (the message says which and why)."""


def since_to_date_math(since: str) -> str:
    """`10m` -> `now-10m` (s, m, h, d), for the @timestamp range."""
    match = SINCE_PATTERN.match(since.strip())
    if not match or int(match.group(1)) <= 0:
        raise LogsQueryError(f"--since {since!r}: expected a positive number and a unit s/m/h/d, e.g. 10m or 2h")
    return f"now-{match.group(1)}{match.group(2)}"


def recent_events(
    client: Elasticsearch, prefix: str, since: str = "10m", event: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """The newest `limit` events of the last `since` (optionally of one kind), oldest first."""
    if event is not None and event not in events.EVENT_KINDS:
        raise LogsQueryError(f"--event {event!r}: expected one of {', '.join(events.EVENT_KINDS)}")
    if limit <= 0:
        raise LogsQueryError(f"--limit {limit}: must be at least 1")
    filters: list[dict[str, Any]] = [{"range": {events.TIMESTAMP: {"gte": since_to_date_math(since)}}}]
    if event is not None:
        filters.append({"term": {events.EVENT: event}})
    found = client.search(
        index=index_pattern(prefix), query={"bool": {"filter": filters}}, size=limit,
        sort=[{events.TIMESTAMP: {"order": "desc"}}], ignore_unavailable=True, allow_no_indices=True,
    )
    return [hit["_source"] for hit in reversed(found["hits"]["hits"])]


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, str) and (" " in value or not value):
        return json.dumps(value)
    return str(value)


def format_event(doc: dict[str, Any]) -> str:
    """`<timestamp> <kind> key=value ...` with the fields of LINE_FIELDS the event has."""
    parts = [str(doc.get(events.TIMESTAMP, "?")), f"{doc.get(events.EVENT, '?'):<9}"]
    parts += [f"{name}={_show(doc[name])}" for name in LINE_FIELDS if doc.get(name) is not None]
    return " ".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 1 Elasticsearch unreachable, 2 bad arguments)."""
    parser = argparse.ArgumentParser(
        description="Print recent LOG_EVENTs from Elasticsearch (ES_URL etc. from the environment), oldest first.",
    )
    parser.add_argument("--since", default="10m", help="how far back: a number and s/m/h/d (default 10m)")
    parser.add_argument("--event", choices=events.EVENT_KINDS, help="only events of this kind")
    parser.add_argument("--limit", type=int, default=50, help="at most this many (the newest), default 50")
    parser.add_argument("--json", action="store_true", help="print each event as its JSON document instead")
    parser.add_argument("--es-url", help="Elasticsearch URL (default: ES_URL)")
    args = parser.parse_args(argv)

    settings = Settings.from_env(**({"es_url": args.es_url} if args.es_url else {}))
    if not settings.es_url:
        parser.error("ES_URL is empty: set it or pass --es-url (a local node: "
                     "python -m scripts.esnode.launcher start)")
    client = make_client(settings)
    try:
        docs = recent_events(client, settings.es_index_prefix, args.since, args.event, args.limit)
    except LogsQueryError as exc:
        parser.error(str(exc))
    except (ApiError, TransportError) as exc:
        print(f"cannot read events from {public_url(settings.es_url)}: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    for doc in docs:
        print(json.dumps(doc, sort_keys=True) if args.json else format_event(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
