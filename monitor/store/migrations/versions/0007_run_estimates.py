"""Transferability estimates per run (`early_warning.estimators`).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02

- `run_estimates`: one row per (run, model, task, dataset, estimator): the estimate's value on
  the snapshot the run used, whether it was computed or reused, and its key (the estimate itself
  is stored, and reused, like a trial). `started_at` is the run's, copied so that one estimate's
  history is one range of the index (a read costs what it shows).

The table starts empty; nothing stored before is touched.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "run_estimates",
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("task", sa.String(128), nullable=False),
        sa.Column("dataset", sa.String(128), nullable=False),
        sa.Column("estimator", sa.String(32), nullable=False),
        sa.Column("snapshot", sa.String(255), nullable=False),
        sa.Column("started_at", _TIMESTAMP, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("stderr", sa.Double(), nullable=True),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint("status IN ('ok', 'cached', 'failed')", name=op.f("ck_run_estimates_status")),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_run_estimates_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint(
            "run_id", "model", "task", "dataset", "estimator", name=op.f("pk_run_estimates")
        ),
    )
    op.create_index(
        op.f("ix_run_estimates_model_task_dataset_estimator_started_at"),
        "run_estimates",
        ["model", "task", "dataset", "estimator", "started_at"],
    )
    op.create_index(op.f("ix_run_estimates_model_started_at"), "run_estimates", ["model", "started_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_run_estimates_model_started_at"), table_name="run_estimates")
    op.drop_index(
        op.f("ix_run_estimates_model_task_dataset_estimator_started_at"), table_name="run_estimates"
    )
    op.drop_table("run_estimates")
