"""Two daemons on one PostgreSQL store: the leader's lease and the runs asked of a standby.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

- `leases`: one row per lease (the daemon's is named "leader"): its holder ("hostname:pid"), its
  term (raised at every change of holder) and when it lapses unless renewed.
- `run_requests`: evaluations requested through a standby's API, claimed (deleted) by the leader,
  which runs each under the request's id.

Both tables start empty; nothing stored before is touched.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("term", sa.BigInteger(), nullable=False),
        sa.Column("acquired_at", _TIMESTAMP, nullable=False),
        sa.Column("expires_at", _TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_leases")),
    )
    op.create_table(
        "run_requests",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("requested_at", _TIMESTAMP, nullable=False),
        sa.Column("requested_by", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run_requests")),
    )


def downgrade() -> None:
    op.drop_table("run_requests")
    op.drop_table("leases")
