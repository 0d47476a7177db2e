"""Bring the local stack up: Elasticsearch, the VQA service (gunicorn, :5000) and the watchdog.

`python -m scripts.stack up` (what `make up` runs) starts a local single-node Elasticsearch
unless ES_URL points at one, then the service (on VQA_BIND_HOST, loopback by default) and the
watchdog with the local trigger, prints where everything is, and stops all of it on Ctrl-C.
A child that dies is restarted with backoff and the log says so; one that keeps dying stops the
stack with exit status 1. The logic is infra/stack.py.
"""

from __future__ import annotations

import argparse
import logging

from app.config import Settings
from app.logsetup import configure_logging
from infra.stack import StackOptions, up


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start Elasticsearch, the service and the watchdog, and keep them running")
    p_up.add_argument("--port", type=int, default=5000, help="the service's port (default 5000)")
    p_up.add_argument("--es-port", type=int, default=9200, help="the local Elasticsearch's port (default 9200)")
    p_up.add_argument("--trigger", choices=["local", "jenkins"], default="local",
                      help="how the watchdog retrains (default local: runs the pipeline here)")
    p_up.add_argument("--no-watchdog", action="store_true", help="start no watchdog")
    args = parser.parse_args(argv)
    configure_logging(logging.INFO)
    options = StackOptions(port=args.port, es_port=args.es_port, trigger=args.trigger, watchdog=not args.no_watchdog)
    return up(Settings.from_env(), options)


if __name__ == "__main__":
    raise SystemExit(main())
