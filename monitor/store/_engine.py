"""Connect to the database named by `database_url`, and say what went wrong when that fails.

SQLite is the default (`sqlite:///<state_dir>/monitor.db`) and must take two writers at once: the
daemon and a worker process. So every connection runs in WAL mode (readers never block the writer),
waits for a busy lock instead of failing, and write transactions start with `BEGIN IMMEDIATE`:
a deferred transaction that reads first and writes later can hit SQLITE_BUSY without waiting at
all, because its snapshot went stale while it waited for the lock.

Every URL that reaches a message is rendered with its password hidden.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Connection, Engine, create_engine, event, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from ..errors import StoreError

__all__ = ["WRITE", "connect_engine", "describe", "parse_url", "render_url", "scrub"]

# Execution option that marks a write transaction (see the module docstring).
WRITE = "pm_write"
# A run's result is a few thousand rows written in milliseconds; waiting half a minute for the
# other process's lock is generous, and a longer wait means something is stuck.
_SQLITE_BUSY_TIMEOUT_S = 30.0
# Switching a new database file to WAL (see `_enable_wal`) is retried after this pause, doubled each
# time up to the cap, until the busy timeout is spent.
_WAL_RETRY_FIRST_S = 0.005
_WAL_RETRY_MAX_S = 0.25
# An unreachable PostgreSQL must fail a readiness probe in seconds, not hang it.
_POSTGRES_CONNECT_TIMEOUT_S = 10
_HINT = (
    "check database_url (sqlite:///<path>, or postgresql+psycopg://user:password@host:port/database) "
    "and that the database is running and reachable"
)


def render_url(url: URL) -> str:
    """The URL as text, safe for messages and logs: no password, no query (it can hold one too)."""
    text = url.set(query={}).render_as_string(hide_password=True)
    return text + ("?…" if url.query else "")


def scrub(text: str, url: URL | None) -> str:
    """Remove the URL's secrets from a driver message, in case the driver echoed them."""
    if url is None:
        return text
    secrets = [str(url.password)] if url.password else []
    for value in url.query.values():
        secrets.extend([value] if isinstance(value, str) else list(value))
    for secret in secrets:
        if len(secret) >= 3:
            text = text.replace(secret, "***")
    return text


def describe(exc: BaseException, url: URL | None = None) -> str:
    """The gist of a database error: the driver's own words, without SQL or background links."""
    inner = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = [line.strip() for line in str(inner).strip().splitlines() if line.strip()]
    text = "; ".join(lines[:3]) or type(inner).__name__
    return scrub(text, url)


def parse_url(url: str) -> URL:
    """Parse `database_url`; plain `postgresql://` (and `postgres://`) means the psycopg 3 driver."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        # Not echoed: where a password sits in a malformed URL is anybody's guess.
        raise StoreError(
            f"cannot open the result store: database_url is not a database URL (not shown, it may hold "
            f"a password); {_HINT}"
        ) from None
    if parsed.drivername in ("postgresql", "postgres"):
        # psycopg 3 is the driver we install and test; SQLAlchemy would otherwise pick psycopg2.
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise StoreError(
            f"cannot open the result store at {render_url(parsed)}: unsupported database "
            f"{parsed.get_backend_name()!r}; use SQLite or PostgreSQL ({_HINT})"
        )
    return parsed


def connect_engine(url: URL) -> Engine:
    """Create the engine for `url` (no connection is made yet)."""
    try:
        if url.get_backend_name() == "sqlite":
            return _sqlite_engine(url)
        connect_args: dict[str, Any] = {}
        if "connect_timeout" not in url.query:
            connect_args["connect_timeout"] = _POSTGRES_CONNECT_TIMEOUT_S
        # The daemon lives for weeks: a connection the server or a proxy dropped must not fail a call.
        return create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    except NoSuchModuleError:
        raise StoreError(
            f"cannot open the result store at {render_url(url)}: unknown database driver "
            f"{url.get_driver_name()!r}; {_HINT}"
        ) from None
    except ImportError as exc:
        raise StoreError(
            f"cannot open the result store at {render_url(url)}: its driver is not installed ({exc.name}); "
            f"install it (PostgreSQL: pip install 'persistence-monitor[postgres]')"
        ) from None


def _sqlite_engine(url: URL) -> Engine:
    database = url.database or ""
    in_memory = database in ("", ":memory:") or database.startswith("file:")
    if not in_memory:
        try:
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot open the result store at {render_url(url)}: cannot create its directory "
                f"{Path(database).parent}: {exc.strerror}; check database_url or state_dir"
            ) from None
    engine = create_engine(url, connect_args={"timeout": _SQLITE_BUSY_TIMEOUT_S})
    event.listen(engine, "connect", _on_sqlite_connect)
    event.listen(engine, "begin", _on_sqlite_begin)
    return engine


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take transaction control away from the sqlite3 module: it would not BEGIN before a SELECT,
    # and it cannot BEGIN IMMEDIATE. `_on_sqlite_begin` emits BEGIN instead.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        _enable_wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")  # off by default, per connection
        cursor.execute("PRAGMA synchronous=NORMAL")  # durable enough in WAL mode, far fewer fsyncs
    finally:
        cursor.close()


def _enable_wal(cursor: sqlite3.Cursor) -> None:
    """Put the database in WAL mode: persistent in the file, a plain read once it is set.

    On a new file (still in rollback-journal mode) the switch reads the header and then writes it,
    and SQLite does not call the busy handler for that read-to-write upgrade (it could deadlock), so
    the busy timeout does not apply: when another connection is switching or writing at the same
    moment (a daemon and its workers starting together on a fresh database) it fails at once with
    SQLITE_BUSY. Retry it, with a growing pause, for as long as the busy timeout would have waited.
    """
    deadline = time.monotonic() + _SQLITE_BUSY_TIMEOUT_S
    pause = _WAL_RETRY_FIRST_S
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            busy = getattr(exc, "sqlite_errorname", "").startswith("SQLITE_BUSY")
            if not busy or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, _WAL_RETRY_MAX_S)


def _on_sqlite_begin(connection: Connection) -> None:
    immediate = connection.get_execution_options().get(WRITE, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
