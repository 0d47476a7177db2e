"""The VQA service package; `create_app()` builds the Flask app (gunicorn runs `app:create_app()`).

Importing `app` or its library modules (config, events, model, learning) loads no web framework:
Flask comes in with `app.serving`, which this function imports when it is called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

    from app.config import Settings

__all__ = ["create_app"]


def create_app(settings: Settings | None = None, *, shipper: Any = None, load_model: bool = True) -> Flask:
    """Build the app from `settings` (default: the environment); see `app.serving.factory.create_app`."""
    from app.serving.factory import create_app as build

    return build(settings, shipper=shipper, load_model=load_model)
