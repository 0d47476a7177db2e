"""The watchdog's state file: round trip, atomic replacement, and clear errors for a damaged file.

A restart must neither forget the last trigger nor re-trigger because of it.
"""

import json
import os
from datetime import UTC, datetime

import pytest

from app.config import Settings
from watchdog import policy
from watchdog.policy import WindowStats, decide
from watchdog.state import QUEUED, RUNNING, StateError, StateStore, TriggerRef, WatchdogState

NOW = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)
REF = TriggerRef(kind="jenkins", job="vqa-retrain", queue_id=12)


def test_missing_file_is_an_empty_state(tmp_path):
    """A first start has no state file and remembers nothing."""
    assert StateStore(tmp_path / "none.json").load() == WatchdogState()


def test_state_round_trips_through_the_file(tmp_path):
    """Everything a restart needs comes back identical: time, rule, reason, trigger kind, ref and phase."""
    store = StateStore(tmp_path / "sub" / "state.json")
    state = WatchdogState.after_trigger(NOW, "low_quality", "avg 0.4 < 0.75", REF, QUEUED)
    state = state.with_status(RUNNING, TriggerRef(kind="jenkins", job="vqa-retrain", queue_id=12, build_number=4),
                              None)
    store.save(state)
    assert store.load() == state
    data = json.loads(store.path.read_text())
    assert data["trigger_kind"] == "jenkins" and data["last_trigger_at"] == "2025-05-01T12:00:00+00:00"


def test_save_replaces_atomically_and_leaves_no_temp_files(tmp_path):
    """Saving twice replaces the file by rename (new inode) and leaves only the state file behind."""
    store = StateStore(tmp_path / "state.json")
    store.save(WatchdogState())
    first_inode = os.stat(store.path).st_ino
    store.save(WatchdogState.after_trigger(NOW, "high_drift", "r", REF, QUEUED))
    assert os.stat(store.path).st_ino != first_inode
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_failed_save_keeps_the_old_file(tmp_path):
    """If writing fails half-way, the previous state file is untouched and the temp file removed."""
    store = StateStore(tmp_path / "state.json")
    good = WatchdogState.after_trigger(NOW, "low_quality", "r", REF, QUEUED)
    store.save(good)

    class Unserialisable(WatchdogState):
        def to_json(self):
            return {"version": 1, "bad": object()}

    with pytest.raises(TypeError):
        store.save(Unserialisable())
    assert store.load() == good
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


@pytest.mark.parametrize("content", ["{not json", "[]", '{"version": 99}', '{"version": 1, "ref": {"bogus": 1}}'])
def test_damaged_state_file_is_a_clear_error(tmp_path, content):
    """A damaged state file raises StateError naming the file, instead of silently forgetting the cooldown."""
    path = tmp_path / "state.json"
    path.write_text(content)
    with pytest.raises(StateError, match="state.json"):
        StateStore(path).load()


def test_restart_with_saved_state_does_not_retrigger(tmp_path):
    """A state saved by one process makes the next process suppress the same rule within the cooldown."""
    settings = Settings(watchdog_state_file=str(tmp_path / "state.json"), watchdog_min_samples=10)
    stats = WindowStats(100, 0.3, 0.1, window_minutes=15)
    first = decide(stats, StateStore(settings.watchdog_state_file).load(), NOW, settings)
    assert first.decision == policy.TRIGGER
    StateStore(settings.watchdog_state_file).save(
        WatchdogState.after_trigger(NOW, first.rule, first.reason, REF, QUEUED))

    reloaded = StateStore(settings.watchdog_state_file).load()  # a new process
    second = decide(stats, reloaded, NOW.replace(minute=5), settings)
    assert second.decision == policy.SUPPRESSED
    assert "vqa-retrain-queue-12 is still queued" in second.reason
