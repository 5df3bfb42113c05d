"""The result store: runs, their models, cells and estimates, the trial cache, snapshots, model versions,
alert states, the notification outbox, and the leader lease of daemons that share it.

Every method is one short transaction and returns plain dataclasses. Database errors become
`StoreError`s that name the store (password hidden) and the operation; a wrong argument is a
`ValueError` raised before anything is written.
"""

from __future__ import annotations

from sqlalchemy.exc import SQLAlchemyError

from ..errors import StoreError
from ._alerts import AlertLog
from ._engine import connect_engine, describe, parse_url, render_url
from ._estimates import EstimateLog
from ._leases import Leases
from ._migrate import upgrade
from ._outbox import Outbox
from ._retention import Retention
from ._runs import RunLog
from ._sources import SourceLog
from ._trials import TrialCache

__all__ = ["Store"]


class Store(RunLog, EstimateLog, TrialCache, SourceLog, AlertLog, Outbox, Retention, Leases):
    """The persistence-monitor database (SQLite or PostgreSQL), migrated to this code's schema."""

    @classmethod
    def open(cls, url: str) -> Store:
        """Connect to `url` and migrate its schema to head (creating a SQLite file and its folder)."""
        parsed = parse_url(url)
        engine = connect_engine(parsed)
        try:
            upgrade(engine)
        except (SQLAlchemyError, StoreError) as exc:
            engine.dispose()
            why = str(exc) if isinstance(exc, StoreError) else describe(exc, parsed)
            # `from None`: a driver's own exception could quote its connection string.
            raise StoreError(
                f"cannot open the result store at {render_url(parsed)}: {why}; check database_url "
                f"(sqlite:///<path> or postgresql+psycopg://user:password@host:port/database) and that "
                f"the database is running and reachable"
            ) from None
        return cls(engine, parsed)
