"""What the store hands back: small frozen dataclasses, never ORM objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from ..types import CellResult, ModelScore

__all__ = [
    "RUN_TRIGGERS",
    "ModelVersionRecord",
    "RunRecord",
    "RunState",
    "RunTrigger",
    "SnapshotRecord",
    "SnapshotStatus",
]

RunTrigger = Literal["cli", "schedule", "poll", "api", "resume", "demo", "startup"]
RUN_TRIGGERS: tuple[RunTrigger, ...] = ("cli", "schedule", "poll", "api", "resume", "demo", "startup")
RunState = Literal["running", "completed", "partial", "failed"]  # "running" until finish_run
SnapshotStatus = Literal["ok", "rejected"]


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
    plan: dict[str, Any]
    models: list[ModelScore] = field(default_factory=list)
    cells: list[CellResult] = field(default_factory=list)
    owner: str | None = None  # "hostname:pid" of the process running it (None before revision 0002)
    heartbeat_at: datetime | None = None  # that process's last sign of life

    @property
    def finished(self) -> bool:
        """True once the run has an outcome (completed, partial or failed)."""
        return self.status != "running"


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
