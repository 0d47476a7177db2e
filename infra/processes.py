"""What a pid stands for (a live process, a zombie, nothing, or another program), and ending a process group.

Read from /proc; shared by the Elasticsearch launcher (is the pid in `node.pid` still our node?) and
the stack's supervisor (clean up after a dead child before starting it again).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

PROC = Path("/proc")

LIVE = "live"
ZOMBIE = "a zombie (exited, not yet reaped by its parent)"
GONE = "not running"
OTHER = "another program (the pid was reused)"


def process_state(pid: int) -> str | None:
    """The one-letter state of `pid` (R, S, D, Z, ...), or None when there is no such process.

    `os.kill(pid, 0)` cannot tell a zombie from a live process: it succeeds on both. /proc can.
    Where /proc is missing (not Linux), a process that accepts signal 0 is reported as "S".
    """
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        if PROC.is_dir():
            return None  # the process went away while we read
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return "S"
        return "S"
    # The command name in parentheses may itself hold spaces or parentheses: the state follows the last ")".
    return stat.rsplit(")", 1)[1].split()[0]


def command_line(pid: int) -> list[str] | None:
    """The arguments `pid` was started with, or None when they cannot be read."""
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def classify(pid: int, *, marker: str | None = None) -> str:
    """LIVE, ZOMBIE, GONE, or OTHER (alive, but its command line lacks `marker`).

    `marker` is an argument only the expected program has (e.g. its data path), which tells a
    stale pid file whose pid now belongs to an unrelated process from the process it names.
    """
    state = process_state(pid)
    if state is None:
        return GONE
    if state in ("Z", "X"):
        return ZOMBIE
    if marker is not None:
        args = command_line(pid)
        # An unreadable command line (another user's process) counts as alive: never start a second node on a guess.
        if args is not None and not any(marker in arg for arg in args):
            return OTHER
    return LIVE


def describe_returncode(returncode: int) -> str:
    """`exit code 3` or `killed by SIGKILL`, from a Popen return code."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group `pgid`, from /proc."""
    members = []
    for stat_file in PROC.glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone while we looked
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state not in ("Z", "X"):
            members.append(int(stat_file.parent.name))
    return members


def end_group(pgid: int, timeout: float = 15.0) -> list[int]:
    """SIGTERM what is left of a dead leader's process group, SIGKILL it after `timeout`; returns who was left.

    gunicorn's workers outlive a killed master for a while, still serving on its socket: a restarted
    master could not bind, and its readiness probe would be answered by the old worker.
    """
    left = group_members(pgid)
    if not left:
        return []
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if group_members(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    return left
