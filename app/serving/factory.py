"""The app factory: `create_app()` wires settings, the shipper, the model holder and the routes.

Nothing heavy happens at import: the model loads in the background once the app is built,
and `/readyz` says when it is ready.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from flask import Flask
from werkzeug.exceptions import HTTPException

from app.config import Settings
from app.events import schema as events
from app.logsetup import configure_logging


def configure_event_logging() -> None:
    """LOG_EVENT lines go to stdout as bare lines (Filebeat and `docker logs` read them)."""
    logger = logging.getLogger(events.LOGGER_NAME)
    if not any(getattr(h, "_vqa_events", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._vqa_events = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    configure_logging(logging.INFO)


def create_app(settings: Settings | None = None, *, shipper: Any = None, load_model: bool = True) -> Flask:
    """Build the app from `settings` (default: the environment).

    `shipper` replaces the Elasticsearch shipper (anything with submit/health/stats/close);
    `load_model=False` leaves the model unloaded (the app answers 503 until it is).
    """
    from app.serving import routes
    from app.serving.metrics import Metrics
    from app.serving.service import Service

    settings = settings or Settings.from_env()
    configure_event_logging()
    if settings.torch_threads > 0:
        import torch

        torch.set_num_threads(settings.torch_threads)
    if shipper is None:
        from app.events.shipper import EventShipper

        shipper = EventShipper(settings)
        shipper.start()

    app = Flask(__name__)
    app.config.from_mapping(MAX_CONTENT_LENGTH=settings.max_content_length, JSON_SORT_KEYS=False)
    service = Service(settings, shipper, Metrics(settings.metrics_dir))
    app.extensions["vqa"] = service
    app.register_blueprint(routes.bp)
    app.register_error_handler(HTTPException, routes.handle_http_error)
    app.register_error_handler(Exception, routes.handle_unexpected)
    logging.getLogger(__name__).info("settings: %s", settings.redacted())
    service.start(load_model=load_model)
    return app
