"""Runs record their owner ("hostname:pid") and its heartbeat, so a daemon can tell a dead run.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06

Both columns are nullable: runs written before this revision have neither.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    # ADD COLUMN needs no table rebuild, on SQLite either.
    op.add_column("runs", sa.Column("owner", sa.String(length=255), nullable=True))
    op.add_column("runs", sa.Column("heartbeat_at", _TIMESTAMP, nullable=True))


def downgrade() -> None:
    # Plain DROP COLUMN (SQLite >= 3.35), not batch mode: rebuilding `runs` would DROP TABLE it,
    # and with foreign keys on that cascades to run_models and run_cells.
    op.drop_column("runs", "heartbeat_at")
    op.drop_column("runs", "owner")
