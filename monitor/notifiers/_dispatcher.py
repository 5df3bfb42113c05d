"""The dispatcher: delivers the store's notification outbox, retrying with backoff across restarts.

Each notifier has a lane: its own thread (in `run` and `drain`) that claims that notifier's due
items (a lease keeps other dispatchers off them), tries each once, oldest first, and records the
outcome in the store: delivered, retry at a later time, or dropped. One slow or dead receiver
costs its own lane time and never delays another notifier's deliveries or retries. The thread
that calls `run` or `drain` only reads when each notifier's next item is due, wakes the lanes,
and drops at once the items of notifiers that are no longer configured (nothing could deliver
them; waiting for their retry time or lease would only hold up `drain`). All the state that
matters is in the store, so a restarted (or a second) dispatcher simply carries on.

Retries: the receiver's `Retry-After` when it gives one (capped at `max_delay`), else capped
exponential backoff with full jitter, `uniform(0, min(max_delay, base_delay * 2**(attempt-1)))`
(https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/): many items failing
together do not come back together. The delay counts from the end of the failed attempt: counted
from its start, an attempt that takes longer than the delay (a receiver that times out after 10 s,
against early delays of a second or two) would be followed by the next one at once. Gives up on a
non-retryable error, when the item is older than its notifier's `max_age`, or when its notifier
is gone from the configuration.

Order: the events of one alert (notifier, model, alert) go out in the order they were created.
A resolved event never overtakes its firing event while that one waits for a retry: it would
leave a PagerDuty incident open, re-fire an Alertmanager alert, or tell Slack the story backwards.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from ..errors import MonitorError
from ._base import DeliveryError, Notifier

__all__ = ["Dispatcher", "OutboxStore"]

log = logging.getLogger(__name__)


def _log_failure(exc: Exception, message: str, *args: object) -> None:
    """One line for an expected failure (the store is down: its message says what to check), the
    traceback only at DEBUG; a full traceback for anything else (a bug)."""
    if isinstance(exc, MonitorError):
        log.error(message + ": %s", *args, exc)
        log.debug("the failure in full", exc_info=exc)
    else:
        log.exception(message, *args)


_MIN_SLEEP = 0.005  # never spin, even when the next item is already due
_MAX_SLEEP = 1.0  # look at the outbox at least this often: new alerts go out within a second
_MAX_ERROR_SLEEP = 30.0  # when the store itself fails: back off, and log twice a minute at most
_SEED_LIMIT = 1000  # pending items read at start to restore the order of retried alerts
# The daemon's stop event cannot wake a wait on another event: it is looked at this often.
_STOP_POLL = 0.05


class OutboxItemLike(Protocol):
    """What the dispatcher reads of an outbox item (`monitor.store.OutboxItem`)."""

    @property
    def id(self) -> str: ...
    @property
    def notifier(self) -> str: ...
    @property
    def event(self) -> dict[str, Any]: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def attempts(self) -> int: ...
    @property
    def next_attempt_at(self) -> datetime: ...
    @property
    def last_error(self) -> str | None: ...


class OutboxStore(Protocol):
    """The outbox part of `monitor.store.Store` that the dispatcher uses."""

    def claim_due(
        self,
        *,
        limit: int = ...,
        lease_seconds: float = ...,
        now: datetime | None = ...,
        notifier: str | None = ...,
    ) -> list[Any]: ...
    def mark_delivered(self, item_id: str, *, attempts: int) -> None: ...
    def mark_retry(self, item_id: str, *, attempts: int, next_attempt_at: datetime, error: str) -> None: ...
    def mark_dropped(self, item_id: str, *, attempts: int, error: str) -> None: ...
    def drop_pending(self, notifier: str, *, error: str) -> int: ...
    def outbox_pending(self) -> int: ...
    def next_attempt_times(self) -> dict[str, datetime]: ...
    def outbox_items(self, *, status: str | None = ..., limit: int = ...) -> list[Any]: ...


@dataclass(frozen=True)
class _Waiting:
    """An item of this dispatcher's that waits for a retry: later items of its alert wait too."""

    stream: tuple[str, str, str]
    created_at: datetime
    retry_at: datetime


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _as_utc(moment: datetime) -> datetime:
    """`moment`, read as UTC when it is naive."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _stream(item: OutboxItemLike) -> tuple[str, str, str]:
    return (item.notifier, str(item.event.get("model")), str(item.event.get("alert")))


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.3g}h"
    if seconds >= 60:
        return f"{seconds / 60:.3g}m"
    return f"{seconds:.3g}s"


class Dispatcher:
    """Delivers due outbox items to their notifiers; `run` in a thread, or `drain` once.

    One call at a time per instance; `run` and `drain` start one thread per configured notifier
    (the configuration bounds them: a handful) and return only once each has finished the pass
    it was in. Several instances, even in several processes, may share one store: claims keep
    them apart.
    """

    def __init__(
        self,
        store: OutboxStore,
        notifiers: Mapping[str, Notifier],
        *,
        clock: Callable[[], datetime] = _utc_now,
        rng: random.Random | None = None,
        base_delay: float = 2.0,
        max_delay: float = 300.0,
        batch_size: int = 20,
    ) -> None:
        if not 0 < base_delay <= max_delay:
            raise ValueError(f"need 0 < base_delay <= max_delay, got {base_delay} and {max_delay}")
        self._store = store
        self._notifiers = dict(notifiers)
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.batch_size = batch_size
        # A claim must outlast the batch it covers, or another dispatcher would send the same items
        # meanwhile: each item takes at most its notifier's timeout (a dead receiver costs one
        # timeout per batch, see `_Lane.deliver`), plus slack for the store.
        slowest = max((n.timeout for n in self._notifiers.values()), default=10.0)
        self.lease_seconds = max(60.0, batch_size * slowest + 30.0)
        self._changed = threading.Event()  # a lane finished a pass: look at the outbox again
        self._lanes = {name: _Lane(self, name, notifier) for name, notifier in self._notifiers.items()}
        self._seeded = False

    def backoff(self, attempts: int, retry_after: float | None = None) -> float:
        """Seconds before the next attempt, after `attempts` failed ones."""
        if retry_after is not None:
            return min(self.max_delay, max(0.0, retry_after))
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** min(attempts - 1, 64))
        return self._rng.uniform(0.0, ceiling)

    # -- one pass -------------------------------------------------------------------------------

    def deliver_due(self, now: datetime | None = None) -> int:
        """One pass, notifier after notifier: try each due item once; returns how many were processed.

        Items of notifiers that are no longer configured are dropped (and count as processed).
        `run` and `drain` do the same with each notifier's pass in its own thread.
        """
        at = _as_utc(now) if now is not None else self._clock()
        if not self._seeded:
            self._seed(at)
        due = self._store.next_attempt_times()
        processed = self._drop_unconfigured(due)
        for name, lane in self._lanes.items():
            if name in due and _as_utc(due[name]) <= at:
                processed += lane.deliver_due(now)
        return processed

    def _look(self) -> tuple[bool, float]:
        """Drop what nobody can deliver and wake the lanes with due items.

        Returns whether anything is pending, and the seconds until a lane that was not woken has
        an item due (at most `_MAX_SLEEP`: new items arrive without notice).
        """
        now = self._clock()
        if not self._seeded:
            self._seed(now)
        due = self._store.next_attempt_times()
        self._drop_unconfigured(due)
        later = _MAX_SLEEP
        for name, when in due.items():
            seconds = (_as_utc(when) - now).total_seconds()
            if seconds <= 0:
                self._lanes[name].wake()  # a busy lane takes it after the pass it is in
            else:
                later = min(later, seconds)
        return bool(due), max(later, _MIN_SLEEP)

    def _drop_unconfigured(self, due: dict[str, datetime]) -> int:
        """Drop the pending items of notifiers not in this configuration, and take them out of `due`."""
        dropped = 0
        for name in sorted(due.keys() - self._lanes.keys()):
            del due[name]
            count = self._store.drop_pending(
                name, error=f"notifier {name!r} is no longer configured: nothing can deliver it"
            )
            dropped += count
            if count:
                log.warning(
                    "dropped %d notification(s) for notifier %r: it is no longer configured, so nothing "
                    "could deliver them; nothing to do if it was removed on purpose, else add it back "
                    "under alerts.notifiers (new alerts reach it from then on)",
                    count,
                    name,
                )
        return dropped

    def _seed(self, now: datetime) -> None:
        """After a restart: which items wait for a retry (their alerts' later events wait too)."""
        self._seeded = True
        for item in self._store.outbox_items(status="pending", limit=_SEED_LIMIT):
            retry_at = _as_utc(item.next_attempt_at)
            lane = self._lanes.get(item.notifier)
            if lane is not None and item.attempts > 0 and retry_at > now:
                lane.waiting[item.id] = _Waiting(_stream(item), _as_utc(item.created_at), retry_at)

    # -- loops ----------------------------------------------------------------------------------

    def _pause(self, stop: threading.Event, seconds: float) -> None:
        """Wait `seconds`, or less: until `stop` is set or a lane has finished a pass."""
        deadline = time.monotonic() + seconds
        while not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._changed.wait(min(remaining, _STOP_POLL)):
                return

    def _start_lanes(self) -> None:
        for lane in self._lanes.values():
            lane.start()

    def _stop_lanes(self) -> None:
        """Let each lane finish the pass it is in (its items are claimed: finish, or lease them out)."""
        for lane in self._lanes.values():
            lane.halt()
        for lane in self._lanes.values():
            lane.join()

    def run(self, stop: threading.Event) -> None:
        """Deliver until `stop` is set (the daemon's background thread). Never dies of an error."""
        failures = 0
        self._start_lanes()
        try:
            while not stop.is_set():
                self._changed.clear()  # before looking: a pass that ends meanwhile wakes the pause
                try:
                    _, wait = self._look()
                    failures = 0
                except Exception as exc:
                    failures += 1
                    wait = min(_MAX_ERROR_SLEEP, 2.0 ** (failures - 1))
                    _log_failure(exc, "notification dispatch failed (retrying in %s)", _duration(wait))
                self._pause(stop, wait)
        finally:
            self._stop_lanes()

    def drain(self, timeout: float) -> bool:
        """Deliver until nothing is pending or `timeout` seconds pass; True when nothing is pending.

        Waits for items that are due later (a retry after backoff) as long as the timeout allows;
        a pass under way when it runs out is finished (bounded by the notifiers' timeouts).
        """
        deadline = time.monotonic() + timeout
        never = threading.Event()
        self._start_lanes()
        try:
            while True:
                self._changed.clear()
                try:
                    pending, wait = self._look()
                    if not pending:
                        return True
                except Exception as exc:
                    _log_failure(exc, "notification dispatch failed while draining the outbox")
                    wait = _MAX_SLEEP
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._pause(never, min(wait, remaining))
        finally:
            self._stop_lanes()
        try:
            return self._store.outbox_pending() == 0
        except Exception:
            return False


class _Lane:
    """One notifier's deliveries: its items only, oldest first, one at a time.

    In `run` and `drain` a lane has its own thread, which does a pass whenever it is woken; the
    items it has claimed are always finished, even when it is halted meanwhile (a halt only stops
    the next pass), so that none is left leased and unattempted.
    """

    def __init__(self, dispatcher: Dispatcher, name: str, notifier: Notifier) -> None:
        self.name = name  # the notifier's key: what outbox items are addressed to
        self.notifier = notifier
        self.waiting: dict[str, _Waiting] = {}
        self._dispatcher = dispatcher
        self._store = dispatcher._store
        self._cond = threading.Condition()
        self._due = False
        self._halted = False
        self._thread: threading.Thread | None = None

    # -- the thread -----------------------------------------------------------------------------

    def start(self) -> None:
        with self._cond:
            self._due = self._halted = False
        self._thread = threading.Thread(target=self._loop, name=f"pm-notify-{self.name}", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        with self._cond:
            self._due = True
            self._cond.notify()

    def halt(self) -> None:
        with self._cond:
            self._halted = True
            self._cond.notify()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _next(self) -> bool:
        """Wait for a wake (True: do a pass, even if halted since it was asked for) or a halt."""
        with self._cond:
            self._cond.wait_for(lambda: self._due or self._halted)
            if self._due:
                self._due = False
                return True
            return False

    def _loop(self) -> None:
        failures = 0
        while self._next():
            try:
                processed = self.deliver_due(None)
                failures = 0
                if processed >= self._dispatcher.batch_size:
                    with self._cond:  # a full batch: more may be due right now
                        self._due = self._due or not self._halted
            except Exception as exc:
                failures += 1
                wait = min(_MAX_ERROR_SLEEP, 2.0 ** (failures - 1))
                _log_failure(
                    exc, "notifier %s: delivery failed (retrying in %s)", self.notifier.name, _duration(wait)
                )
                with self._cond:
                    self._cond.wait_for(lambda: self._halted, timeout=wait)
            finally:
                self._dispatcher._changed.set()

    # -- one pass -------------------------------------------------------------------------------

    def deliver_due(self, now: datetime | None) -> int:
        """Claim this notifier's due items and try each once; returns how many were claimed."""
        clock = self._dispatcher._clock
        items = self._store.claim_due(
            limit=self._dispatcher.batch_size,
            lease_seconds=self._dispatcher.lease_seconds,
            now=_as_utc(now) if now is not None else clock(),
            notifier=self.name,
        )
        # (when, why): after the receiver failed in a way that is not about one request
        # (unreachable, timing out, rate-limiting), its other items in this pass are not tried.
        unreachable: tuple[datetime, str] | None = None
        for item in items:
            unreachable = self.deliver(item, _as_utc(now) if now is not None else clock(), unreachable)
        return len(items)

    def deliver(
        self, item: OutboxItemLike, now: datetime, unreachable: tuple[datetime, str] | None
    ) -> tuple[datetime, str] | None:
        """Try one item; returns `unreachable`, or (until when, why) when the receiver just was."""
        notifier = self.notifier
        attempts = item.attempts + 1
        age = (now - _as_utc(item.created_at)).total_seconds()
        if age > notifier.max_age:
            reason = (
                f"not delivered within max_age ({_duration(notifier.max_age)}) after "
                f"{item.attempts} attempt(s); last error: {item.last_error or 'none'}"
            )
            log.error("notifier %s: dropped delivery %s: %s", notifier.name, item.id, reason)
            self._drop(item, item.attempts, reason)
            return unreachable
        if not notifier.wants(item.event):
            reason = (
                f"severity {item.event.get('severity')} is below the notifier's "
                f"min_severity {notifier.min_severity}"
            )
            log.debug("notifier %s: skipped delivery %s: %s", notifier.name, item.id, reason)
            self._drop(item, item.attempts, reason)
            return unreachable
        deferred = unreachable or self._earlier_waiting(item, now)
        if deferred is not None:
            # Not an attempt: the attempt count stays, the item only moves to the later time.
            retry_at, reason = deferred
            self._store.mark_retry(item.id, attempts=item.attempts, next_attempt_at=retry_at, error=reason)
            self.waiting[item.id] = _Waiting(_stream(item), _as_utc(item.created_at), retry_at)
            return unreachable
        started = time.monotonic()
        try:
            notifier.send(item.event, delivery_id=item.id)
        except DeliveryError as exc:
            # The backoff counts from here, the end of the attempt (`now` plus the time it took,
            # so that a pass at a given `now` stays on that clock).
            finished = now + timedelta(seconds=time.monotonic() - started)
            return self._failed(item, attempts, exc, finished) or unreachable
        except Exception as exc:  # a bug in rendering: retrying the same event cannot help
            log.error(
                "notifier %s: delivery %s attempt %d failed unexpectedly (%s); dropped",
                notifier.name,
                item.id,
                attempts,
                type(exc).__name__,
                exc_info=True,
            )
            self._drop(item, attempts, f"internal error while sending ({type(exc).__name__})")
            return unreachable
        self._store.mark_delivered(item.id, attempts=attempts)
        self.waiting.pop(item.id, None)
        log.debug("notifier %s: delivered %s (attempt %d)", notifier.name, item.id, attempts)
        return unreachable

    def _failed(
        self, item: OutboxItemLike, attempts: int, exc: DeliveryError, finished: datetime
    ) -> tuple[datetime, str] | None:
        """Record a failed attempt; (until when, why) when the receiver itself is unreachable."""
        notifier = self.notifier
        if not exc.retryable:
            log.error(
                "notifier %s: delivery %s attempt %d failed, not retried: %s",
                notifier.name,
                item.id,
                attempts,
                exc.message,
            )
            self._drop(item, attempts, exc.message)
            return None
        delay = self._dispatcher.backoff(attempts, exc.retry_after)
        retry_at = finished + timedelta(seconds=delay)
        log.warning(
            "notifier %s: delivery %s attempt %d failed: %s; next attempt in %s",
            notifier.name,
            item.id,
            attempts,
            exc.message,
            _duration(delay),
        )
        self._store.mark_retry(item.id, attempts=attempts, next_attempt_at=retry_at, error=exc.message)
        self.waiting[item.id] = _Waiting(_stream(item), _as_utc(item.created_at), retry_at)
        if exc.status is None or exc.status == 429:
            return retry_at, f"not tried: {notifier.name} failed just before ({exc.message})"
        return None

    def _drop(self, item: OutboxItemLike, attempts: int, reason: str) -> None:
        self._store.mark_dropped(item.id, attempts=attempts, error=reason)
        self.waiting.pop(item.id, None)

    def _earlier_waiting(self, item: OutboxItemLike, now: datetime) -> tuple[datetime, str] | None:
        """When an earlier event of the same alert waits for a retry: its time, and why we wait."""
        stream, created = _stream(item), _as_utc(item.created_at)
        for other_id, other in list(self.waiting.items()):
            if other_id == item.id or other.stream != stream:
                continue
            if other.retry_at + timedelta(seconds=self._dispatcher.lease_seconds) < now:
                # Long past due and not claimed by us since: another dispatcher settled it.
                del self.waiting[other_id]
                continue
            if (other.created_at, other_id) < (created, item.id):
                return other.retry_at, f"waiting for the earlier notification {other_id} of this alert"
        return None
