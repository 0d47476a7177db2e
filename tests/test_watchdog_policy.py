"""The watchdog's decision rules: minimum samples, each rule, cooldown and the running-build guard.

`decide` is pure, so these tests build window statistics and states by hand.
"""

from datetime import UTC, datetime, timedelta

import pytest

from app.config import Settings
from watchdog import policy
from watchdog.policy import DriftTestStats, WindowStats, decide
from watchdog.state import FINISHED, QUEUED, RUNNING, UNKNOWN, TriggerRef, WatchdogState

NOW = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)
SETTINGS = Settings(
    watchdog_min_samples=50, watchdog_quality_threshold=0.75, watchdog_drift_threshold=2.0,
    watchdog_accuracy_threshold=0.8, watchdog_min_feedback=20, watchdog_cooldown_minutes=30.0,
    watchdog_window_minutes=15.0, watchdog_drift_test_alpha=0.005,
)
HEALTHY = WindowStats(sample_count=120, avg_quality=0.91, avg_drift=0.6, feedback_count=40, accuracy=0.95,
                      window_minutes=15.0)
LOW_QUALITY = WindowStats(sample_count=120, avg_quality=0.42, avg_drift=0.6, window_minutes=15.0)
REF = TriggerRef(kind="jenkins", job="vqa-retrain", queue_id=7, build_number=3)


def triggered_at(minutes_ago: float, phase: str = FINISHED) -> WatchdogState:
    return WatchdogState.after_trigger(NOW - timedelta(minutes=minutes_ago), "low_quality", "earlier", REF, phase)


def test_too_few_samples_never_triggers_and_says_so():
    """Below the minimum sample count the decision is `check`, rule `min_samples`, even with awful numbers."""
    stats = WindowStats(sample_count=49, avg_quality=0.01, avg_drift=50.0, feedback_count=49, accuracy=0.0,
                        window_minutes=15.0)
    d = decide(stats, WatchdogState(), NOW, SETTINGS)
    assert (d.decision, d.rules) == (policy.CHECK, (policy.MIN_SAMPLES,))
    assert "49 inferences" in d.reason and "need 50" in d.reason


def test_healthy_window_is_a_check_naming_rule_none():
    """With enough samples and every number within its threshold, the decision is `check` with rule `none`."""
    d = decide(HEALTHY, WatchdogState(), NOW, SETTINGS)
    assert (d.decision, d.rules) == (policy.CHECK, (policy.NONE,))
    assert "0.910 >= 0.75" in d.reason and "0.950 >= 0.8 over 40 labels" in d.reason


@pytest.mark.parametrize(("stats", "rule", "numbers"), [
    (WindowStats(120, 0.74, 0.1), policy.LOW_QUALITY, "0.740 < 0.75 over 120"),
    (WindowStats(120, 0.9, 2.5), policy.HIGH_DRIFT, "2.500 > 2 over 120"),
    (WindowStats(120, 0.9, 0.1, feedback_count=25, accuracy=0.6), policy.LOW_ACCURACY, "0.600 < 0.8 over 25 labels"),
])
def test_each_rule_fires_alone_and_is_named_with_its_numbers(stats, rule, numbers):
    """Each rule crossing its threshold triggers, and the decision names that rule and its numbers."""
    d = decide(stats, WatchdogState(), NOW, SETTINGS)
    assert (d.decision, d.rules) == (policy.TRIGGER, (rule,))
    assert rule in d.reason and numbers in d.reason


def test_thresholds_are_strict_at_the_boundary():
    """Quality exactly at, drift exactly at and accuracy exactly at the threshold do not fire."""
    stats = WindowStats(120, 0.75, 2.0, feedback_count=20, accuracy=0.8)
    assert decide(stats, WatchdogState(), NOW, SETTINGS).decision == policy.CHECK


def test_several_rules_fire_together():
    """All rules that fired are named, in a stable order, and joined for the Jenkins RULE parameter."""
    stats = WindowStats(200, 0.5, 3.0, feedback_count=30, accuracy=0.5)
    d = decide(stats, WatchdogState(), NOW, SETTINGS)
    assert d.rules == (policy.LOW_QUALITY, policy.HIGH_DRIFT, policy.LOW_ACCURACY)
    assert d.rule == "low_quality,high_drift,low_accuracy"


def test_accuracy_rule_needs_enough_feedback():
    """Terrible accuracy over fewer labels than the minimum does not fire, and the reason says why."""
    d = decide(WindowStats(120, 0.9, 0.1, feedback_count=19, accuracy=0.0), WatchdogState(), NOW, SETTINGS)
    assert d.decision == policy.CHECK
    assert "19 feedback labels < 20" in d.reason


def test_missing_averages_do_not_fire():
    """A window whose events carry no quality or drift values cannot fire those rules."""
    d = decide(WindowStats(120, None, None), WatchdogState(), NOW, SETTINGS)
    assert (d.decision, d.rules) == (policy.CHECK, (policy.NONE,))


def test_cooldown_suppresses_and_says_how_long_is_left():
    """A rule firing 10 min after the last trigger is suppressed with 20 min of the 30 min cooldown left."""
    d = decide(LOW_QUALITY, triggered_at(10), NOW, SETTINGS)
    assert (d.decision, d.rules) == (policy.SUPPRESSED, (policy.LOW_QUALITY,))
    assert "cooldown" in d.reason and "20m 00s left" in d.reason and "10m 00s ago" in d.reason


def test_cooldown_expires():
    """Once the cooldown has passed, the same numbers trigger again."""
    assert decide(LOW_QUALITY, triggered_at(29.9), NOW, SETTINGS).decision == policy.SUPPRESSED
    assert decide(LOW_QUALITY, triggered_at(30), NOW, SETTINGS).decision == policy.TRIGGER


@pytest.mark.parametrize("phase", [QUEUED, RUNNING])
def test_no_trigger_while_last_build_is_queued_or_running(phase):
    """Even after the cooldown, a build still queued or running suppresses a new trigger."""
    d = decide(LOW_QUALITY, triggered_at(120, phase), NOW, SETTINGS)
    assert d.decision == policy.SUPPRESSED
    assert f"vqa-retrain#3 is still {phase}" in d.reason


@pytest.mark.parametrize("phase", [FINISHED, UNKNOWN])
def test_a_finished_or_unknown_build_does_not_block(phase):
    """A build that finished (or that Jenkins no longer knows) does not block once the cooldown is over."""
    assert decide(LOW_QUALITY, triggered_at(120, phase), NOW, SETTINGS).decision == policy.TRIGGER


def test_suppression_does_not_hide_below_minimum_samples():
    """Too few samples is a `check` even during a cooldown: nothing fired, nothing to suppress."""
    d = decide(WindowStats(3, 0.1, 9.0), triggered_at(1, RUNNING), NOW, SETTINGS)
    assert (d.decision, d.rules) == (policy.CHECK, (policy.MIN_SAMPLES,))


def test_decision_event_fields_use_the_event_schema():
    """The decision becomes a `watchdog` event with the shared field names and the rule list."""
    from app.events import schema as events

    fields = decide(LOW_QUALITY, WatchdogState(), NOW, SETTINGS).event_fields()
    doc = events.make_event(events.WATCHDOG, **fields)
    assert doc[events.DECISION] == policy.TRIGGER
    assert doc[events.RULE] == [policy.LOW_QUALITY]
    assert doc[events.SAMPLE_COUNT] == 120 and doc[events.AVG_QUALITY] == 0.42
    assert events.ACCURACY not in doc  # None values are left out, not written as null


def drift_tested(p_value: float | None, signed: int = 120, skipped: str = "") -> WindowStats:
    test = DriftTestStats(signed=signed, statistic=None if p_value is None else 0.97, p_value=p_value,
                          inputs=min(signed, 90), skipped=skipped)
    return WindowStats(sample_count=120, avg_quality=0.98, avg_drift=0.7, window_minutes=15.0, drift_test=test)


def test_input_drift_fires_on_the_window_test_alone_and_names_its_numbers():
    """Confident answers and a low drift_score, but the window test rejects: `input_drift` triggers by itself."""
    d = decide(drift_tested(0.001), WatchdogState(), NOW, SETTINGS)
    assert (d.decision, d.rules) == (policy.TRIGGER, (policy.INPUT_DRIFT,))
    assert "input_drift: window drift test p=0.0010 (novelty AUC 0.970, 90 distinct inputs of 120 inferences)" \
        " <= 0.005" in d.reason


def test_input_drift_rejects_at_the_level_itself_and_not_above_it():
    """p exactly at WATCHDOG_DRIFT_TEST_ALPHA rejects (a test's level is inclusive); just above does not."""
    assert decide(drift_tested(0.005), WatchdogState(), NOW, SETTINGS).rules == (policy.INPUT_DRIFT,)
    passed = decide(drift_tested(0.0051), WatchdogState(), NOW, SETTINGS)
    assert passed.decision == policy.CHECK and "p=0.0051" in passed.reason and "> 0.005" in passed.reason


@pytest.mark.parametrize(("stats", "why"), [
    (drift_tested(None, signed=30), "30 inferences carry a signature, need 50"),
    (drift_tested(None, skipped="no reference: GET failed"), "not run: no reference: GET failed"),
    (WindowStats(120, 0.98, 0.7), "not run: no test"),
])
def test_input_drift_without_a_test_result_does_not_fire_and_says_why(stats, why):
    """Too few signed inferences, no reference, or no test at all: no `input_drift`, and the reason says so."""
    d = decide(stats, WatchdogState(), NOW, SETTINGS)
    assert (d.decision, d.rules) == (policy.CHECK, (policy.NONE,))
    assert why in d.reason


def test_the_window_test_goes_into_the_decision_event():
    """The decision event carries the test's statistic, p-value and number of distinct inputs."""
    from app.events import schema as events

    doc = events.make_event(events.WATCHDOG, **decide(drift_tested(0.001), WatchdogState(), NOW,
                                                      SETTINGS).event_fields())
    assert doc[events.DRIFT_TEST_STATISTIC] == 0.97 and doc[events.DRIFT_TEST_P_VALUE] == 0.001
    assert doc[events.DRIFT_TEST_INPUTS] == 90 and doc[events.RULE] == [policy.INPUT_DRIFT]


def test_format_duration():
    """Durations read as `1h 02m 05s`, `12m 30s` or `45s`."""
    assert policy.format_duration(timedelta(hours=1, minutes=2, seconds=5)) == "1h 02m 05s"
    assert policy.format_duration(timedelta(minutes=12, seconds=30)) == "12m 30s"
    assert policy.format_duration(timedelta(seconds=45)) == "45s"
