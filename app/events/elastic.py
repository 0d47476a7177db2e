"""The Elasticsearch side of LOG_EVENTs: a client built from Settings, the index template, retention.

The template's mappings come from `events.FIELD_TYPES`, so the shipper, Filebeat, the watchdog
and Kibana all see the same field types; `install_index_template` is idempotent.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from elasticsearch import ApiError, AuthorizationException, BadRequestError, Elasticsearch, NotFoundError

from app.config import Settings
from app.events import schema as events

log = logging.getLogger(__name__)

RETENTION_DAYS = 30
TEMPLATE_PRIORITY = 200


class ElasticConfigError(ValueError):
    """The Elasticsearch settings cannot make a client (the message names the variable)."""


def public_url(url: str) -> str:
    """`url` without any user:password part, safe for logs and health messages."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url.rstrip("/")
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment)).rstrip("/")


def make_client(settings: Settings, *, request_timeout: float = 10.0, max_retries: int = 2) -> Elasticsearch:
    """A client for `settings.es_url`: API key if set, else basic auth if a user is set, else none."""
    if not settings.es_url:
        raise ElasticConfigError("ES_URL is empty: there is no Elasticsearch to connect to")
    parts = urlsplit(settings.es_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ElasticConfigError(f"ES_URL={public_url(settings.es_url)!r} is not an http(s)://host[:port] URL")
    kwargs: dict[str, Any] = {
        "request_timeout": request_timeout,
        "max_retries": max_retries,
        "retry_on_timeout": max_retries > 0,
    }
    if settings.es_api_key:
        kwargs["api_key"] = settings.es_api_key
    elif settings.es_username:
        kwargs["basic_auth"] = (settings.es_username, settings.es_password)
    return Elasticsearch(settings.es_url, **kwargs)


def template_name(prefix: str) -> str:
    return f"{prefix}-events"


def ilm_policy_name(prefix: str) -> str:
    return f"{prefix}-retention"


def mappings() -> dict[str, Any]:
    """Explicit mappings of every LOG_EVENT field.

    `dynamic: false`: a field the code does not know yet is kept in `_source` but not indexed, so a
    new field never makes Elasticsearch reject events (as `strict` would) nor guess a type that
    later conflicts with the real one (as `true` would).
    """
    fields = json.dumps(events.FIELD_TYPES, sort_keys=True).encode()
    return {
        "dynamic": False,
        "_meta": {"managed_by": "vqa-selfheal", "fields_sha256": hashlib.sha256(fields).hexdigest()[:16]},
        "properties": {name: dict(spec) for name, spec in events.FIELD_TYPES.items()},
    }


def index_template(prefix: str, ilm_policy: str | None = None) -> dict[str, Any]:
    """The composable index template body for `<prefix>-*`."""
    index_settings: dict[str, Any] = {"number_of_shards": 1, "auto_expand_replicas": "0-1"}
    if ilm_policy:
        index_settings["index.lifecycle.name"] = ilm_policy
    return {
        "index_patterns": [events.index_pattern(prefix)],
        "priority": TEMPLATE_PRIORITY,
        "template": {"settings": index_settings, "mappings": mappings()},
        "_meta": {"description": "VQA LOG_EVENTs (app/events/schema.py)"},
    }


def ilm_policy(days: int = RETENTION_DAYS) -> dict[str, Any]:
    """Delete an event index `days` after it was created."""
    return {"phases": {"hot": {"actions": {}}, "delete": {"min_age": f"{days}d", "actions": {"delete": {}}}}}


def _install_ilm_policy(client: Elasticsearch, name: str) -> str | None:
    """Create or update the retention policy; None where the cluster has no ILM (e.g. the local node)."""
    try:
        client.ilm.put_lifecycle(name=name, policy=ilm_policy())
    except (BadRequestError, NotFoundError) as exc:
        if "no handler found" in str(exc.body or exc.message):
            log.info("this Elasticsearch has no ILM; events are kept until their index is deleted")
            return None
        raise
    except AuthorizationException as exc:
        log.warning("not allowed to manage ILM policies, index template installed without one: %s", exc.message)
        return None
    return name


def install_index_template(client: Elasticsearch, settings: Settings) -> dict[str, Any]:
    """Install (or update) the retention policy and the index template; returns what was installed.

    Fields added to `events.FIELD_TYPES` since an index was created are also added to the existing
    `<prefix>-*` indices, so today's index does not wait for tomorrow's to map them.
    """
    prefix = settings.es_index_prefix
    policy = _install_ilm_policy(client, ilm_policy_name(prefix))
    name = template_name(prefix)
    body = index_template(prefix, policy)
    client.indices.put_index_template(name=name, **body)
    try:
        client.indices.put_mapping(
            index=events.index_pattern(prefix), properties=body["template"]["mappings"]["properties"],
            allow_no_indices=True, ignore_unavailable=True,
        )
    except ApiError as exc:
        log.warning("existing %s indices keep their old mappings: %s", events.index_pattern(prefix), exc.message)
    log.info("installed index template %s for %s (ILM policy: %s)", name, events.index_pattern(prefix),
             policy or "none")
    return {"template": name, "ilm_policy": policy}
