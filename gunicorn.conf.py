"""Gunicorn settings for the VQA service; every value can be overridden on the command line.

One worker with threads by default: PyTorch already uses the cores, and one process keeps
one copy of the model in memory.
"""

import os

bind = f"0.0.0.0:{os.environ.get('PORT', '5000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = 120
graceful_timeout = 30
accesslog = None


def worker_exit(server, worker):
    """Flush queued events to Elasticsearch (or the spool) before the worker goes."""
    app = getattr(worker, "wsgi", None)
    service = getattr(app, "extensions", {}).get("vqa") if app is not None else None
    if service is not None:
        service.close()
