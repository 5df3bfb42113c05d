"""The notification outbox: what the dispatcher delivers, and how each delivery ended.

`write_alerts` (see `_alerts`) enqueues items as `pending`, due at once, in the transaction that
stores the run. A dispatcher claims the due ones (`claim_due`: their `next_attempt_at` moves a
lease ahead, so that another dispatcher does not take them meanwhile; on PostgreSQL the claim
skips rows that another claim has locked), delivers them, and marks each one delivered, for a
retry at a later time, or dropped. Each mark is one transaction with its `notification_counts`
increment, and applies to pending items only: a late duplicate dispatcher counts nothing twice.
Delivery is at least once; the item id (stable across retries) lets receivers deduplicate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, delete, func, select, update

from .._checks import duplicates
from ._checks import check_aware, check_hex_id, check_json, check_name
from ._records import OUTBOX_STATUSES, NotificationOutcome, OutboxItem, OutboxStatus
from ._schema import NotificationCountRow, OutboxRow, utcnow
from ._sessions import Sessions

__all__ = ["Outbox", "ended_before", "outbox_rows"]

_NOTIFIER_LENGTH = 128  # outbox.notifier is String(128)
# An error is a line for an operator (an HTTP status, a timeout), not a response body.
_ERROR_LENGTH = 2000


def outbox_rows(
    deliveries: Sequence[tuple[str, str, Mapping[str, Any]]], now: datetime
) -> list[dict[str, Any]]:
    """Column values of new `outbox` rows (pending, due at `now`), refusing bad or repeated ids."""
    rows: list[dict[str, Any]] = []
    for delivery in deliveries:
        if not isinstance(delivery, tuple) or len(delivery) != 3:
            raise ValueError(f"a delivery is a tuple (id, notifier, event), got {delivery!r}")
        item_id, notifier, event = delivery
        check_hex_id(item_id, "a delivery id")
        rows.append(
            {
                "id": item_id,
                "notifier": check_name(notifier, f"the notifier of delivery {item_id}", _NOTIFIER_LENGTH),
                "event": check_json(event, f"the event of delivery {item_id}"),
                "created_at": now,
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "last_error": None,
                "delivered_at": None,
            }
        )
    repeated = duplicates(row["id"] for row in rows)
    if repeated:
        raise ValueError(f"delivery id {repeated[0]} appears twice: every notification needs its own id")
    return rows


def ended_before(older_than: datetime) -> tuple[Any, ...]:
    """Where-clauses of the delivered and dropped items created before `older_than`: what may be
    pruned (pending items stay whatever their age)."""
    return (OutboxRow.status.in_(("delivered", "dropped")), OutboxRow.created_at < older_than)


def outbox_item(row: OutboxRow) -> OutboxItem:
    """The `OutboxItem` of an `outbox` row."""
    return OutboxItem(
        id=row.id,
        notifier=row.notifier,
        event=dict(row.event),
        created_at=row.created_at,
        status=cast(OutboxStatus, row.status),
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        last_error=row.last_error,
        delivered_at=row.delivered_at,
    )


def _check_attempts(attempts: object) -> int:
    if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 0:
        raise ValueError(f"attempts must be a count (an int >= 0), got {attempts!r}")
    return attempts


def _safe_error(error: object) -> str:
    if not isinstance(error, str):
        raise ValueError(f"error must be text, got {type(error).__name__}")
    return error if len(error) <= _ERROR_LENGTH else error[: _ERROR_LENGTH - 1] + "…"


class Outbox(Sessions):
    """Notifications waiting for delivery, their outcomes, and the counts of those outcomes."""

    def claim_due(
        self,
        *,
        limit: int = 50,
        lease_seconds: float = 60.0,
        now: datetime | None = None,
        notifier: str | None = None,
    ) -> list[OutboxItem]:
        """Take up to `limit` pending items due at `now` (default: the current time), oldest first.

        In the same transaction their `next_attempt_at` moves to `now + lease_seconds`: another
        dispatcher (another process) does not get them before then, and if this one dies before
        marking them, they are due again once the lease has run out. The items come back with the
        leased time. With `notifier`, only that notifier's items are taken.
        """
        if not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive int, got {limit!r}")
        if not math.isfinite(lease_seconds) or lease_seconds <= 0:
            raise ValueError(f"lease_seconds must be a positive number, got {lease_seconds!r}")
        at = utcnow() if now is None else check_aware(now, "now")
        leased = at + timedelta(seconds=lease_seconds)
        query = (
            select(OutboxRow)
            .where(OutboxRow.status == "pending", OutboxRow.next_attempt_at <= at)
            .order_by(OutboxRow.created_at, OutboxRow.id)
            .limit(limit)
            # PostgreSQL: rows another claim holds are skipped, not waited for. SQLite has no row
            # locks (and renders nothing here): its write lock serialises the claims instead.
            .with_for_update(skip_locked=True)
        )
        if notifier is not None:
            query = query.where(OutboxRow.notifier == check_name(notifier, "notifier", _NOTIFIER_LENGTH))
        with self._writing("claim due notifications") as session:
            rows = list(session.scalars(query))
            for row in rows:
                row.next_attempt_at = leased
            return [outbox_item(row) for row in rows]

    def mark_delivered(self, item_id: str, *, attempts: int) -> None:
        """The item was delivered (after `attempts` attempts); count it. A no-op unless it is pending."""
        _check_attempts(attempts)

        def delivered(row: OutboxRow) -> None:
            row.status, row.attempts, row.delivered_at = "delivered", attempts, utcnow()

        self._mark(item_id, "delivered", delivered)

    def mark_retry(self, item_id: str, *, attempts: int, next_attempt_at: datetime, error: str) -> None:
        """The attempt failed and is retried at `next_attempt_at`; count it. A no-op unless pending.

        `error` must be safe to show (no secret): it is stored as the item's `last_error`.
        """
        _check_attempts(attempts)
        check_aware(next_attempt_at, "next_attempt_at")
        message = _safe_error(error)

        def retried(row: OutboxRow) -> None:
            row.attempts, row.next_attempt_at, row.last_error = attempts, next_attempt_at, message

        self._mark(item_id, "retried", retried)

    def mark_dropped(self, item_id: str, *, attempts: int, error: str) -> None:
        """The item is given up (not retried again); count it. A no-op unless it is pending.

        `error` must be safe to show (no secret): it is stored as the item's `last_error`.
        """
        _check_attempts(attempts)
        message = _safe_error(error)

        def dropped(row: OutboxRow) -> None:
            row.status, row.attempts, row.last_error = "dropped", attempts, message

        self._mark(item_id, "dropped", dropped)

    def drop_pending(self, notifier: str, *, error: str) -> int:
        """Give up every pending item of `notifier`, leased or not; count them; return how many.

        For a notifier that is no longer configured: nothing could ever deliver its items. Their
        attempts stay as they are; `error` (safe to show, no secret) becomes their `last_error`.
        """
        check_name(notifier, "notifier", _NOTIFIER_LENGTH)
        message = _safe_error(error)
        statement = (
            update(OutboxRow)
            .where(OutboxRow.status == "pending", OutboxRow.notifier == notifier)
            .values(status="dropped", last_error=message)
            .execution_options(synchronize_session=False)
        )
        with self._writing(f"drop the pending notifications of {notifier!r}") as session:
            dropped = cast(CursorResult[Any], session.execute(statement)).rowcount
            if dropped:
                count = self._insert(NotificationCountRow).values(
                    notifier=notifier, outcome="dropped", count=dropped
                )
                session.execute(
                    count.on_conflict_do_update(
                        index_elements=["notifier", "outcome"],
                        set_={"count": NotificationCountRow.count + dropped},
                    )
                )
            return dropped

    def _mark(self, item_id: str, outcome: NotificationOutcome, change: Callable[[OutboxRow], None]) -> None:
        check_hex_id(item_id, "an outbox item id")
        with self._writing(f"mark notification {item_id} {outcome}") as session:
            # Locked (PostgreSQL) until commit: a duplicate dispatcher marking it too waits, then
            # finds it no longer pending.
            row = session.get(OutboxRow, item_id, with_for_update=True)
            if row is None or row.status != "pending":
                return
            change(row)
            count = self._insert(NotificationCountRow).values(notifier=row.notifier, outcome=outcome, count=1)
            session.execute(
                count.on_conflict_do_update(
                    index_elements=["notifier", "outcome"], set_={"count": NotificationCountRow.count + 1}
                )
            )

    def outbox_pending(self) -> int:
        """How many items wait for delivery (due or not)."""
        query = select(func.count()).select_from(OutboxRow).where(OutboxRow.status == "pending")
        with self._reading("count pending notifications") as session:
            return int(session.scalar(query) or 0)

    def next_attempt_time(self) -> datetime | None:
        """When the next pending item is due (None if none is pending); it may be in the past."""
        query = select(func.min(OutboxRow.next_attempt_at)).where(OutboxRow.status == "pending")
        with self._reading("read when the next notification is due") as session:
            return session.scalar(query)

    def next_attempt_times(self) -> dict[str, datetime]:
        """Notifier -> when its next pending item is due (it may be in the past); absent: none pending."""
        query = (
            select(OutboxRow.notifier, func.min(OutboxRow.next_attempt_at))
            .where(OutboxRow.status == "pending")
            .group_by(OutboxRow.notifier)
        )
        with self._reading("read when each notifier's next notification is due") as session:
            return {notifier: due for notifier, due in session.execute(query)}

    def notification_counts(self) -> dict[tuple[str, str], int]:
        """(notifier, outcome) -> how many deliveries ended so, ever (pruning keeps these)."""
        query = select(
            NotificationCountRow.notifier, NotificationCountRow.outcome, NotificationCountRow.count
        )
        with self._reading("count notifications") as session:
            return {(notifier, outcome): int(count) for notifier, outcome, count in session.execute(query)}

    def outbox_items(self, *, status: str | None = None, limit: int = 100) -> list[OutboxItem]:
        """The newest items first, of one status or of all."""
        if status is not None and status not in OUTBOX_STATUSES:
            raise ValueError(f"an outbox status is one of {', '.join(OUTBOX_STATUSES)}, got {status!r}")
        if not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive int, got {limit!r}")
        query = select(OutboxRow).order_by(OutboxRow.created_at.desc(), OutboxRow.id.desc()).limit(limit)
        if status is not None:
            query = query.where(OutboxRow.status == status)
        with self._reading("list notifications") as session:
            return [outbox_item(row) for row in session.scalars(query)]

    def prune_outbox(self, *, older_than: datetime) -> int:
        """Delete delivered and dropped items created before `older_than`; return how many.

        Pending items stay whatever their age, and `notification_counts` is left as it is.
        """
        check_aware(older_than, "older_than")
        statement = (
            delete(OutboxRow).where(*ended_before(older_than)).execution_options(synchronize_session=False)
        )
        with self._writing("prune delivered notifications") as session:
            return cast(CursorResult[Any], session.execute(statement)).rowcount
