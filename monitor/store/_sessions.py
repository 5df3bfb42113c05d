"""Transactions on the store's database, and the translation of database errors into StoreError.

Every store method is one short transaction: `_reading` for queries, `_writing` for changes
(on SQLite that one starts with BEGIN IMMEDIATE, see `_engine`). A SQLAlchemy or driver error
leaving either becomes a `StoreError` naming the store, with its password hidden, and the operation.

A SQLite store also checks, before every transaction, that its file is still the one it opened:
a database deleted or replaced under a running daemon would otherwise take every later write into
an unlinked file (or a fresh empty one), and the history would be gone at the next start without
a word. And it remembers whether its last write failed, so that readiness reports a store that
answers reads but cannot take writes (a read-only or full disk).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Self

from sqlalchemy import URL, Engine, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ..errors import StoreError, StoreGone
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
        self._file = _database_file(url)
        self._identity = _identity(self._file)
        self._write_failure: str | None = None

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

    @property
    def write_failure(self) -> str | None:
        """Why the last write failed, or None if it succeeded (or none was tried yet)."""
        return self._write_failure

    def ping(self, *, write: bool = False) -> None:
        """Run `SELECT 1`; raise StoreError if the database cannot be reached (readiness).

        With `write=True` it also commits a write that changes nothing (the schema version set to
        itself), so a database that answers reads but refuses writes is not called ready.
        """
        with self._reading("answer a ping") as session:
            session.execute(text("SELECT 1"))
        if write:
            with self._writing("take a write") as session:
                session.execute(text("UPDATE alembic_version SET version_num = version_num"))

    @contextmanager
    def _reading(self, doing: str) -> Iterator[Session]:
        """A read-only transaction (SQLite: deferred, so it never waits for a writer)."""
        with self._translated(doing), self._reads() as session, session.begin():
            yield session

    @contextmanager
    def _writing(self, doing: str) -> Iterator[Session]:
        """A write transaction, committed when the block ends and rolled back if it raises."""
        try:
            with self._translated(doing), self._writes() as session, session.begin():
                yield session
        except StoreError as exc:
            self._write_failure = str(exc)
            raise
        self._write_failure = None

    @contextmanager
    def _translated(self, doing: str) -> Iterator[None]:
        self._check_file(doing)
        try:
            yield
        except SQLAlchemyError as exc:
            raise StoreError(
                f"result store {render_url(self._url)} could not {doing}: {describe(exc, self._url)}; "
                f"{self._hint(exc)}"
            ) from exc

    def _check_file(self, doing: str) -> None:
        """Refuse to go on if the SQLite file was deleted or replaced since the store opened it."""
        if self._identity is None:
            return
        now = _identity(self._file)
        if now == self._identity:
            return
        what = "deleted" if now is None else "replaced by another file"
        raise StoreGone(
            f"result store {render_url(self._url)} could not {doing}: the database file was {what} "
            f"while this process had it open; nothing more is written, so no result goes where nobody "
            f"would find it. Put the original file back (from a backup) and restart, or restart to "
            f"begin a new, empty history"
        )

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


def _database_file(url: URL) -> Path | None:
    """The file of a SQLite database on disk; None for in-memory ones and other databases."""
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database)


def _identity(path: Path | None) -> tuple[int, int] | None:
    """(device, inode) of `path`; None if there is no file (or it cannot be looked at)."""
    if path is None:
        return None
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino
