"""Alert states, the notification outbox and the notification counters.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-13

Alert states and outbox rows are written in the transaction that stores a run (transactional
outbox); a dispatcher delivers the rows, and counts every outcome in `notification_counts`, a
monotonic counter that survives the pruning of delivered and dropped rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "alert_states",
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("since", _TIMESTAMP, nullable=False),
        sa.Column("consecutive", sa.Integer(), nullable=False),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("baseline", sa.Double(), nullable=True),
        sa.Column("summary", sa.Text(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("episode", sa.String(length=32), nullable=True),
        sa.Column("last_run_id", sa.String(length=32), nullable=True),
        sa.Column("updated_at", _TIMESTAMP, nullable=False),
        sa.CheckConstraint(
            "state IN ('ok', 'pending', 'firing', 'resolved')", name=op.f("ck_alert_states_state")
        ),
        sa.PrimaryKeyConstraint("model", "rule", name=op.f("pk_alert_states")),
    )

    op.create_table(
        "outbox",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("notifier", sa.String(length=128), nullable=False),
        sa.Column("event", sa.JSON(), nullable=False),
        sa.Column("created_at", _TIMESTAMP, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", _TIMESTAMP, nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delivered_at", _TIMESTAMP, nullable=True),
        sa.CheckConstraint("status IN ('pending', 'delivered', 'dropped')", name=op.f("ck_outbox_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
    )
    op.create_index(op.f("ix_outbox_status_next_attempt_at"), "outbox", ["status", "next_attempt_at"])

    op.create_table(
        "notification_counts",
        sa.Column("notifier", sa.String(length=128), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "outcome IN ('delivered', 'retried', 'dropped')", name=op.f("ck_notification_counts_outcome")
        ),
        sa.PrimaryKeyConstraint("notifier", "outcome", name=op.f("pk_notification_counts")),
    )


def downgrade() -> None:
    op.drop_table("notification_counts")
    op.drop_index(op.f("ix_outbox_status_next_attempt_at"), table_name="outbox")
    op.drop_table("outbox")
    op.drop_table("alert_states")
