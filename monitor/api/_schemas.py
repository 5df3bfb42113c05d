"""The API's response documents (they make up the OpenAPI schema at /openapi.json)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from ..types import ModelRole

__all__ = [
    "AlertOut",
    "CellOut",
    "ModelOut",
    "ModelScoreOut",
    "Problem",
    "RunOut",
    "RunQueued",
    "RunSummary",
    "TrialOut",
]


class Problem(BaseModel):
    detail: str


class ModelOut(BaseModel):
    model: str
    role: ModelRole = Field(
        description="deployed: alerted on; candidate: scored and compared, alerted on only by a rule naming it"
    )
    version: str | None = Field(description="short weights digest of the latest run")
    persistence: float | None = Field(description="P(M) of the latest finished run")
    stderr: float | None = Field(description="standard error of P(M): seeds and test-sample noise")
    stderr_seeds: float | None = Field(description="standard error of P(M) from the seed replicates alone")
    spread: float | None
    coverage: float | None
    worst_cell: list[str] | None = Field(description="[task, dataset, strategy]")
    worst_cell_score: float | None
    run_id: str | None
    finished_at: datetime | None


class ModelScoreOut(BaseModel):
    model: str
    version: str
    persistence: float | None
    stderr: float | None = Field(description="standard error of P(M): seeds and test-sample noise")
    stderr_seeds: float | None = Field(description="standard error of P(M) from the seed replicates alone")
    spread: float | None
    coverage: float
    worst_cell: list[str] | None
    worst_cell_score: float | None
    task_scores: dict[str, float]
    dataset_scores: dict[str, dict[str, float]]
    strategy_scores: dict[str, float]


class CellOut(BaseModel):
    task: str
    dataset: str
    snapshot: str
    strategy: str
    score: float | None
    seed_scores: list[float]
    status: Literal["ok", "cached", "diverged", "failed"]
    error: str | None
    seconds: float


class RunSummary(BaseModel):
    run_id: str
    trigger: str
    status: Literal["running", "completed", "partial", "failed"]
    started_at: datetime
    finished_at: datetime | None
    seconds: float | None
    error: str | None
    models: list[ModelScoreOut]


class EstimateOut(BaseModel):
    """A transferability estimate (`early_warning`): not in P(M), not in [0, 1]; higher is better."""

    task: str
    dataset: str
    snapshot: str
    estimator: str
    value: float | None
    status: Literal["ok", "cached", "failed"]
    error: str | None = None


class RunModelOut(ModelScoreOut):
    cells: list[CellOut]
    transferability: list[EstimateOut] = []


class RunOut(BaseModel):
    """A run as `run-once --json` prints it (DESIGN.md §3.1), plus its timing and trigger."""

    run_id: str
    trigger: str
    status: Literal["running", "completed", "partial", "failed"]
    seconds: float | None
    started_at: datetime
    finished_at: datetime | None
    error: str | None
    models: list[RunModelOut]


class DivergedAt(BaseModel):
    epoch: int = Field(description="the epoch (from 1) whose loss was first not finite")
    step: int = Field(
        description="the first optimizer step (from 1, over the whole training) with a non-finite loss"
    )


class TrialOut(BaseModel):
    """One seed of one cell of a run, with its training curve (README "Training curves")."""

    model: str
    task: str
    dataset: str
    snapshot: str
    strategy: str
    seed: int
    status: Literal["ok", "diverged"]
    score: float | None
    loss_curve: list[float | None] = Field(
        description="mean training loss of epochs 1..E; null where it was not finite (the curve ends there)"
    )
    diverged_at: DivergedAt | None


class RunQueued(BaseModel):
    run_id: str
    status: Literal["queued"]
    joined: bool = Field(description="true when an evaluation was already waiting and this request joined it")


class AlertOut(BaseModel):
    model: str
    alert: str
    state: Literal["ok", "pending", "firing", "resolved"]
    severity: str
    since: datetime | None
    value: float | None
    baseline: float | None
    summary: str | None
