"""The leader lease and the run requests of standbys (two daemons on one PostgreSQL store).

A lease row, renewed by its holder, rather than a PostgreSQL advisory lock: an advisory lock
belongs to one database session, so it needs a connection held open for ever (no pool, no
PgBouncer in transaction mode), and when the leader's host vanishes without closing its TCP
connection the server keeps the lock until its TCP keepalive gives up (minutes to hours), not
within a TTL the operator chose. A row lapses at `expires_at` whatever the network does, works
through any pooler, and its `term` is a fencing token. Times are the database's clock (`now()`
on PostgreSQL), so the hosts' clocks never have to agree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, delete, func, select
from sqlalchemy.orm import Session

from ._checks import is_hex_id
from ._records import RUN_TRIGGERS
from ._schema import LeaseRow, RunRequestRow, utcnow
from ._sessions import Sessions

__all__ = ["Lease", "Leases", "RunRequest"]

_HOLDER_LENGTH = 255
_NAME_LENGTH = 64


@dataclass(frozen=True)
class Lease:
    """Where a lease stands after an attempt to take or renew it."""

    name: str
    holder: str
    term: int
    expires_at: datetime
    mine: bool  # the asking holder holds it now
    previous: str | None = None  # the holder this attempt took it over from (its lease had lapsed)


@dataclass(frozen=True)
class RunRequest:
    id: str
    trigger: str
    requested_at: datetime
    requested_by: str


class Leases(Sessions):
    """Leases, and evaluations queued through the store."""

    def _now(self, session: Session) -> datetime:
        if self._engine.dialect.name == "postgresql":
            value: datetime = session.execute(select(func.now())).scalar_one()
            return value
        return utcnow()

    @property
    def shared(self) -> bool:
        """True when several daemons may share this store (PostgreSQL); SQLite is single-daemon."""
        return self._engine.dialect.name == "postgresql"

    def take_lease(
        self, name: str, holder: str, ttl: float, *, gone: Callable[[str], bool] | None = None
    ) -> Lease:
        """Take the lease `name` for `ttl` seconds, or renew it if `holder` has it.

        It is taken when nobody holds it, its holder let it lapse, or `gone(holder)` says that
        holder is known to be dead (a process of this host that no longer exists); the term goes
        up at every change of holder. Otherwise it is left alone and the answer says who has it.
        """
        _check(name, holder, ttl)
        with self._writing(f"take the lease {name!r}") as session:
            now = self._now(session)
            row = session.get(LeaseRow, name, with_for_update=True)
            if row is None:
                expires = now + timedelta(seconds=ttl)
                statement = (
                    self._insert(LeaseRow)
                    .values(name=name, holder=holder, term=1, acquired_at=now, expires_at=expires)
                    .on_conflict_do_nothing(index_elements=["name"])
                )
                if cast(CursorResult[Any], session.execute(statement)).rowcount:  # the first holder ever
                    return Lease(name, holder, 1, expires, mine=True)
                row = session.get(LeaseRow, name, with_for_update=True)  # another daemon was first
                assert row is not None
            if row.holder == holder and row.expires_at > now:
                row.expires_at = now + timedelta(seconds=ttl)
                return _lease(row, mine=True)
            if row.expires_at > now and not (gone is not None and gone(row.holder)):
                return _lease(row, mine=False)
            previous = row.holder
            row.holder, row.term = holder, row.term + 1
            row.acquired_at, row.expires_at = now, now + timedelta(seconds=ttl)
            return _lease(row, mine=True, previous=previous if previous != holder else None)

    def release_lease(self, name: str, holder: str) -> bool:
        """Let the lease lapse now if `holder` has it (a clean stop: a standby takes over at once)."""
        with self._writing(f"release the lease {name!r}") as session:
            now = self._now(session)
            row = session.get(LeaseRow, name, with_for_update=True)
            if row is None or row.holder != holder or row.expires_at <= now:
                return False
            row.expires_at = now
            return True

    def lease(self, name: str) -> Lease | None:
        """Who holds the lease `name` (None if nobody ever took it); `mine` is always False."""
        with self._reading(f"read the lease {name!r}") as session:
            row = session.get(LeaseRow, name)
            if row is None:
                return None
            now = self._now(session)
            if row.expires_at <= now:
                return Lease(name, holder="", term=row.term, expires_at=row.expires_at, mine=False)
            return _lease(row, mine=False)

    def request_run(self, run_id: str, *, trigger: str, by: str) -> tuple[str, bool]:
        """Queue an evaluation for the leader; returns (run id, joined a request still waiting)."""
        if not is_hex_id(run_id):
            raise ValueError(f"run id must be 32 lowercase hex digits, got {run_id!r}")
        if trigger not in RUN_TRIGGERS:
            raise ValueError(f"run trigger must be one of {', '.join(RUN_TRIGGERS)}, got {trigger!r}")
        with self._writing("queue a run for the leader") as session:
            waiting = session.scalars(
                select(RunRequestRow.id).order_by(RunRequestRow.requested_at).limit(1)
            ).first()
            if waiting is not None:
                return waiting, True
            session.add(
                RunRequestRow(id=run_id, trigger=trigger, requested_at=self._now(session), requested_by=by)
            )
            return run_id, False

    def waiting_run_requests(self) -> list[RunRequest]:
        """The run requests not begun yet, oldest first (`begin_run` of a request's id drops it)."""
        with self._reading("list the queued runs") as session:
            rows = session.scalars(select(RunRequestRow).order_by(RunRequestRow.requested_at)).all()
            return [RunRequest(r.id, r.trigger, r.requested_at, r.requested_by) for r in rows]

    def drop_run_request(self, run_id: str) -> None:
        """Forget a run request (one whose run exists already)."""
        with self._writing(f"drop the run request {run_id}") as session:
            session.execute(delete(RunRequestRow).where(RunRequestRow.id == run_id))


def _check(name: str, holder: str, ttl: float) -> None:
    if not 0 < len(name) <= _NAME_LENGTH:
        raise ValueError(f"a lease name is 1 to {_NAME_LENGTH} characters, got {name!r}")
    if not 0 < len(holder) <= _HOLDER_LENGTH:
        raise ValueError(f"a lease holder is 1 to {_HOLDER_LENGTH} characters (hostname:pid)")
    if not ttl > 0:
        raise ValueError(f"a lease lasts a positive number of seconds, got {ttl!r}")


def _lease(row: LeaseRow, *, mine: bool, previous: str | None = None) -> Lease:
    return Lease(row.name, row.holder, row.term, row.expires_at, mine=mine, previous=previous)
