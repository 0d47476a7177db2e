"""Console entry points that must work whichever `watchdog` a Python path finds first.

PyPI's `watchdog` (file-system events) has the same import name as this project's watchdog package;
`vqa-watchdog` checks for it before importing, so a clash fails loudly with the fix instead of strangely.
"""

from __future__ import annotations

import importlib.metadata

PYPI_WATCHDOG = "watchdog"
CLASH_MESSAGE = (
    "PyPI's `watchdog` package ({version}) is installed in this environment ({where}). It has the same "
    "import name as this project's watchdog, so one of them shadows the other. Uninstall it "
    "(`pip uninstall watchdog`) or run the project in its own virtualenv (`make venv`)."
)


class WatchdogNameClash(ImportError):
    """PyPI's `watchdog` is installed beside this project's `watchdog` package."""


def check_watchdog_import_name() -> None:
    """Raise `WatchdogNameClash` if a distribution named `watchdog` (PyPI's library) is installed."""
    try:
        dist = importlib.metadata.distribution(PYPI_WATCHDOG)
    except importlib.metadata.PackageNotFoundError:
        return
    raise WatchdogNameClash(CLASH_MESSAGE.format(version=dist.version, where=dist.locate_file("")))


def watchdog_main() -> int:
    """`vqa-watchdog`: the same as `python -m watchdog`, from any directory."""
    try:
        check_watchdog_import_name()
    except WatchdogNameClash as exc:
        raise SystemExit(f"vqa-watchdog: {exc}") from None
    from watchdog.__main__ import main

    return main()
