"""The dispatcher: delivers the store's notification outbox, retrying with backoff across restarts.

Each pass claims the due items (a lease keeps other dispatchers off them), tries each once and
records the outcome in the store: delivered, retry at a later time, or dropped. All its state that
matters is in the store, so a restarted (or a second) dispatcher simply carries on.

Retries: the receiver's `Retry-After` when it gives one (capped at `max_delay`), else capped
exponential backoff with full jitter, `uniform(0, min(max_delay, base_delay * 2**(attempt-1)))`
(https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/): many items failing
together do not come back together. Gives up on a non-retryable error, when the item is older
than its notifier's `max_age`, or when its notifier is gone from the configuration.

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

from ._base import DeliveryError, Notifier

__all__ = ["Dispatcher", "OutboxStore"]

log = logging.getLogger(__name__)

_MIN_SLEEP = 0.005  # never spin, even when the next item is already due
_MAX_SLEEP = 1.0  # look at the outbox at least this often: new alerts go out within a second
_MAX_ERROR_SLEEP = 30.0  # when the store itself fails: back off, and log twice a minute at most
_SEED_LIMIT = 1000  # pending items read at start to restore the order of retried alerts


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
        self, *, limit: int = ..., lease_seconds: float = ..., now: datetime | None = ...
    ) -> list[Any]: ...
    def mark_delivered(self, item_id: str, *, attempts: int) -> None: ...
    def mark_retry(self, item_id: str, *, attempts: int, next_attempt_at: datetime, error: str) -> None: ...
    def mark_dropped(self, item_id: str, *, attempts: int, error: str) -> None: ...
    def outbox_pending(self) -> int: ...
    def next_attempt_time(self) -> datetime | None: ...
    def outbox_items(self, *, status: str | None = ..., limit: int = ...) -> list[Any]: ...


@dataclass(frozen=True)
class _Waiting:
    """An item of this dispatcher's that waits for a retry: later items of its alert wait too."""

    stream: tuple[str, str, str]
    created_at: datetime
    retry_at: datetime


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime) -> datetime:
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

    One thread at a time per instance (several instances, even in several processes, may share
    one store: claims keep them apart).
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
        # timeout per batch, see `_deliver`), plus slack for the store.
        slowest = max((n.timeout for n in self._notifiers.values()), default=10.0)
        self.lease_seconds = max(60.0, batch_size * slowest + 30.0)
        self._waiting: dict[str, _Waiting] = {}
        self._seeded = False

    # -- one pass -------------------------------------------------------------------------------

    def backoff(self, attempts: int, retry_after: float | None = None) -> float:
        """Seconds before the next attempt, after `attempts` failed ones."""
        if retry_after is not None:
            return min(self.max_delay, max(0.0, retry_after))
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** min(attempts - 1, 64))
        return self._rng.uniform(0.0, ceiling)

    def deliver_due(self, now: datetime | None = None) -> int:
        """Claim the due items and try each once; returns how many were processed."""
        at = _aware(now) if now is not None else self._clock()
        if not self._seeded:
            self._seed(at)
        items = self._store.claim_due(limit=self.batch_size, lease_seconds=self.lease_seconds, now=at)
        # Notifier -> (when, why): after a receiver failed in a way that is not about one request
        # (unreachable, timing out, rate-limiting), its other items in this batch are not tried.
        unreachable: dict[str, tuple[datetime, str]] = {}
        for item in items:
            self._deliver(item, now if now is not None else self._clock(), unreachable)
        return len(items)

    def _deliver(
        self, item: OutboxItemLike, now: datetime, unreachable: dict[str, tuple[datetime, str]]
    ) -> None:
        now = _aware(now)
        attempts = item.attempts + 1
        notifier = self._notifiers.get(item.notifier)
        if notifier is None:
            reason = f"notifier {item.notifier} is no longer configured"
            log.warning("dropped notification %s: %s", item.id, reason)
            self._drop(item, item.attempts, reason)
            return
        age = (now - _aware(item.created_at)).total_seconds()
        if age > notifier.max_age:
            reason = (
                f"not delivered within max_age ({_duration(notifier.max_age)}) after "
                f"{item.attempts} attempt(s); last error: {item.last_error or 'none'}"
            )
            log.error("notifier %s: dropped delivery %s: %s", notifier.name, item.id, reason)
            self._drop(item, item.attempts, reason)
            return
        if not notifier.wants(item.event):
            reason = (
                f"severity {item.event.get('severity')} is below the notifier's "
                f"min_severity {notifier.min_severity}"
            )
            log.debug("notifier %s: skipped delivery %s: %s", notifier.name, item.id, reason)
            self._drop(item, item.attempts, reason)
            return
        deferred = unreachable.get(item.notifier) or self._earlier_waiting(item, now)
        if deferred is not None:
            # Not an attempt: the attempt count stays, the item only moves to the later time.
            retry_at, reason = deferred
            self._store.mark_retry(item.id, attempts=item.attempts, next_attempt_at=retry_at, error=reason)
            self._waiting[item.id] = _Waiting(_stream(item), _aware(item.created_at), retry_at)
            return
        try:
            notifier.send(item.event, delivery_id=item.id)
        except DeliveryError as exc:
            self._failed(item, notifier, attempts, exc, now, unreachable)
            return
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
            return
        self._store.mark_delivered(item.id, attempts=attempts)
        self._waiting.pop(item.id, None)
        log.debug("notifier %s: delivered %s (attempt %d)", notifier.name, item.id, attempts)

    def _failed(
        self,
        item: OutboxItemLike,
        notifier: Notifier,
        attempts: int,
        exc: DeliveryError,
        now: datetime,
        unreachable: dict[str, tuple[datetime, str]],
    ) -> None:
        if not exc.retryable:
            log.error(
                "notifier %s: delivery %s attempt %d failed, not retried: %s",
                notifier.name,
                item.id,
                attempts,
                exc.message,
            )
            self._drop(item, attempts, exc.message)
            return
        delay = self.backoff(attempts, exc.retry_after)
        retry_at = now + timedelta(seconds=delay)
        log.warning(
            "notifier %s: delivery %s attempt %d failed: %s; next attempt in %s",
            notifier.name,
            item.id,
            attempts,
            exc.message,
            _duration(delay),
        )
        self._store.mark_retry(item.id, attempts=attempts, next_attempt_at=retry_at, error=exc.message)
        self._waiting[item.id] = _Waiting(_stream(item), _aware(item.created_at), retry_at)
        if exc.status is None or exc.status == 429:
            unreachable[item.notifier] = (
                retry_at,
                f"not tried: {notifier.name} failed just before ({exc.message})",
            )

    def _drop(self, item: OutboxItemLike, attempts: int, reason: str) -> None:
        self._store.mark_dropped(item.id, attempts=attempts, error=reason)
        self._waiting.pop(item.id, None)

    def _earlier_waiting(self, item: OutboxItemLike, now: datetime) -> tuple[datetime, str] | None:
        """When an earlier event of the same alert waits for a retry: its time, and why we wait."""
        stream, created = _stream(item), _aware(item.created_at)
        for other_id, other in list(self._waiting.items()):
            if other_id == item.id or other.stream != stream:
                continue
            if other.retry_at + timedelta(seconds=self.lease_seconds) < now:
                # Long past due and not claimed by us since: another dispatcher settled it.
                del self._waiting[other_id]
                continue
            if (other.created_at, other_id) < (created, item.id):
                return other.retry_at, f"waiting for the earlier notification {other_id} of this alert"
        return None

    def _seed(self, now: datetime) -> None:
        """After a restart: which items wait for a retry (their alerts' later events wait too)."""
        self._seeded = True
        for item in self._store.outbox_items(status="pending", limit=_SEED_LIMIT):
            retry_at = _aware(item.next_attempt_at)
            if item.attempts > 0 and retry_at > now:
                self._waiting[item.id] = _Waiting(_stream(item), _aware(item.created_at), retry_at)

    # -- loops ----------------------------------------------------------------------------------

    def _sleep_for(self, cap: float) -> float:
        """Seconds until the next item is due, between a few milliseconds and `cap`."""
        due = self._store.next_attempt_time()
        if due is None:
            return max(_MIN_SLEEP, cap)
        seconds = (_aware(due) - self._clock()).total_seconds()
        return min(max(seconds, _MIN_SLEEP), max(cap, _MIN_SLEEP))

    def run(self, stop: threading.Event) -> None:
        """Deliver until `stop` is set (the daemon's background thread). Never dies of an error."""
        failures = 0
        while not stop.is_set():
            try:
                processed = self.deliver_due()
                # A full batch: more may be due right now.
                wait = _MIN_SLEEP if processed >= self.batch_size else self._sleep_for(_MAX_SLEEP)
                failures = 0
            except Exception:
                failures += 1
                wait = min(_MAX_ERROR_SLEEP, 2.0 ** (failures - 1))
                log.exception("notification dispatch failed (retrying in %s)", _duration(wait))
            stop.wait(wait)

    def drain(self, timeout: float) -> bool:
        """Deliver until nothing is pending or `timeout` seconds pass; True when nothing is pending.

        Waits for items that are due later (a retry after backoff) as long as the timeout allows.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.deliver_due()
                if self._store.outbox_pending() == 0:
                    return True
                wait = self._sleep_for(_MAX_SLEEP)
            except Exception:
                log.exception("notification dispatch failed while draining the outbox")
                wait = _MAX_SLEEP
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                try:
                    return self._store.outbox_pending() == 0
                except Exception:
                    return False
            time.sleep(min(wait, remaining))
