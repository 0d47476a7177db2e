"""Gunicorn settings for the VQA service, from the same Settings as the app (WEB_CONCURRENCY, GUNICORN_THREADS, ...).

Command-line flags still override these. Each worker holds one model copy and batches its own
requests; threads only carry requests to the worker's model thread, so there are many of them.
"""

import os
import secrets
import shutil
import tempfile

from app.config import Settings
from app.serving.balance import ConnectionTable, WorkerShare
from app.serving.worker import WORKER_CLASS

settings = Settings.from_env()
bind = f"0.0.0.0:{os.environ.get('PORT', '5000')}"
workers = settings.web_concurrency
threads = settings.gunicorn_threads
worker_class = WORKER_CLASS  # gthread whose threads keep a keep-alive connection a moment (app/serving/worker.py)
timeout = 120
graceful_timeout = 30
accesslog = None

_made_metrics_dir = None
# Made here, in the master, so every forked worker shares it (app/serving/balance.py). Slots beyond
# `workers` leave room for `--workers`, workers added with TTIN and replacements forked before the
# old one exits. With one live worker it never closes anything.
connections = ConnectionTable(max(16, 2 * workers + 4)) if settings.balance_connections else None


def on_starting(server):
    """Before any worker starts: what the workers must share, put in the environment they inherit.

    - PROMETHEUS_MULTIPROC_DIR, a fresh folder unless one is given (cleared: old files would count
      twice); prometheus_client reads it when a worker imports it, so it must be set here, first.
    - VQA_RECEIPT_KEY, so a receipt issued by one worker is accepted by the others.
    - VQA_TORCH_THREADS=1 unless set: PyTorch's default of a thread per core, in every worker, would
      oversubscribe the cores, and an operation waits for its slowest thread; a worker per core
      (WEB_CONCURRENCY) uses them without contention.
    """
    global _made_metrics_dir
    if settings.metrics_dir:
        os.makedirs(settings.metrics_dir, exist_ok=True)
        for name in os.listdir(settings.metrics_dir):
            if name.endswith(".db"):
                os.unlink(os.path.join(settings.metrics_dir, name))
    else:
        _made_metrics_dir = tempfile.mkdtemp(prefix="vqa-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = _made_metrics_dir
    if not settings.receipt_key:
        os.environ["VQA_RECEIPT_KEY"] = secrets.token_hex(32)
    if settings.torch_threads <= 0:
        os.environ["VQA_TORCH_THREADS"] = "1"


def pre_fork(server, worker):
    """In the master: the worker about to be forked gets a slot of the connection table.

    The worker keeps the table it was given: a reload (HUP) runs this file again and makes a new
    table for the new workers, and an old worker's exit must free its slot in the old one.
    """
    worker.vqa_table = connections
    worker.vqa_slot = connections.assign() if connections is not None else None


def post_fork(server, worker):
    """In the new worker: it takes its slot, so the others count its connections."""
    if worker.vqa_slot is not None:
        worker.vqa_table.bind(worker.vqa_slot, os.getpid())
        worker.vqa_share = WorkerShare(worker.vqa_table, worker.vqa_slot)


def pre_request(worker, req):
    """Publish how many connections this worker holds (and count its requests); if that is above its
    share, answer this request with `Connection: close`, and the client reconnects, most often to another
    worker (app/serving/balance.py).

    `nr_conns` is the gthread worker's count of the connections it holds; other worker classes keep
    none alive and are left alone.
    """
    held = getattr(worker, "nr_conns", None)
    if held is None:
        return
    service = getattr(worker.wsgi, "extensions", {}).get("vqa")
    if service is not None and req.path != "/metrics":  # a scrape's own connection would skew what it reads
        service.metrics.connections.set(held)
        service.metrics.worker_requests.inc()
    share = getattr(worker, "vqa_share", None)
    if share is None or not share.on_request(held):
        return
    req.must_close = req.vqa_rebalanced = True
    if service is not None:
        service.metrics.rebalanced.inc()


def post_request(worker, req, environ, resp):
    """The response of a connection marked for closing is out: stop counting it apart."""
    if getattr(req, "vqa_rebalanced", False):
        worker.vqa_share.closed()


def post_worker_init(worker):
    """Accept connections only once this worker's model is loaded (or failed to load, which /readyz names).

    Otherwise, with several workers, the first one ready makes /readyz pass and the others answer 503
    until their own model is in; a worker that is not accepting yet leaves its connections to the rest.
    """
    service = getattr(worker.wsgi, "extensions", {}).get("vqa")
    if service is not None:
        service.models.wait_ready(max(1.0, timeout - 10))


def child_exit(server, worker):
    """A worker ended (exit, crash or restart): its live gauges stop counting, its counters stay, and
    its connections no longer count towards the others' share."""
    from prometheus_client import multiprocess

    table = getattr(worker, "vqa_table", None)
    if table is not None:
        table.free(getattr(worker, "vqa_slot", None))

    multiprocess.mark_process_dead(worker.pid)


def worker_exit(server, worker):
    """Answer what is queued and flush events to Elasticsearch (or the spool) before the worker goes."""
    app = getattr(worker, "wsgi", None)
    service = getattr(app, "extensions", {}).get("vqa") if app is not None else None
    if service is not None:
        service.close()


def on_exit(server):
    if _made_metrics_dir:
        shutil.rmtree(_made_metrics_dir, ignore_errors=True)
