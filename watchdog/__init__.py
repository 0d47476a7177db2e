"""The self-healing watchdog: polls Elasticsearch, decides, and triggers retraining.

PyPI has a popular package with the same import name; `__project__` tells which one was imported.
"""

__project__ = "vqa-selfheal"


class WatchdogError(ValueError):
    """Base of the watchdog's errors; each subclass names what failed and what to change."""
