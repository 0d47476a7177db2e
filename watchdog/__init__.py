"""The self-healing watchdog: polls Elasticsearch, decides, and triggers retraining.

PyPI's file-system-events library is also imported as `watchdog`; installed beside this project,
one would shadow the other, so this package refuses to load where that library is installed.
"""

from app.entrypoints import check_watchdog_import_name

__project__ = "vqa-selfheal"

check_watchdog_import_name()


class WatchdogError(ValueError):
    """Base of the watchdog's errors; each subclass names what failed and what to change."""
