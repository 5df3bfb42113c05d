"""Transferability estimates per run: what `early_warning` computed, and each one's history.

Written by `finish_run` in the run's transaction (`estimate_rows`). Reads are index ranges: the
latest estimates of a model (for /metrics), one estimate's recent values (for `estimate_drop`),
one run's estimates (its document) — each costs what it returns, however long the history.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from ..types import EstimateResult
from ._checks import check_unique
from ._schema import RunEstimateRow
from ._sessions import Sessions

__all__ = ["EstimateLog", "EstimatePoint", "estimate_rows"]

_ESTIMATES = RunEstimateRow.__table__


@dataclass(frozen=True)
class EstimatePoint:
    """One estimate's value in one run."""

    run_id: str
    snapshot: str
    key: str  # equal keys: the same model version on the same snapshot (the value was reused)
    value: float | None
    started_at: datetime
    stderr: float | None = None


def estimate_rows(
    estimates: Sequence[EstimateResult], *, run_id: str, started_at: datetime
) -> list[dict[str, Any]]:
    """The `run_estimates` rows of one run (ValueError for two estimates of one place)."""
    check_unique([(e.model, e.task, e.dataset, e.estimator) for e in estimates], "estimate", "in one run")
    return [
        {
            "run_id": run_id,
            "model": e.model,
            "task": e.task,
            "dataset": e.dataset,
            "estimator": e.estimator,
            "snapshot": e.snapshot,
            "started_at": started_at,
            "status": e.status,
            "value": e.value,
            "stderr": e.stderr,
            "key": e.key,
            "error": e.error,
        }
        for e in estimates
    ]


def _result(row: Any) -> EstimateResult:
    return EstimateResult(
        model=row.model,
        task=row.task,
        dataset=row.dataset,
        snapshot=row.snapshot,
        estimator=row.estimator,
        value=row.value,
        status=row.status,
        key=row.key,
        error=row.error,
        stderr=row.stderr,
    )


_ORDER = (RunEstimateRow.model, RunEstimateRow.task, RunEstimateRow.dataset, RunEstimateRow.estimator)


class EstimateLog(Sessions):
    def run_estimates(self, run_id: str, *, model: str | None = None) -> list[EstimateResult]:
        """The estimates of one run (of one model when given), by model, task, dataset, estimator."""
        query = select(_ESTIMATES).where(RunEstimateRow.run_id == run_id).order_by(*_ORDER)
        if model is not None:
            query = query.where(RunEstimateRow.model == model)
        with self._reading(f"read the estimates of run {run_id}") as session:
            return [_result(row) for row in session.execute(query)]

    def latest_estimates(self, models: Iterable[str]) -> dict[str, list[EstimateResult]]:
        """Per model, the estimates of the latest run that computed any for it (absent: none yet)."""
        found: dict[str, list[EstimateResult]] = {}
        with self._reading("read the latest estimates") as session:
            for model in dict.fromkeys(models):
                newest = (
                    select(RunEstimateRow.run_id)
                    .where(RunEstimateRow.model == model)
                    .order_by(RunEstimateRow.started_at.desc(), RunEstimateRow.run_id.desc())
                    .limit(1)
                    .scalar_subquery()
                )
                rows = session.execute(
                    select(_ESTIMATES)
                    .where(RunEstimateRow.model == model, RunEstimateRow.run_id == newest)
                    .order_by(*_ORDER)
                ).all()
                if rows:
                    found[model] = [_result(row) for row in rows]
        return found

    def estimate_history(
        self, model: str, task: str, dataset: str, estimator: str, *, limit: int = 20
    ) -> list[EstimatePoint]:
        """The newest `limit` values of one estimate, newest first (runs that computed none: absent)."""
        query = (
            select(
                RunEstimateRow.run_id,
                RunEstimateRow.snapshot,
                RunEstimateRow.key,
                RunEstimateRow.value,
                RunEstimateRow.started_at,
                RunEstimateRow.stderr,
            )
            .where(
                RunEstimateRow.model == model,
                RunEstimateRow.task == task,
                RunEstimateRow.dataset == dataset,
                RunEstimateRow.estimator == estimator,
            )
            .order_by(RunEstimateRow.started_at.desc(), RunEstimateRow.run_id.desc())
            .limit(limit)
        )
        with self._reading(f"read the history of {estimator} for {model}/{task}/{dataset}") as session:
            return [EstimatePoint(*row) for row in session.execute(query)]

    def estimate_count(self) -> int:
        """How many estimate rows the store holds (for tests and the benchmark)."""
        with self._reading("count estimates") as session:
            return int(session.scalar(select(func.count()).select_from(RunEstimateRow)) or 0)
