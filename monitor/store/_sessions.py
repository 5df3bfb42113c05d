"""Transactions on the store's database, and the translation of database errors into StoreError.

Every store method is one short transaction: `_reading` for queries, `_writing` for changes
(on SQLite that one starts with BEGIN IMMEDIATE, see `_engine`). A SQLAlchemy or driver error
leaving either becomes a `StoreError` naming the store, with its password hidden, and the operation.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Self

from sqlalchemy import URL, Engine, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ..errors import StoreError
from ._engine import WRITE, describe, render_url
from ._schema import Base

__all__ = ["Sessions"]


class Sessions:
    """The engine of an open store, its transactions, and its lifecycle (close, ping)."""

    def __init__(self, engine: Engine, url: URL) -> None:
        """Wrap an engine whose database is already migrated; use `Store.open` instead."""
        self._engine = engine
        self._url = url
        self._reads = sessionmaker(engine, expire_on_commit=False)
        self._writes = sessionmaker(engine.execution_options(**{WRITE: True}), expire_on_commit=False)

    @property
    def url(self) -> str:
        """The database URL with its password hidden (safe to log)."""
        return render_url(self._url)

    def close(self) -> None:
        """Close every pooled connection; the store must not be used afterwards."""
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def ping(self) -> None:
        """Run `SELECT 1`; raise StoreError if the database cannot be reached (readiness)."""
        with self._reading("answer a ping") as session:
            session.execute(text("SELECT 1"))

    @contextmanager
    def _reading(self, doing: str) -> Iterator[Session]:
        """A read-only transaction (SQLite: deferred, so it never waits for a writer)."""
        with self._translated(doing), self._reads() as session, session.begin():
            yield session

    @contextmanager
    def _writing(self, doing: str) -> Iterator[Session]:
        """A write transaction, committed when the block ends and rolled back if it raises."""
        with self._translated(doing), self._writes() as session, session.begin():
            yield session

    @contextmanager
    def _translated(self, doing: str) -> Iterator[None]:
        try:
            yield
        except SQLAlchemyError as exc:
            raise StoreError(
                f"result store {render_url(self._url)} could not {doing}: {describe(exc, self._url)}; "
                f"{self._hint(exc)}"
            ) from exc

    def _hint(self, exc: SQLAlchemyError) -> str:
        if not isinstance(exc, OperationalError):
            return "this is a bug or a concurrent change: retry, and report it if it persists"
        if self._engine.dialect.name == "sqlite":
            return (
                "check the database file's permissions and free disk space, and that no other process "
                "holds a write lock on it for long"
            )
        return "check that the database server is running and reachable"

    def _insert(self, table: type[Base]) -> sqlite.Insert | postgresql.Insert:
        """An INSERT that understands ON CONFLICT on this database."""
        if self._engine.dialect.name == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)
