"""The watchdog's decision: a pure function of window statistics, saved state and the time.

No I/O here, so every rule, the cooldown and the running-build guard are tested without servers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from app.config import Settings
from app.events import schema as events
from watchdog.state import ACTIVE_PHASES, WatchdogState

# Decisions.
CHECK = "check"
TRIGGER = "trigger"
SUPPRESSED = "suppressed"
TRIGGER_FAILED = "trigger_failed"  # set by the loop when a `trigger` decision could not be carried out

# Rules. Every decision names one or more of these.
LOW_QUALITY = "low_quality"
HIGH_DRIFT = "high_drift"
LOW_ACCURACY = "low_accuracy"
INPUT_DRIFT = "input_drift"  # the window drift test rejects: the window's inputs are unlike the training images
MIN_SAMPLES = "min_samples"  # too few inferences in the window to judge
NONE = "none"  # enough samples and every rule within its threshold
RULES = (LOW_QUALITY, HIGH_DRIFT, INPUT_DRIFT, LOW_ACCURACY)


@dataclass(frozen=True)
class DriftTestStats:
    """The window drift test of the window's signatures, or why it was not run (`skipped`)."""

    signed: int = 0  # inferences in the window that carry a signature (at most WATCHDOG_DRIFT_TEST_MAX_EVENTS)
    statistic: float | None = None  # novelty AUC
    p_value: float | None = None
    inputs: int = 0  # distinct inputs tested
    skipped: str = ""


@dataclass(frozen=True)
class WindowStats:
    """What Elasticsearch saw in the look-back window."""

    sample_count: int
    avg_quality: float | None
    avg_drift: float | None
    feedback_count: int = 0
    accuracy: float | None = None
    window_minutes: float = 0.0
    drift_test: DriftTestStats | None = None


@dataclass(frozen=True)
class Decision:
    """One poll's verdict: what to do, which rule(s) it rests on, and why in words."""

    decision: str
    rules: tuple[str, ...]
    reason: str
    stats: WindowStats

    @property
    def rule(self) -> str:
        """The rule names as one string, as the Jenkins `RULE` parameter and the log line carry them."""
        return ",".join(self.rules)

    def failed(self, error: str) -> Decision:
        """This trigger decision, marked as not carried out because of `error`."""
        return replace(self, decision=TRIGGER_FAILED, reason=f"{self.reason}; trigger failed: {error}")

    def event_fields(self) -> dict[str, Any]:
        """Fields of the `watchdog` LOG_EVENT recording this decision."""
        s = self.stats
        return {
            events.DECISION: self.decision,
            events.RULE: list(self.rules),
            events.REASON: self.reason,
            events.SAMPLE_COUNT: s.sample_count,
            events.AVG_QUALITY: s.avg_quality,
            events.AVG_DRIFT: s.avg_drift,
            events.FEEDBACK_COUNT: s.feedback_count,
            events.ACCURACY: s.accuracy,
            events.DRIFT_TEST_STATISTIC: s.drift_test.statistic if s.drift_test else None,
            events.DRIFT_TEST_P_VALUE: s.drift_test.p_value if s.drift_test else None,
            events.DRIFT_TEST_INPUTS: s.drift_test.inputs if s.drift_test and s.drift_test.inputs else None,
        }


def decide(stats: WindowStats, state: WatchdogState, now: datetime, settings: Settings) -> Decision:
    """Check, trigger or suppress, from the window's numbers and what was triggered before."""
    if stats.sample_count < settings.watchdog_min_samples:
        return Decision(
            CHECK, (MIN_SAMPLES,),
            f"not enough samples: {stats.sample_count} inferences in the last {stats.window_minutes:g} min, "
            f"need {settings.watchdog_min_samples}; no rule evaluated",
            stats,
        )
    fired, passed = _evaluate(stats, settings)
    if not fired:
        return Decision(CHECK, (NONE,), "all rules within thresholds: " + "; ".join(passed), stats)
    rules = tuple(rule for rule, _ in fired)
    why = "; ".join(text for _, text in fired)
    blockers = _blockers(state, now, settings)
    if blockers:
        return Decision(SUPPRESSED, rules, f"{why}; suppressed: {'; '.join(blockers)}", stats)
    return Decision(TRIGGER, rules, why, stats)


