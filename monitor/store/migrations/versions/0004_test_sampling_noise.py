"""Trials keep their test predictions; run scores keep the seed-only stderr and the noise per dataset.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

`run_models.stderr` now counts the test sample's sampling noise as well as the seeds';
`stderr_seeds` keeps the seed-only figure (what `stderr` was before this revision: for runs
written earlier it stays NULL, and their `stderr` is seed-only). `noise` breaks the variance of
P(M) down by dataset, which the drop rule needs to know what two runs share. All three columns
are nullable: rows written before this revision have none of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # ADD COLUMN needs no table rebuild, on SQLite either.
    op.add_column("trials", sa.Column("predictions", sa.LargeBinary(), nullable=True))
    op.add_column("run_models", sa.Column("stderr_seeds", sa.Double(), nullable=True))
    op.add_column("run_models", sa.Column("noise", sa.JSON(), nullable=True))


def downgrade() -> None:
    # Plain DROP COLUMN (SQLite >= 3.35), not batch mode (see 0002).
    op.drop_column("run_models", "noise")
    op.drop_column("run_models", "stderr_seeds")
    op.drop_column("trials", "predictions")
