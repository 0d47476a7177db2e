"""Bring the local stack up: Elasticsearch, the VQA service (gunicorn, :5000) and the watchdog.

`python -m scripts.stack up` (what `make up` runs) starts a local single-node Elasticsearch
unless ES_URL points at one, then the service and the watchdog with the local trigger, prints
where everything is, and stops all of it on Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from app.config import REPO_ROOT, Settings
from app.logsetup import configure_logging
from app.serving.launch import start_service

log = logging.getLogger("stack")


def up(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    env = dict(os.environ)
    node = None
    if settings.es_url:
        es_url = settings.es_url
        log.info("using Elasticsearch at %s (ES_URL)", es_url)
    else:
        from infra.elasticsearch.launcher import ElasticsearchNode

        node = ElasticsearchNode(Path(settings.data_dir) / "elasticsearch", port=args.es_port)
        node.start()
        es_url = node.url
        log.info("started Elasticsearch at %s", es_url)
    env["ES_URL"] = es_url
    # The pipeline confirms hot reloads through /admin/reload; a per-run token if none is set.
    env.setdefault("VQA_ADMIN_TOKEN", secrets.token_hex(16))
    service_url = f"http://127.0.0.1:{args.port}"
    env.update({"PORT": str(args.port), "VQA_SERVICE_URL": service_url})
    children: list[subprocess.Popen] = []
    try:
        children.append(start_service(env, args.port, host="0.0.0.0", timeout=180))
        if not args.no_watchdog:
            children.append(subprocess.Popen([sys.executable, "-m", "watchdog", "--trigger", args.trigger],
                                             cwd=REPO_ROOT, env=env))
        print(f"""
VQA stack is up
  service        {service_url}   (try: curl -s -X POST {service_url}/predict -H 'Content-Type: application/json' \\
                   -d '{{"image_path": "test/0.png", "question": "what color is the shape?"}}')
  elasticsearch  {es_url}   (recent events: ES_URL={es_url} .venv/bin/python -m scripts.logs --since 10m)
  watchdog       {'off' if args.no_watchdog else f'trigger={args.trigger}, state in {settings.watchdog_state_file}'}
Ctrl-C stops everything.
""", flush=True)
        stop = {"flag": False}
        signal.signal(signal.SIGTERM, lambda *_: stop.update(flag=True))
        while not stop["flag"] and all(c.poll() is None for c in children):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for child in reversed(children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in reversed(children):
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
        if node is not None:
            node.stop()
        log.info("stack stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start Elasticsearch, the service and the watchdog")
    p_up.add_argument("--port", type=int, default=5000)
    p_up.add_argument("--es-port", type=int, default=9200)
    p_up.add_argument("--trigger", choices=["local", "jenkins"], default="local")
    p_up.add_argument("--no-watchdog", action="store_true")
    args = parser.parse_args(argv)
    configure_logging(logging.INFO)
    return up(args)


if __name__ == "__main__":
    raise SystemExit(main())
