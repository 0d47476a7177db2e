"""Print recent LOG_EVENTs from Elasticsearch, one line each, oldest first.

    python -m scripts.logs --since 10m [--event inference] [--limit 50] [--json]

Connection settings come from the environment (ES_URL, ES_USERNAME/ES_PASSWORD or ES_API_KEY,
ES_INDEX_PREFIX), as for the service; `--es-url` overrides ES_URL.
"""

from __future__ import annotations

import argparse
import json
import sys

from elasticsearch import ApiError, TransportError

from app.config import Settings
from app.events import schema as events
from app.events.elastic import make_client, public_url
from app.events.query import LogsQueryError, format_event, recent_events


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
                     "python -m infra.elasticsearch.launcher start)")
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
