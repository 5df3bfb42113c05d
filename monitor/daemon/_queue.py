"""One evaluation at a time: requests queue up, and requests made while one waits join it.

A probe run (cheap cells only) that waits becomes a full grid when a grid is asked for meanwhile;
a probe asked for while a grid waits joins the grid.

A request that arrives with its own id (one a client holds: a run asked of a standby, through
the store) never joins another: it waits for its own turn, once.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass

__all__ = ["PROBES", "EvaluationQueue", "Request"]

# The trigger of a probe run (`schedule.on_new_data: probes`): the cheap cells and estimates only.
PROBES = "probes"


@dataclass(frozen=True)
class Request:
    run_id: str
    trigger: str
    resume: bool = False


class EvaluationQueue:
    """Thread-safe; at most one request waits (coalescing), at most one runs."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._waiting: list[Request] = []  # resumed runs first, then at most one fresh request
        self._running: Request | None = None

    def request(self, trigger: str, run_id: str | None = None) -> tuple[str, bool]:
        """Queue an evaluation; returns (run id, joined) — joined when a waiting one absorbed it."""
        with self._lock:
            if run_id is not None:
                if any(r.run_id == run_id for r in [*self._waiting, self._running] if r is not None):
                    return run_id, True
                self._waiting.append(Request(run_id, trigger))
                self._lock.notify_all()
                return run_id, False
            fresh = [r for r in self._waiting if not r.resume]
            if fresh:
                if fresh[0].trigger == PROBES and trigger != PROBES:
                    # The full grid computes everything the waiting probe run would: it takes its place.
                    at = self._waiting.index(fresh[0])
                    self._waiting[at] = Request(fresh[0].run_id, trigger)
                return fresh[0].run_id, True
            request = Request(uuid.uuid4().hex, trigger)
            self._waiting.append(request)
            self._lock.notify_all()
            return request.run_id, False

    def resume(self, run_id: str) -> None:
        with self._lock:
            self._waiting.insert(0, Request(run_id, "resume", resume=True))
            self._lock.notify_all()

    def take(self, timeout: float) -> Request | None:
        with self._lock:
            if not self._waiting:
                self._lock.wait(timeout)
            if not self._waiting:
                return None
            self._running = self._waiting.pop(0)
            return self._running

    def clear(self) -> list[Request]:
        """Drop every waiting request (this daemon lost the lead); returns them."""
        with self._lock:
            dropped, self._waiting = self._waiting, []
            return dropped

    def done(self) -> None:
        with self._lock:
            self._running = None

    @property
    def running(self) -> Request | None:
        return self._running

    @property
    def waiting(self) -> list[Request]:
        with self._lock:
            return list(self._waiting)
