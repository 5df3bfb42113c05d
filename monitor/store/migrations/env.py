"""Alembic environment of the result store.

At run time `Store.open` passes its own connection (already inside the migration transaction)
through `config.attributes["connection"]`. For development, with the alembic.ini beside this file:

    PM_DATABASE_URL=sqlite:///state/monitor.db \
        alembic -c monitor/store/migrations/alembic.ini revision --autogenerate -m "what changed"
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection

from monitor.store._engine import connect_engine, parse_url
from monitor.store._schema import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things: batch mode rebuilds the table instead.
        render_as_batch=True,
        compare_type=True,
    )


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("PM_DATABASE_URL")
    if not url:
        raise SystemExit("set PM_DATABASE_URL to the database to migrate")
    return url


def run_migrations() -> None:
    if context.is_offline_mode():
        context.configure(url=parse_url(_url()), target_metadata=target_metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = connect_engine(parse_url(_url()))
    try:
        with engine.begin() as own:
            _configure(own)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


run_migrations()
