"""The leader lease as a daemon sees it: take it, renew it, and know when it is no longer held.

Every daemon tries to take the lease "leader" in the store at start and every third of its TTL
after. The holder leads (schedules, polls, evaluates); the others are standbys. A leader counts
itself deposed at `ttl - margin` after the start of its last successful renewal, measured on its
own monotonic clock: the store's `expires_at` is `ttl` after that renewal reached the database,
so the old leader has stopped before any standby can take over.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime

from ..store import Lease, Store
from ._owner import is_gone

__all__ = ["LEASE", "Leadership"]

LEASE = "leader"


class Leadership:
    """Thread-safe record of whether this daemon holds the lease, and until when."""

    def __init__(self, store: Store, holder: str, ttl: float) -> None:
        self.store, self.holder, self.ttl = store, holder, ttl
        self._lock = threading.Lock()
        self._deadline = 0.0  # monotonic: leading until then, unless renewed
        self.last: Lease | None = None  # the answer of the latest attempt

    @property
    def renew_every(self) -> float:
        return self.ttl / 3

    @property
    def margin(self) -> float:
        # Two renewals may fail (a slow store, a pause) before the leader steps down.
        return self.ttl / 6

    def attempt(self) -> Lease:
        """Take or renew the lease (a store call; StoreError propagates)."""
        asked = time.monotonic()
        lease = self.store.take_lease(LEASE, self.holder, self.ttl, gone=is_gone)
        with self._lock:
            self.last = lease
            if lease.mine:
                self._deadline = asked + self.ttl - self.margin
            else:
                self._deadline = 0.0
        return lease

    def holds(self) -> bool:
        """True while the lease is this daemon's (no store call)."""
        with self._lock:
            return time.monotonic() < self._deadline

    def lapsed(self) -> None:
        """Forget the lease (this daemon steps down or stops)."""
        with self._lock:
            self._deadline = 0.0

    def release(self) -> bool:
        """Let the lease lapse in the store now, so that a standby takes over at once."""
        self.lapsed()
        return self.store.release_lease(LEASE, self.holder)

    def leader(self) -> tuple[str | None, datetime | None]:
        """Who leads as of the latest attempt (holder, expires_at), without a store call."""
        with self._lock:
            if self.last is None or not self.last.holder:
                return None, None
            return self.last.holder, self.last.expires_at