def _evaluate(stats: WindowStats, settings: Settings) -> tuple[list[tuple[str, str]], list[str]]:
    """(rules that fired with their numbers, descriptions of the checks that passed or were skipped)."""
    fired: list[tuple[str, str]] = []
    passed: list[str] = []
    n = stats.sample_count

    q, q_max = stats.avg_quality, settings.watchdog_quality_threshold
    if q is not None and q < q_max:
        fired.append((LOW_QUALITY, f"{LOW_QUALITY}: avg quality_score {q:.3f} < {q_max:g} over {n} inferences"))
    else:
        passed.append(f"avg quality_score {q:.3f} >= {q_max:g}" if q is not None else "no quality_score values")

    d, d_max = stats.avg_drift, settings.watchdog_drift_threshold
    if d is not None and d > d_max:
        fired.append((HIGH_DRIFT, f"{HIGH_DRIFT}: avg drift_score {d:.3f} > {d_max:g} over {n} inferences"))
    else:
        passed.append(f"avg drift_score {d:.3f} <= {d_max:g}" if d is not None else "no drift_score values")

    fires, text = _input_drift(stats.drift_test, settings)
    if fires:
        fired.append((INPUT_DRIFT, text))
    else:
        passed.append(text)

    a, a_min, labels = stats.accuracy, settings.watchdog_accuracy_threshold, stats.feedback_count
    if labels < settings.watchdog_min_feedback or a is None:
        passed.append(f"accuracy not evaluated: {labels} feedback labels < {settings.watchdog_min_feedback}")
    elif a < a_min:
        fired.append((LOW_ACCURACY, f"{LOW_ACCURACY}: feedback accuracy {a:.3f} < {a_min:g} over {labels} labels"))
    else:
        passed.append(f"feedback accuracy {a:.3f} >= {a_min:g} over {labels} labels")
    return fired, passed


def _input_drift(test: DriftTestStats | None, settings: Settings) -> tuple[bool, str]:
    """(whether `input_drift` fires, the sentence for the reason)."""
    alpha, least = settings.watchdog_drift_test_alpha, settings.watchdog_min_samples
    if test is None or test.skipped:
        return False, f"window drift test not run: {test.skipped if test else 'no test'}"
    if test.signed < least or test.p_value is None:
        return False, f"window drift test not run: {test.signed} inferences carry a signature, need {least}"
    numbers = (f"window drift test p={test.p_value:.4f} (novelty AUC {test.statistic:.3f}, "
               f"{test.inputs} distinct inputs of {test.signed} inferences)")
    if test.p_value <= alpha:
        return True, f"{INPUT_DRIFT}: {numbers} <= {alpha:g}"
    return False, f"{numbers} > {alpha:g}"


def _blockers(state: WatchdogState, now: datetime, settings: Settings) -> list[str]:
    """Why a fired rule must not trigger now: a build still in flight, or the cooldown."""
    blockers = []
    if state.ref is not None and state.build_phase in ACTIVE_PHASES:
        blockers.append(f"last build {state.ref.label} is still {state.build_phase}")
    if state.last_trigger_at is not None:
        elapsed = now - state.last_trigger_at
        cooldown = timedelta(minutes=settings.watchdog_cooldown_minutes)
        if elapsed < cooldown:
            blockers.append(
                f"cooldown: last trigger ({state.last_rule}) {format_duration(elapsed)} ago, "
                f"{format_duration(cooldown - elapsed)} left"
            )
    return blockers


def format_duration(delta: timedelta) -> str:
    """`1h 02m 05s` / `12m 30s` / `45s`: short enough for a log line, exact to the second."""
    seconds = max(0, int(delta.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"

