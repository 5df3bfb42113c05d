"""The tables of the result store, as typed SQLAlchemy ORM classes.

Every change here needs a migration in `migrations/versions/` (tests compare the two with
alembic's autogenerate and fail on any difference).

    runs            one evaluation of the grid; `owner` + `heartbeat_at` tell whether the process
                    running it is still alive
    run_plans       the plan of a run still running, which lets it be resumed after a crash; deleted
                    when the run finishes (its cells then say the same). Kept out of `runs` so that
                    no read of the run log ever loads it                (PK run_id)
    run_models      P(M) and its companions per model of a run, with the run's times copied in so
                    that a model's history is one index range          (PK run_id, model)
    run_cells       the cells of a run, in plan order: the per-cell detail that retention prunes
                                                                        (unique run, cell)
    trials          the fine-tune cache by content key: ok/diverged only (failed ones are retried),
                    with each trial's test predictions; `last_used_at` is the start of the newest
                    run whose cells use it, which is what retention keeps it by
    snapshots       every snapshot version seen, accepted or rejected   (unique snapshot, digest)
    model_versions  every weights digest seen per model                 (unique model, digest)
    alert_states    where each alert rule stands for each model         (PK model, rule)
    outbox          notifications to deliver (the transactional outbox), by delivery id
    notification_counts  deliveries by notifier and outcome: a counter that outlives pruned
                    outbox rows                                         (PK notifier, outcome)
    counters        the other `_total` metrics (runs and cells by outcome, run durations, rows
                    pruned), kept as the rows are written so that a scrape reads a few rows, and
                    pruning never makes them go down                    (PK name, label)
    leases          who leads (HA on PostgreSQL): one row per lease, its holder, its term (raised
                    at every change of holder: a fencing token) and when it lapses    (PK name)
    run_requests    evaluations asked of a standby (POST /api/v1/runs), waiting for the leader to
                    claim them; the request's id becomes the run's id                  (PK id)
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "AlertStateRow",
    "Base",
    "CounterRow",
    "LeaseRow",
    "ModelVersionRow",
    "NotificationCountRow",
    "OutboxRow",
    "RunCellRow",
    "RunEstimateRow",
    "RunModelRow",
    "RunPlanRow",
    "RunRequestRow",
    "RunRow",
    "SnapshotRow",
    "TrialRow",
    "UTCDateTime",
    "utcnow",
]


def utcnow() -> datetime:
    """Return the current time as a timezone-aware UTC datetime."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is timezone-aware UTC in Python on every backend.

    PostgreSQL stores `timestamptz`; SQLite has no time zones, so the value is stored as naive UTC
    and the zone is put back on read. Naive datetimes are refused: their zone would be a guess.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()} refused: pass a timezone-aware one")
        value = value.astimezone(UTC)
        # SQLite would store the offset as text and then compare strings: keep one canonical form.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Named constraints make migrations reproducible and let SQLite's batch mode find them later.
_NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base of every table of the store (one `MetaData`, one migration history)."""

    metadata = MetaData(naming_convention=_NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
        list[Any]: JSON(),
    }


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


RUN_ROW_STATUSES = ("running", "completed", "partial", "failed")
CELL_ROW_STATUSES = ("ok", "cached", "diverged", "failed")
TRIAL_ROW_STATUSES = ("ok", "diverged")
SNAPSHOT_ROW_STATUSES = ("ok", "rejected")
ALERT_ROW_STATES = ("ok", "pending", "firing", "resolved")
OUTBOX_ROW_STATUSES = ("pending", "delivered", "dropped")
NOTIFICATION_ROW_OUTCOMES = ("delivered", "retried", "dropped")


class RunRow(Base):
    __tablename__ = "runs"
    __table_args__ = (
        CheckConstraint(_in("status", RUN_ROW_STATUSES), name="status"),
        Index(None, "status", "started_at"),
        Index(None, "status", "finished_at"),
        Index(None, "started_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    trigger: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    seconds: Mapped[float | None] = mapped_column(Double)
    config_digest: Mapped[str] = mapped_column(String(128))
    error: Mapped[str | None] = mapped_column(Text)
    owner: Mapped[str | None] = mapped_column(String(255))  # "hostname:pid" of the process running it
    heartbeat_at: Mapped[datetime | None]  # that process's last sign of life


class RunPlanRow(Base):
    __tablename__ = "run_plans"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    plan: Mapped[dict[str, Any]]


class RunModelRow(Base):
    __tablename__ = "run_models"
    __table_args__ = (Index(None, "model", "finished", "started_at", "run_id"),)

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    # Copied from the run when it finishes (a run finishes once): a model's history is then one
    # range of this table's index. `finished`: the run completed or was partial (it has a P(M)).
    # NULL times only for rows of a run that was never finished, which cannot exist.
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    finished: Mapped[bool] = mapped_column(Boolean, server_default=false())
    position: Mapped[int] = mapped_column(Integer)  # order of the run's models, as the plan lists them
    version: Mapped[str] = mapped_column(String(64))
    digest: Mapped[str] = mapped_column(String(128))
    persistence: Mapped[float | None] = mapped_column(Double)
    stderr: Mapped[float | None] = mapped_column(Double)  # seeds and test samples (seeds only before 0004)
    stderr_seeds: Mapped[float | None] = mapped_column(Double)
    spread: Mapped[float | None] = mapped_column(Double)
    worst_cell: Mapped[list[Any] | None]  # [task, dataset, strategy]
    worst_cell_score: Mapped[float | None] = mapped_column(Double)
    coverage: Mapped[float] = mapped_column(Double)
    cells_planned: Mapped[int]
    cells_scored: Mapped[int]
    task_scores: Mapped[dict[str, Any]]
    dataset_scores: Mapped[dict[str, Any]]  # task -> dataset -> score
    strategy_scores: Mapped[dict[str, Any]]
    # task -> dataset -> {snapshot, seeds, test}: the variance each dataset puts into P(M)
    noise: Mapped[dict[str, Any] | None]


class RunCellRow(Base):
    __tablename__ = "run_cells"
    __table_args__ = (
        UniqueConstraint("run_id", "model", "task", "dataset", "strategy"),
        CheckConstraint(_in("status", CELL_ROW_STATUSES), name="status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)  # plan order within the run
    model: Mapped[str] = mapped_column(String(128))
    task: Mapped[str] = mapped_column(String(128))
    dataset: Mapped[str] = mapped_column(String(128))
    snapshot: Mapped[str] = mapped_column(String(255))
    strategy: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    score: Mapped[float | None] = mapped_column(Double)
    seed_scores: Mapped[list[Any]]
    error: Mapped[str | None] = mapped_column(Text)
    seconds: Mapped[float] = mapped_column(Double)
    keys: Mapped[list[Any]]


ESTIMATE_ROW_STATUSES = ("ok", "cached", "failed")


class RunEstimateRow(Base):
    """A transferability estimate in one run (its value is also kept, and reused, as a trial)."""

    __tablename__ = "run_estimates"
    __table_args__ = (
        CheckConstraint(_in("status", ESTIMATE_ROW_STATUSES), name="status"),
        Index(None, "model", "task", "dataset", "estimator", "started_at"),
        Index(None, "model", "started_at"),
    )

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    task: Mapped[str] = mapped_column(String(128), primary_key=True)
    dataset: Mapped[str] = mapped_column(String(128), primary_key=True)
    estimator: Mapped[str] = mapped_column(String(32), primary_key=True)
    snapshot: Mapped[str] = mapped_column(String(255))
    started_at: Mapped[datetime]  # the run's, copied: one estimate's history is one index range
    status: Mapped[str] = mapped_column(String(16))
    value: Mapped[float | None] = mapped_column(Double)
    stderr: Mapped[float | None] = mapped_column(Double)  # bootstrap over the training examples
    key: Mapped[str] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)


class TrialRow(Base):
    __tablename__ = "trials"
    __table_args__ = (CheckConstraint(_in("status", TRIAL_ROW_STATUSES), name="status"),)

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    model: Mapped[str] = mapped_column(String(128))
    task: Mapped[str] = mapped_column(String(128))
    dataset: Mapped[str] = mapped_column(String(128))
    snapshot: Mapped[str] = mapped_column(String(255))
    strategy: Mapped[str] = mapped_column(String(128))
    seed: Mapped[int]
    status: Mapped[str] = mapped_column(String(16))
    score: Mapped[float | None] = mapped_column(Double)
    seconds: Mapped[float] = mapped_column(Double)
    error: Mapped[str | None] = mapped_column(Text)  # e.g. why a diverged trial is marked so
    details: Mapped[dict[str, Any]]
    # The predicted and true label of every test example, zlib-compressed (`store._convert`):
    # what the test-sampling noise of P(M) is estimated from. NULL for trials of older releases.
    predictions: Mapped[bytes | None] = mapped_column(LargeBinary)
    # Trials outlive the run that computed them (later runs reuse them): deleting a run keeps them.
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    created_at: Mapped[datetime]
    # The start of the newest finished run whose cells use this trial (its creation until then):
    # retention deletes a trial only when no run that keeps its cells can be using it.
    last_used_at: Mapped[datetime | None] = mapped_column(index=True)


class SnapshotRow(Base):
    __tablename__ = "snapshots"
    __table_args__ = (
        UniqueConstraint("task", "dataset", "snapshot", "digest"),
        CheckConstraint(_in("status", SNAPSHOT_ROW_STATUSES), name="status"),
        CheckConstraint("status = 'ok' OR reason IS NOT NULL", name="rejected_has_reason"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task: Mapped[str] = mapped_column(String(128))
    dataset: Mapped[str] = mapped_column(String(128))
    snapshot: Mapped[str] = mapped_column(String(255))
    digest: Mapped[str] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(64))
    message: Mapped[str | None] = mapped_column(Text)
    n_train: Mapped[int | None]
    n_test: Mapped[int | None]
    n_classes: Mapped[int | None]
    skipped: Mapped[int]  # images that could not be decoded and were left out
    timestamp: Mapped[datetime | None]  # when the snapshot became complete
    first_seen_at: Mapped[datetime]


class ModelVersionRow(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model", "digest"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(128))
    digest: Mapped[str] = mapped_column(String(128))
    architecture: Mapped[str] = mapped_column(Text)
    first_seen_at: Mapped[datetime]


class AlertStateRow(Base):
    __tablename__ = "alert_states"
    __table_args__ = (CheckConstraint(_in("state", ALERT_ROW_STATES), name="state"),)

    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    rule: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    severity: Mapped[str] = mapped_column(String(16))
    since: Mapped[datetime]  # when the state began
    consecutive: Mapped[int]  # runs the condition held (ok, pending) or was clear (firing)
    value: Mapped[float | None] = mapped_column(Double)
    baseline: Mapped[float | None] = mapped_column(Double)
    summary: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]]
    episode: Mapped[str | None] = mapped_column(String(32))  # the current firing episode
    # Not a foreign key: a state outlives the runs that wrote it.
    last_run_id: Mapped[str | None] = mapped_column(String(32))
    updated_at: Mapped[datetime]


class OutboxRow(Base):
    __tablename__ = "outbox"
    __table_args__ = (
        CheckConstraint(_in("status", OUTBOX_ROW_STATUSES), name="status"),
        Index(None, "status", "next_attempt_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # the delivery id
    notifier: Mapped[str] = mapped_column(String(128))
    event: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int]
    next_attempt_at: Mapped[datetime]  # due from then on (while pending); a claim leases it forward
    last_error: Mapped[str | None] = mapped_column(Text)  # safe text, never a secret
    delivered_at: Mapped[datetime | None]


class NotificationCountRow(Base):
    __tablename__ = "notification_counts"
    __table_args__ = (CheckConstraint(_in("outcome", NOTIFICATION_ROW_OUTCOMES), name="outcome"),)

    notifier: Mapped[str] = mapped_column(String(128), primary_key=True)
    outcome: Mapped[str] = mapped_column(String(16), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)


class CounterRow(Base):
    """A monotonic count (or sum) that outlives the rows it counted.

    runs      label: outcome         finished runs
    cells     label: outcome         cells of finished runs
    run_seconds  label: a bucket bound ("le=<bound>"), "count" or "sum"   run durations
    pruned    label: what            rows deleted by retention (runs, cells, trials, notifications)
    """

    __tablename__ = "counters"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    label: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[float] = mapped_column(Double)


class LeaseRow(Base):
    """A lease: `holder` ("hostname:pid") leads until `expires_at`, unless it renews first."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(255))
    term: Mapped[int] = mapped_column(BigInteger)
    acquired_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class RunRequestRow(Base):
    """An evaluation requested through a standby; the leader claims it (deletes it) and runs it."""

    __tablename__ = "run_requests"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    trigger: Mapped[str] = mapped_column(String(16))
    requested_at: Mapped[datetime]
    requested_by: Mapped[str] = mapped_column(String(255))
