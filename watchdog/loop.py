"""One watchdog poll (status -> stats -> decide -> trigger -> save -> record -> log) and the loop around it.

Elasticsearch or Jenkins being down costs one poll: it is logged and the next poll tries again.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from app.config import ConfigError, Settings
from watchdog.policy import TRIGGER, Decision, decide
from watchdog.sources import ElasticsearchSource, SourceError
from watchdog.state import ACTIVE_PHASES, UNKNOWN, StateStore, TriggerRef, WatchdogState
from watchdog.triggers import Trigger, TriggerError, make_trigger

log = logging.getLogger(__name__)


class Watchdog:
    """Holds the source, the trigger and the state between polls."""

    def __init__(self, settings: Settings, source: ElasticsearchSource, trigger: Trigger, store: StateStore,
                 *, dry_run: bool = False):
        self.settings = settings
        self.source = source
        self.trigger = trigger
        self.store = store
        self.dry_run = dry_run
        self.state = store.load()

    def poll(self, now: datetime | None = None) -> Decision | None:
        """One check; the decision, or None when Elasticsearch could not be read."""
        now = now or datetime.now(UTC)
        self._refresh_build()
        try:
            stats = self.source.window_stats(now)
        except SourceError as exc:
            log.error("watchdog poll skipped, will retry next poll: %s", exc)
            return None
        decision = decide(stats, self.state, now, self.settings)
        ref: TriggerRef | None = self.state.ref if self.state.build_phase in ACTIVE_PHASES else None
        if decision.decision == TRIGGER and not self.dry_run:
            try:
                ref = self.trigger.trigger(decision)
            except TriggerError as exc:
                log.error("%s; will retry next poll", exc)
                decision = decision.failed(str(exc))
            else:
                self._save(WatchdogState.after_trigger(now, decision.rule, decision.reason, ref,
                                                       self.trigger.started_phase))
        if not self.dry_run:
            try:
                self.source.record_decision(decision, ref)
            except SourceError as exc:
                log.warning("decision not recorded in Elasticsearch: %s", exc)
        test = decision.stats.drift_test
        log.info("%sdecision=%s rule=%s samples=%d build=%s drift_test=%s reason=%s",
                 "[dry-run] " if self.dry_run else "", decision.decision, decision.rule, decision.stats.sample_count,
                 ref.label if ref else "-",
                 f"auc:{test.statistic:.3f},p:{test.p_value:.4f}" if test and test.p_value is not None else "-",
                 decision.reason)
        return decision

    def run(self, interval: float, stop: threading.Event | None = None) -> None:
        """Poll every `interval` seconds until `stop` is set."""
        stop = stop or threading.Event()
        log.info("watchdog started: trigger=%s interval=%gs window=%gmin dry_run=%s state=%s",
                 self.trigger.kind, interval, self.settings.watchdog_window_minutes, self.dry_run, self.store.path)
        while not stop.is_set():
            self.poll()
            stop.wait(interval)
        log.info("watchdog stopped")

    def _refresh_build(self) -> None:
        """Ask the trigger where the last build is, unless it is known to be over."""
        state = self.state
        if state.ref is None or state.build_phase not in ACTIVE_PHASES:
            return
        checker = self.trigger
        if state.ref.kind != checker.kind:
            try:
                checker = make_trigger(state.ref.kind, self.settings)
            except ConfigError as exc:
                # Configuration only changes with a restart: waiting would block triggering forever.
                log.warning("cannot check %s build %s with this configuration (%s); its phase is now unknown",
                            state.ref.kind, state.ref.label, exc)
                self._save(state.with_status(UNKNOWN, state.ref, None))
                return
        try:
            status = checker.status(state.ref)
        except TriggerError as exc:
            # Keep the last known phase: "cannot ask" is not "finished".
            log.warning("build status unavailable, keeping %r: %s", state.build_phase, exc)
            return
        if (status.phase, status.ref, status.result) != (state.build_phase, state.ref, state.build_result):
            log.info("build %s: %s -> %s%s", status.ref.label, state.build_phase, status.phase,
                     f" ({status.result})" if status.result else "")
            self._save(state.with_status(status.phase, status.ref, status.result))

    def _save(self, state: WatchdogState) -> None:
        self.state = state
        if self.dry_run:
            return
        try:
            self.store.save(state)
        except OSError as exc:
            # The in-memory state still guards this process; only a restart would forget.
            log.error("cannot save watchdog state to %s: %s", self.store.path, exc)
