"""Command line of the watchdog: `python -m watchdog [--once] [--dry-run] [--trigger jenkins|local]`.

Every setting comes from `Settings.from_env()`; bad configuration exits with status 2 and a message.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from app.config import ConfigError, Settings
from app.events.elastic import ElasticConfigError, make_client
from app.logsetup import configure_logging
from watchdog.loop import Watchdog
from watchdog.policy import TRIGGER_FAILED
from watchdog.sources import ElasticsearchSource
from watchdog.state import StateError, StateStore
from watchdog.triggers import TRIGGER_KINDS, make_trigger

log = logging.getLogger("watchdog")

EXIT_OK, EXIT_POLL_FAILED, EXIT_CONFIG = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m watchdog",
        description=(
            "Poll Elasticsearch for the service's recent inference and feedback events and trigger "
            "retraining (a Jenkins job or the local pipeline) when quality, drift or accuracy crosses "
            "its threshold. Thresholds, window, cooldown and endpoints come from the WATCHDOG_*, "
            "JENKINS_* and ES_* environment variables (see the README's configuration table)."
        ),
        epilog="Exit status: 0 ok; 1 with --once when Elasticsearch or the trigger failed; 2 bad configuration.",
    )
    parser.add_argument("--once", action="store_true", help="run one poll and exit")
    parser.add_argument("--dry-run", action="store_true",
                        help="decide and log only: trigger nothing, write no state and no decision event")
    parser.add_argument("--trigger", choices=TRIGGER_KINDS, default=None,
                        help="how to retrain (default: WATCHDOG_TRIGGER)")
    parser.add_argument("--interval", type=float, default=None, metavar="SECONDS",
                        help="seconds between polls (default: WATCHDOG_POLL_SECONDS)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, check the configuration, then poll once or forever."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    if args.log_level != "DEBUG":
        logging.getLogger("elastic_transport").setLevel(logging.WARNING)  # one INFO line per HTTP call
    try:
        settings = Settings.from_env()
        kind = args.trigger or settings.watchdog_trigger
        interval = settings.watchdog_poll_seconds if args.interval is None else args.interval
        if not settings.es_url:
            raise ConfigError("ES_URL is empty: the watchdog reads its statistics from Elasticsearch")
        if interval <= 0:
            raise ConfigError(f"poll interval must be positive, got {interval:g} (--interval / WATCHDOG_POLL_SECONDS)")
        trigger = make_trigger(kind, settings)
        store = StateStore(settings.watchdog_state_file)
        loop = Watchdog(settings, ElasticsearchSource(make_client(settings), settings), trigger, store,
                        dry_run=args.dry_run)
    except (ConfigError, ElasticConfigError, StateError) as exc:
        parser.exit(EXIT_CONFIG, f"watchdog: configuration error: {exc}\n")

    if args.once:
        decision = loop.poll()
        return EXIT_POLL_FAILED if decision is None or decision.decision == TRIGGER_FAILED else EXIT_OK

    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        log.info("received %s, stopping after this poll", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    loop.run(interval, stop)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
