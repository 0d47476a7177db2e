"""Import the VQA Kibana objects (data view, LOG_EVENT search, dashboard) into a Kibana.

    python -m scripts.kibana_import --kibana-url http://kibana:5601 [--index-prefix vqa-logs]
    python -m scripts.kibana_import --write   # regenerate elk/kibana/saved_objects.ndjson

Credentials come from KIBANA_USERNAME / KIBANA_PASSWORD (or --user; the password only from the
environment). Field names are taken from app/events/schema.py, so the objects follow the LOG_EVENT schema.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import requests

from app.events.kibana import (
    DEFAULT_PREFIX,
    FILEBEAT_PATH,
    NDJSON_PATH,
    KibanaImportError,
    build_saved_objects,
    filebeat_config,
    import_objects,
    load_objects,
    to_ndjson,
)

USER_ENV, PASSWORD_ENV = "KIBANA_USERNAME", "KIBANA_PASSWORD"


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
    parser.add_argument("--write", action="store_true",
                        help="regenerate --file and elk/filebeat/filebeat.yml's field list from app/events/schema.py")
    args = parser.parse_args(argv)
    if args.write:
        args.file.write_text(to_ndjson(build_saved_objects()))
        FILEBEAT_PATH.write_text(filebeat_config(FILEBEAT_PATH.read_text()))
        print(f"wrote {args.file} and {FILEBEAT_PATH}")
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
