"""Initial schema: runs, run_models, run_cells, trials, snapshots, model_versions.

Revision ID: 0001
Revises:
Create Date: 2026-11-29

Migrations use plain SQLAlchemy types (`DateTime(timezone=True)`, not the store's `UTCDateTime`):
a migration must keep working when the application's code moves on.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("started_at", _TIMESTAMP, nullable=False),
        sa.Column("finished_at", _TIMESTAMP, nullable=True),
        sa.Column("seconds", sa.Double(), nullable=True),
        sa.Column("config_digest", sa.String(length=128), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("plan", sa.JSON(), nullable=False),
        sa.CheckConstraint(
            "status IN ('running', 'completed', 'partial', 'failed')", name=op.f("ck_runs_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    op.create_index(op.f("ix_runs_status_started_at"), "runs", ["status", "started_at"])

    op.create_table(
        "run_models",
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("digest", sa.String(length=128), nullable=False),
        sa.Column("persistence", sa.Double(), nullable=True),
        sa.Column("stderr", sa.Double(), nullable=True),
        sa.Column("spread", sa.Double(), nullable=True),
        sa.Column("worst_cell", sa.JSON(), nullable=True),
        sa.Column("worst_cell_score", sa.Double(), nullable=True),
        sa.Column("coverage", sa.Double(), nullable=False),
        sa.Column("cells_planned", sa.Integer(), nullable=False),
        sa.Column("cells_scored", sa.Integer(), nullable=False),
        sa.Column("task_scores", sa.JSON(), nullable=False),
        sa.Column("dataset_scores", sa.JSON(), nullable=False),
        sa.Column("strategy_scores", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_run_models_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_id", "model", name=op.f("pk_run_models")),
    )
    op.create_index(op.f("ix_run_models_model"), "run_models", ["model"])

    op.create_table(
        "run_cells",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("task", sa.String(length=128), nullable=False),
        sa.Column("dataset", sa.String(length=128), nullable=False),
        sa.Column("snapshot", sa.String(length=255), nullable=False),
        sa.Column("strategy", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("score", sa.Double(), nullable=True),
        sa.Column("seed_scores", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("seconds", sa.Double(), nullable=False),
        sa.Column("keys", sa.JSON(), nullable=False),
        sa.CheckConstraint(
            "status IN ('ok', 'cached', 'diverged', 'failed')", name=op.f("ck_run_cells_status")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_run_cells_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run_cells")),
        sa.UniqueConstraint(
            "run_id",
            "model",
            "task",
            "dataset",
            "strategy",
            name=op.f("uq_run_cells_run_id_model_task_dataset_strategy"),
        ),
    )

    op.create_table(
        "trials",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("task", sa.String(length=128), nullable=False),
        sa.Column("dataset", sa.String(length=128), nullable=False),
        sa.Column("snapshot", sa.String(length=255), nullable=False),
        sa.Column("strategy", sa.String(length=128), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("score", sa.Double(), nullable=True),
        sa.Column("seconds", sa.Double(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=True),
        sa.Column("created_at", _TIMESTAMP, nullable=False),
        sa.CheckConstraint("status IN ('ok', 'diverged')", name=op.f("ck_trials_status")),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_trials_run_id_runs"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_trials")),
    )

    op.create_table(
        "snapshots",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("task", sa.String(length=128), nullable=False),
        sa.Column("dataset", sa.String(length=128), nullable=False),
        sa.Column("snapshot", sa.String(length=255), nullable=False),
        sa.Column("digest", sa.String(length=128), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("n_train", sa.Integer(), nullable=True),
        sa.Column("n_test", sa.Integer(), nullable=True),
        sa.Column("n_classes", sa.Integer(), nullable=True),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("timestamp", _TIMESTAMP, nullable=True),
        sa.Column("first_seen_at", _TIMESTAMP, nullable=False),
        sa.CheckConstraint(
            "status = 'ok' OR reason IS NOT NULL", name=op.f("ck_snapshots_rejected_has_reason")
        ),
        sa.CheckConstraint("status IN ('ok', 'rejected')", name=op.f("ck_snapshots_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_snapshots")),
        sa.UniqueConstraint(
            "task", "dataset", "snapshot", "digest", name=op.f("uq_snapshots_task_dataset_snapshot_digest")
        ),
    )

    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("digest", sa.String(length=128), nullable=False),
        sa.Column("architecture", sa.Text(), nullable=False),
        sa.Column("first_seen_at", _TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_versions")),
        sa.UniqueConstraint("model", "digest", name=op.f("uq_model_versions_model_digest")),
    )


def downgrade() -> None:
    op.drop_table("model_versions")
    op.drop_table("snapshots")
    op.drop_table("trials")
    op.drop_table("run_cells")
    op.drop_index(op.f("ix_run_models_model"), table_name="run_models")
    op.drop_table("run_models")
    op.drop_index(op.f("ix_runs_status_started_at"), table_name="runs")
    op.drop_table("runs")
