"""Bring the database schema to the version this code expects, with the migrations shipped inside.

Alembic runs programmatically: no alembic.ini is needed at run time, `script_location` is this
package's `migrations/` folder. The whole upgrade is one transaction that holds the write lock
(SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory lock), so a daemon and a worker that start
together migrate once, one after the other, and the second finds nothing to do.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

from ..errors import StoreError
from ._engine import WRITE

__all__ = ["MIGRATIONS", "alembic_config", "current_revision", "head_revision", "upgrade"]

MIGRATIONS = Path(__file__).resolve().with_name("migrations")
# Any constant shared by every persistence-monitor process: the key of the PostgreSQL advisory lock.
_LOCK_KEY = 0x706D5F6D69677261  # "pm_migra"


def alembic_config(connection: Connection | None = None) -> Config:
    """An alembic `Config` for the shipped migrations, running on `connection` when given."""
    config = Config()
    # ConfigParser interpolates '%': a path holding one must be escaped.
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    """The newest revision shipped with this code."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at (None for an empty database)."""
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine) -> None:
    """Run every migration the database lacks (a no-op when it is at head)."""
    with engine.execution_options(**{WRITE: True}).begin() as connection:
        if connection.dialect.name == "postgresql":
            # Released at commit; DDL is transactional in PostgreSQL, so the loser sees the result.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        config = alembic_config(connection)
        known = {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}
        unknown = [
            rev for rev in MigrationContext.configure(connection).get_current_heads() if rev not in known
        ]
        if unknown:
            # Alembic would say "Can't locate revision"; say what happened and what to do instead.
            raise StoreError(
                f"the database schema is at revision {', '.join(unknown)}, which this version of "
                f"persistence-monitor does not know (a newer version migrated it); upgrade "
                f"persistence-monitor, or point database_url at another database"
            )
        command.upgrade(config, "head")
