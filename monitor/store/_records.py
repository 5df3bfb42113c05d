"""What the store hands back: small frozen dataclasses, never ORM objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from ..types import SEVERITIES, AlertState, AlertStateName, CellResult, ModelScore

__all__ = [
    "ALERT_STATE_NAMES",
    "NOTIFICATION_OUTCOMES",
    "OUTBOX_STATUSES",
    "RUN_TRIGGERS",
    "SEVERITIES",
    "AlertState",
    "AlertStateName",
    "ModelVersionRecord",
    "NotificationOutcome",
    "OutboxItem",
    "OutboxStatus",
    "RunRecord",
    "RunState",
    "RunTrigger",
    "ScorePoint",
    "SnapshotRecord",
    "SnapshotStatus",
]

RunTrigger = Literal["cli", "schedule", "poll", "api", "resume", "demo", "startup", "probes"]
RUN_TRIGGERS: tuple[RunTrigger, ...] = (
    "cli",
    "schedule",
    "poll",
    "api",
    "resume",
    "demo",
    "startup",
    "probes",
)
RunState = Literal["running", "completed", "partial", "failed"]  # "running" until finish_run
SnapshotStatus = Literal["ok", "rejected"]
ALERT_STATE_NAMES: tuple[AlertStateName, ...] = ("ok", "pending", "firing", "resolved")
OutboxStatus = Literal["pending", "delivered", "dropped"]
OUTBOX_STATUSES: tuple[OutboxStatus, ...] = ("pending", "delivered", "dropped")
NotificationOutcome = Literal["delivered", "retried", "dropped"]
NOTIFICATION_OUTCOMES: tuple[NotificationOutcome, ...] = ("delivered", "retried", "dropped")


@dataclass(frozen=True)
class RunRecord:
    """One run as stored: its outcome and, when asked for, its models and cells in plan order."""

    id: str
    trigger: str
    status: RunState
    started_at: datetime
    finished_at: datetime | None
    seconds: float | None
    error: str | None
    config_digest: str
    # The plan of a run still running (what resuming it needs); None once it has finished, and
    # in the run lists, which never read it.
    plan: dict[str, Any] | None = None
    models: list[ModelScore] = field(default_factory=list)
    cells: list[CellResult] = field(default_factory=list)
    owner: str | None = None  # "hostname:pid" of the process running it (None before revision 0002)
    heartbeat_at: datetime | None = None  # that process's last sign of life

    @property
    def finished(self) -> bool:
        """True once the run has an outcome (completed, partial or failed)."""
        return self.status != "running"


@dataclass(frozen=True)
class ScorePoint:
    """One point of a model's P(M) history: what a plot or a trend needs, a few numbers."""

    run_id: str
    started_at: datetime
    finished_at: datetime | None
    version: str
    persistence: float | None
    stderr: float | None
    stderr_seeds: float | None
    coverage: float


@dataclass(frozen=True)
class SnapshotRecord:
    """One version of a snapshot (a digest) as seen by a source: accepted, or rejected with a reason.

    `first_seen_at` is set by the store when the version is first recorded; whatever the caller
    passes there is ignored.
    """

    task: str
    dataset: str
    snapshot: str
    digest: str
    source: str
    status: SnapshotStatus
    reason: str | None = None  # a bounded code (metric label); required when rejected
    message: str | None = None
    n_train: int | None = None
    n_test: int | None = None
    n_classes: int | None = None
    skipped: int = 0  # images that could not be decoded and were left out
    timestamp: datetime | None = None  # when the snapshot became complete
    first_seen_at: datetime | None = None


@dataclass(frozen=True)
class ModelVersionRecord:
    """A weights digest seen for a model, with when it was first seen."""

    model: str
    digest: str
    architecture: str
    first_seen_at: datetime

    @property
    def version(self) -> str:
        """Short form of the digest, as `ModelVersion.version` renders it."""
        return self.digest[:12] if self.digest else "factory"


@dataclass(frozen=True)
class OutboxItem:
    """One notification to deliver to one notifier; `id` is its delivery id, stable across retries.

    A pending item is due once `next_attempt_at` has passed; claiming it pushes that time forward
    by a lease, so that no other dispatcher takes it meanwhile.
    """

    id: str
    notifier: str
    event: dict[str, Any]
    created_at: datetime
    status: OutboxStatus
    attempts: int
    next_attempt_at: datetime
    last_error: str | None = None  # safe text only, never a secret
    delivered_at: datetime | None = None
