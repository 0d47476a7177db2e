"""The one place logging is configured, for the service, the watchdog and every script.

One line format everywhere, and the Elasticsearch transport's per-request INFO lines kept quiet.
"""

from __future__ import annotations

import logging

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: int | str = logging.INFO) -> None:
    """Root handler on stderr in `LOG_FORMAT` (a no-op if one is set already)."""
    logging.basicConfig(level=level, format=LOG_FORMAT)
    logging.getLogger("elastic_transport").setLevel(logging.WARNING)  # one INFO line per HTTP call
