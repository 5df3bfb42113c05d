"""Plain value types that travel between the layers (no torch, no database, no I/O).

Vocabulary: a *cell* is one (model, task, dataset, strategy) combination of the grid; a *trial* is
one fine-tune of a cell with one seed. A cell's score is the mean of its trials' scores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "CELL_STATUSES",
    "MODEL_ROLES",
    "RUN_STATUSES",
    "SEVERITIES",
    "AlertState",
    "AlertStateName",
    "CellResult",
    "CellStatus",
    "DatasetNoise",
    "EstimateResult",
    "ModelRole",
    "ModelScore",
    "ModelVersion",
    "Predictions",
    "RunStatus",
    "Severity",
    "SnapshotInfo",
    "TrialResult",
    "TrialStatus",
    "Unavailable",
    "severity_rank",
]

CellStatus = Literal["ok", "cached", "diverged", "failed"]
TrialStatus = Literal["ok", "diverged", "failed"]
RunStatus = Literal["completed", "partial", "failed"]
CELL_STATUSES: tuple[CellStatus, ...] = ("ok", "cached", "diverged", "failed")
RUN_STATUSES: tuple[RunStatus, ...] = ("completed", "partial", "failed")

# A model's part in the grid (`models[].role`): a deployed model is scored, compared and alerted
# on; a candidate is scored and compared the same way, and alerted on only by a rule naming it.
ModelRole = Literal["deployed", "candidate"]
MODEL_ROLES: tuple[ModelRole, ...] = ("deployed", "candidate")

# The severity ladder of alert rules and notifiers (`severity:`, `min_severity:`), lowest first.
Severity = Literal["info", "warning", "critical"]
SEVERITIES: tuple[Severity, ...] = ("info", "warning", "critical")


def severity_rank(severity: str) -> int:
    """0 for info, 1 for warning, 2 for critical; anything else ranks above critical.

    Failing open: an event whose severity is not recognised still reaches every notifier rather
    than being filtered out silently.
    """
    return SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES)


@dataclass(frozen=True)
class SnapshotInfo:
    """One complete snapshot of a dataset, materialised as a local directory."""

    task: str
    dataset: str
    snapshot: str  # the snapshot id (its name without archive suffix)
    digest: str  # sha256 over the snapshot's content
    root: Path  # directory holding train/ + test/, or <class>/ folders
    source: str  # the dataset's configured source, for messages
    timestamp: float  # seconds since the epoch when the snapshot became complete


@dataclass(frozen=True)
class Unavailable:
    """Why a model version or a dataset's snapshot cannot be had this run (said as-is to the user).

    Stands where the value would: its cells are planned as `failed` with this reason.
    """

    reason: str

    def __str__(self) -> str:
        return self.reason


@dataclass(frozen=True)
class ModelVersion:
    """A deployed model as found now: its version is the digest of its weights file."""

    model: str
    architecture: str
    # sha256 of the weights file; for a `python:` factory, combined with its source's digest
    # ("" when there is neither a weights file nor a findable source)
    digest: str
    weights: Path | None  # the local file a worker loads (remote weights are fetched here first)
    # A registry's own name for this version ("v7" for MLflow's version 7), shown with the digest
    label: str | None = None

    @property
    def version(self) -> str:
        """Short form of the digest (after the registry's label), the `version` label and in tables."""
        if self.label:
            return f"{self.label}-{self.digest[:8]}"
        return self.digest[:12] if self.digest else "factory"


@dataclass(frozen=True)
class Predictions:
    """What a trial predicted for each example of its test split, beside the true labels.

    The evidence its test-sampling noise is estimated from (`monitor.scoring`). Examples are in
    the snapshot's fixed test order, the same for every trial of one snapshot and task; labels
    and predictions are unsigned 16-bit little-endian class indices, one per example.
    """

    labels: bytes
    predicted: bytes
    num_classes: int

    def __post_init__(self) -> None:
        if len(self.labels) != len(self.predicted) or len(self.labels) % 2:
            raise ValueError("labels and predictions must be 16-bit class indices of equal length")

    @property
    def count(self) -> int:
        return len(self.labels) // 2


@dataclass(frozen=True)
class TrialResult:
    """The outcome of one fine-tune (one cell, one seed)."""

    key: str
    seed: int
    status: TrialStatus
    score: float | None
    seconds: float
    error: str | None = None
    # How it ran (JSON values, not part of the key): n_train, final_loss, device, ...; trials
    # that train also `loss_curve` (mean loss per epoch) and `diverged_at` (README "Training curves").
    details: dict[str, Any] = field(default_factory=dict)
    predictions: Predictions | None = None  # None for failed trials (and results of old releases)


@dataclass(frozen=True)
class CellResult:
    """A grid cell of one run: the mean over its seeds, with how it was obtained."""

    model: str
    task: str
    dataset: str
    snapshot: str
    strategy: str
    status: CellStatus
    score: float | None
    seed_scores: tuple[float, ...]
    seconds: float
    error: str | None = None
    keys: tuple[str, ...] = ()
    # The scored seeds' test predictions, in the order of `seed_scores` (empty when unknown):
    # used to score the test-sampling noise, never stored with the cell (the trials hold them).
    predictions: tuple[Predictions, ...] = field(default=(), compare=False, repr=False)


@dataclass(frozen=True)
class EstimateResult:
    """A transferability estimate of one model on one dataset's snapshot in one run (not in P(M)).

    `status`: ok (computed by this run), cached (computed earlier for the same model version and
    snapshot), failed (`error` says why; `value` is None).
    """

    model: str
    task: str
    dataset: str
    snapshot: str
    estimator: str
    value: float | None
    status: Literal["ok", "cached", "failed"]
    key: str = ""
    error: str | None = None
    stderr: float | None = None  # from bootstrap resamples of the training examples


@dataclass(frozen=True)
class DatasetNoise:
    """The noise in one dataset's score (the mean of its cells), as variances; P(M) gets each
    with the dataset's weight squared.

    `seeds`: from the seed replicates (training noise), shared with another run only when it
    used the very same trials (same model version, snapshot and strategies: equal `trials`). `test`: the test
    sample's own sampling noise, shared with any run on the same snapshot. None: not estimable.
    """

    snapshot: str
    seeds: float | None
    test: float | None
    trials: str = ""  # a digest of the trial keys behind the dataset's cells: equal = the same trials


@dataclass(frozen=True)
class ModelScore:
    """P(M) and its companions for one model in one run (DESIGN.md §1).

    Marginals use the same nested weighting as P(M): every task weighs the same, and within a
    task every dataset weighs the same.
    """

    model: str
    version: str
    persistence: float | None
    stderr: float | None  # seeds and test-sample noise (DESIGN.md §1)
    spread: float | None
    worst_cell: tuple[str, str, str] | None  # (task, dataset, strategy)
    worst_cell_score: float | None
    coverage: float
    cells_planned: int
    cells_scored: int
    task_scores: dict[str, float] = field(default_factory=dict)
    dataset_scores: dict[str, dict[str, float]] = field(default_factory=dict)  # task -> dataset -> score
    strategy_scores: dict[str, float] = field(default_factory=dict)
    # `stderr` counts the seeds and the test samples; this is the seed replicates' part alone.
    stderr_seeds: float | None = None
    noise: dict[str, dict[str, DatasetNoise]] = field(default_factory=dict)  # task -> dataset -> noise
    # The full weights digest `version` is short for ("": not known, or a factory without source).
    digest: str = ""


AlertStateName = Literal["ok", "pending", "firing", "resolved"]


@dataclass(frozen=True)
class AlertState:
    """Where one alert rule stands for one model (kept in the store between runs)."""

    model: str
    rule: str
    state: AlertStateName
    severity: str
    since: datetime  # when this state began
    consecutive: int  # runs the condition has held (ok/pending), or been clear while firing
    value: float | None = None
    baseline: float | None = None
    summary: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    episode: str | None = None  # id shared by the firing and the resolved event of one episode
    last_run_id: str | None = None
    updated_at: datetime | None = None
