"""The watchdog's memory across restarts: last trigger, its rule, and the build it started.

Kept as one JSON file written atomically (temp file + rename), so a crash never leaves half a state.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from watchdog import WatchdogError

# Phases of a triggered build, as `Trigger.status` reports them.
QUEUED = "queued"
RUNNING = "running"
FINISHED = "finished"
UNKNOWN = "unknown"  # the trigger cannot tell any more (queue item expired, process of another host...)
ACTIVE_PHASES = frozenset({QUEUED, RUNNING})

STATE_VERSION = 1


class StateError(WatchdogError):
    """The state file exists but cannot be read; fix or remove it (removing forgets the last trigger)."""


@dataclass(frozen=True)
class TriggerRef:
    """Enough to find a triggered build again after a restart."""

    kind: str  # "jenkins" or "local"
    job: str | None = None  # jenkins
    queue_id: int | None = None  # jenkins
    build_number: int | None = None  # jenkins, once the queue item has left the queue
    pid: int | None = None  # local
    log_path: str | None = None  # local
    summary_path: str | None = None  # local

    @property
    def label(self) -> str:
        """Human and Elasticsearch (`build_id`) name of the build."""
        if self.kind == "local":
            return f"local-pid-{self.pid}"
        if self.build_number is not None:
            return f"{self.job}#{self.build_number}"
        return f"{self.job}-queue-{self.queue_id}"


@dataclass(frozen=True)
class WatchdogState:
    """Last trigger and the phase of the build it started, as last seen."""

    last_trigger_at: datetime | None = None
    last_rule: str | None = None
    last_reason: str | None = None
    ref: TriggerRef | None = None
    build_phase: str | None = None
    build_result: str | None = None

    @classmethod
    def after_trigger(cls, at: datetime, rule: str, reason: str, ref: TriggerRef, phase: str) -> WatchdogState:
        """The state right after a successful trigger; what came before is superseded."""
        return cls(last_trigger_at=at, last_rule=rule, last_reason=reason, ref=ref, build_phase=phase)

    def with_status(self, phase: str, ref: TriggerRef, result: str | None) -> WatchdogState:
        """The state after a status check of the last build."""
        return replace(self, build_phase=phase, ref=ref, build_result=result)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "last_trigger_at": self.last_trigger_at.isoformat() if self.last_trigger_at else None,
            "last_rule": self.last_rule,
            "last_reason": self.last_reason,
            "trigger_kind": self.ref.kind if self.ref else None,
            "ref": asdict(self.ref) if self.ref else None,
            "build_phase": self.build_phase,
            "build_result": self.build_result,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WatchdogState:
        at = data.get("last_trigger_at")
        ref = data.get("ref")
        when = datetime.fromisoformat(at) if at else None
        if when is not None and when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return cls(
            last_trigger_at=when,
            last_rule=data.get("last_rule"),
            last_reason=data.get("last_reason"),
            ref=TriggerRef(**ref) if ref else None,
            build_phase=data.get("build_phase"),
            build_result=data.get("build_result"),
        )


class StateStore:
    """Loads and atomically saves the state file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def load(self) -> WatchdogState:
        """The saved state; an empty state when the file does not exist yet."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return WatchdogState()
        except OSError as exc:
            raise StateError(f"cannot read watchdog state {self.path}: {exc}") from exc
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
                raise ValueError(f"expected a JSON object with version {STATE_VERSION}")
            return WatchdogState.from_json(data)
        except (ValueError, TypeError) as exc:
            raise StateError(
                f"watchdog state {self.path} is not valid ({exc}); fix it or delete it "
                "(deleting forgets the last trigger and its cooldown)"
            ) from exc

    def save(self, state: WatchdogState) -> None:
        """Write to a temp file in the same folder, fsync, then rename over the old file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(state.to_json(), f, indent=2, sort_keys=True)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
