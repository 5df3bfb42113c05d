"""Reads flat in history: plans out of `runs`, model history by index, counters, trial use times.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

- `runs.plan` moves to `run_plans`, and only for runs still running: the plan exists to resume
  an interrupted run, and a finished run's cells carry the same trial keys. It was 40 % of a
  large store and was read (on SQLite: walked through its overflow pages) by every run query.
- `run_models` gains the run's `started_at`, `finished_at` and `finished` (completed or partial),
  indexed with the model: a model's P(M) history, its latest and its first run are index ranges.
- `counters` keeps runs and cells by outcome and the run-duration histogram, seeded here from
  the stored history, so that `/metrics` reads a few rows and retention never lowers a `_total`.
- `trials.last_used_at`: the start of the newest run whose cells use the trial, which retention
  keeps trials by; filled in here from every stored run, newest first.

Every step is SQL over the stored rows or a loop over one run at a time: memory stays bounded
whatever the size of the store, and each step logs its progress.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("monitor.store.migrations")

_TIMESTAMP = sa.DateTime(timezone=True)
_FINISHED = "('completed', 'partial')"
_ENDED = "('completed', 'partial', 'failed')"
_CELL_STATUSES = ("ok", "cached", "diverged", "failed")
# The run-duration histogram's bounds as of this revision (monitor.store._counters keeps them).
_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0)
_IN_CHUNK = 500
_PROGRESS_SECONDS = 5.0


class _Progress:
    """Logs "what: done/total" at most every few seconds, and once at the end."""

    def __init__(self, what: str, total: int) -> None:
        self.what, self.total, self.done = what, total, 0
        self._last = time.monotonic()
        if total:
            log.info("migrating the store (0005): %s, %d to go", what, total)

    def step(self, count: int = 1) -> None:
        self.done += count
        now = time.monotonic()
        if now - self._last >= _PROGRESS_SECONDS:
            self._last = now
            log.info("migrating the store (0005): %s %d/%d", self.what, self.done, self.total)

    def end(self) -> None:
        if self.total:
            log.info("migrating the store (0005): %s done (%d)", self.what, self.done)


def upgrade() -> None:
    bind = op.get_bind()
    _plans(bind)
    _model_history(bind)
    _counters(bind)
    _trial_use(bind)


def _plans(bind: sa.Connection) -> None:
    op.create_table(
        "run_plans",
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("plan", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_run_plans_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_run_plans")),
    )
    # One statement: the database copies the (few) plans of unfinished runs without Python
    # holding them.
    bind.execute(
        sa.text("INSERT INTO run_plans (run_id, plan) SELECT id, plan FROM runs WHERE status = 'running'")
    )
    # Plain DROP COLUMN (SQLite >= 3.35), not batch mode: rebuilding `runs` would cascade (see 0002).
    op.drop_column("runs", "plan")
    op.create_index(op.f("ix_runs_status_finished_at"), "runs", ["status", "finished_at"])
    op.create_index(op.f("ix_runs_started_at_id"), "runs", ["started_at", "id"])


def _model_history(bind: sa.Connection) -> None:
    op.add_column("run_models", sa.Column("started_at", _TIMESTAMP, nullable=True))
    op.add_column("run_models", sa.Column("finished_at", _TIMESTAMP, nullable=True))
    op.add_column(
        "run_models", sa.Column("finished", sa.Boolean(), server_default=sa.false(), nullable=False)
    )
    total = bind.execute(sa.text("SELECT count(*) FROM run_models")).scalar_one()
    progress = _Progress("copying run times into run_models", total)
    bind.execute(
        sa.text(
            "UPDATE run_models SET "
            "started_at = (SELECT started_at FROM runs WHERE runs.id = run_models.run_id), "
            "finished_at = (SELECT finished_at FROM runs WHERE runs.id = run_models.run_id), "
            f"finished = (SELECT status IN {_FINISHED} FROM runs WHERE runs.id = run_models.run_id)"
        )
    )
    progress.step(total)
    progress.end()
    op.drop_index(op.f("ix_run_models_model"), table_name="run_models")
    op.create_index(
        op.f("ix_run_models_model_finished_started_at_run_id"),
        "run_models",
        ["model", "finished", "started_at", "run_id"],
    )


def _counters(bind: sa.Connection) -> None:
    counters = op.create_table(
        "counters",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=128), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("name", "label", name=op.f("pk_counters")),
    )
    rows: list[dict[str, object]] = []
    for status, count in bind.execute(
        sa.text(f"SELECT status, count(*) FROM runs WHERE status IN {_ENDED} GROUP BY status")
    ):
        rows.append({"name": "runs", "label": status, "value": float(count)})
    log.info("migrating the store (0005): counting the stored cells by outcome")
    for status, count in bind.execute(sa.text("SELECT status, count(*) FROM run_cells GROUP BY status")):
        if status in _CELL_STATUSES:
            rows.append({"name": "cells", "label": status, "value": float(count)})
    durations = f"FROM runs WHERE status IN {_ENDED} AND seconds IS NOT NULL"
    count, total = bind.execute(sa.text(f"SELECT count(*), coalesce(sum(seconds), 0) {durations}")).one()
    rows.append({"name": "run_seconds", "label": "count", "value": float(count)})
    rows.append({"name": "run_seconds", "label": "sum", "value": float(total)})
    for bound in _BUCKETS:
        within = bind.execute(
            sa.text(f"SELECT count(*) {durations} AND seconds <= :bound"), {"bound": bound}
        ).scalar_one()
        rows.append({"name": "run_seconds", "label": f"le={bound!r}", "value": float(within)})
    op.bulk_insert(counters, rows)


def _trial_use(bind: sa.Connection) -> None:
    op.add_column("trials", sa.Column("last_used_at", _TIMESTAMP, nullable=True))
    # In use since the start of the run that computed it (created_at when that run is gone) ...
    bind.execute(
        sa.text(
            "UPDATE trials SET last_used_at = coalesce("
            "(SELECT started_at FROM runs WHERE runs.id = trials.run_id), created_at)"
        )
    )
    runs = bind.execute(
        sa.text(f"SELECT id, started_at FROM runs WHERE status IN {_ENDED} ORDER BY started_at DESC, id DESC")
    ).all()
    progress = _Progress("recording which runs use each trial", len(runs))
    update = sa.text(
        "UPDATE trials SET last_used_at = :started WHERE key IN :keys AND last_used_at < :started"
    )
    update = update.bindparams(sa.bindparam("keys", expanding=True))
    # ... and then of the newest run whose cells use it. Newest run first: a trial takes the start
    # of the newest run that uses it, and the older runs that use it too find nothing to change.
    for run_id, started in runs:
        keys: list[str] = []
        cells = sa.select(sa.column("keys", sa.JSON())).select_from(sa.table("run_cells"))
        for (cell_keys,) in bind.execute(cells.where(sa.column("run_id") == run_id)):
            keys.extend(k for k in (cell_keys if isinstance(cell_keys, list) else ()) if isinstance(k, str))
            if len(keys) >= _IN_CHUNK:
                bind.execute(update, {"started": started, "keys": keys})
                keys = []
        if keys:
            bind.execute(update, {"started": started, "keys": keys})
        progress.step()
    progress.end()
    op.create_index(op.f("ix_trials_last_used_at"), "trials", ["last_used_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_trials_last_used_at"), table_name="trials")
    op.drop_column("trials", "last_used_at")
    op.drop_table("counters")
    op.drop_index(op.f("ix_run_models_model_finished_started_at_run_id"), table_name="run_models")
    op.create_index(op.f("ix_run_models_model"), "run_models", ["model"])
    op.drop_column("run_models", "finished")
    op.drop_column("run_models", "finished_at")
    op.drop_column("run_models", "started_at")
    op.drop_index(op.f("ix_runs_started_at_id"), table_name="runs")
    op.drop_index(op.f("ix_runs_status_finished_at"), table_name="runs")
    # Plans of finished runs are gone for good; an empty plan is what an unresumable run has.
    op.add_column("runs", sa.Column("plan", sa.JSON(), server_default="{}", nullable=False))
    bind = op.get_bind()
    bind.execute(
        sa.text(
            "UPDATE runs SET plan = (SELECT plan FROM run_plans WHERE run_plans.run_id = runs.id) "
            "WHERE id IN (SELECT run_id FROM run_plans)"
        )
    )
    op.drop_table("run_plans")
