"""Who runs a run: "host:pid", and whether a `running` run's process is gone (so it is resumed)."""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime, timedelta

from ..store import RunRecord

__all__ = ["STALE_AFTER", "current_owner", "is_gone", "is_interrupted"]

# A run on another host counts as interrupted after this long without a heartbeat (every
# finished fine-tune and a timer both beat; the longest silence is one slow fine-tune).
STALE_AFTER = timedelta(minutes=15)


def current_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def is_gone(owner: str) -> bool:
    """True when `owner` ("hostname:pid") is a process of this host that no longer exists."""
    host, _, pid = owner.rpartition(":")
    return host == socket.gethostname() and pid.isdigit() and not _alive(int(pid))


def is_interrupted(run: RunRecord, *, me: str, now: datetime | None = None) -> bool:
    """True when nobody is running `run` any more.

    At start-up the daemon has no run of its own, so a run owned by its own "host:pid" is from a
    previous life of a container that reuses PIDs: interrupted too.
    """
    if run.owner is None or run.owner == me:
        return True
    host, _, pid = run.owner.rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        return not _alive(int(pid))
    beat = run.heartbeat_at or run.started_at
    return (now or datetime.now(UTC)) - beat > STALE_AFTER
