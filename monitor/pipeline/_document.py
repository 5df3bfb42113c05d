"""The run document of DESIGN.md §3.1 (`run-once --json`, and the API's run view)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..types import CellResult, EstimateResult, ModelScore

__all__ = ["cell_document", "estimate_document", "model_document", "run_document"]


def estimate_document(estimate: EstimateResult) -> dict[str, Any]:
    """One transferability estimate (`"transferability"` of a model; not part of P(M))."""
    return {
        "task": estimate.task,
        "dataset": estimate.dataset,
        "snapshot": estimate.snapshot,
        "estimator": estimate.estimator,
        "value": estimate.value,
        "status": estimate.status,
        **({"error": estimate.error} if estimate.error else {}),
    }


def cell_document(cell: CellResult) -> dict[str, Any]:
    return {
        "task": cell.task,
        "dataset": cell.dataset,
        "snapshot": cell.snapshot,
        "strategy": cell.strategy,
        "score": cell.score,
        "seed_scores": list(cell.seed_scores),
        "status": cell.status,
        "error": cell.error,
        "seconds": round(cell.seconds, 3),
    }


def model_document(
    score: ModelScore,
    cells: list[CellResult],
    role: str | None = None,
    estimates: list[EstimateResult] | None = None,
) -> dict[str, Any]:
    """One model of a run; `role` (deployed | candidate, an extension) is included when given, and
    its transferability estimates as `"transferability"` (empty when none are configured)."""
    return {
        "model": score.model,
        **({"role": role} if role is not None else {}),
        "version": score.version,
        "persistence": score.persistence,
        "stderr": score.stderr,  # seeds and test-sample noise
        "stderr_seeds": score.stderr_seeds,
        "coverage": score.coverage,
        "spread": score.spread,
        # Extensions beyond the contract: the worst cell and the marginals.
        "worst_cell": (
            {
                "task": score.worst_cell[0],
                "dataset": score.worst_cell[1],
                "strategy": score.worst_cell[2],
                "score": score.worst_cell_score,
            }
            if score.worst_cell
            else None
        ),
        "task_scores": score.task_scores,
        "dataset_scores": score.dataset_scores,
        "strategy_scores": score.strategy_scores,
        "cells": [cell_document(c) for c in cells],
        "transferability": [estimate_document(e) for e in estimates or []],
    }


def run_document(
    run_id: str,
    status: str,
    seconds: float,
    models: list[tuple[ModelScore, list[CellResult]]],
    roles: Mapping[str, str] | None = None,
    *,
    estimates: Mapping[str, list[EstimateResult]] | None = None,
    probes: bool = False,
) -> dict[str, Any]:
    """The run document; with `roles` (model -> deployed | candidate) each model says its role,
    with `estimates` (model -> its estimates) its transferability. A probe run (cheap cells and
    estimates only: no P(M)) says `"probes": true`."""
    return {
        "run_id": run_id,
        "status": status,
        "seconds": round(seconds, 3),
        **({"probes": True} if probes else {}),
        "models": [
            model_document(score, cells, (roles or {}).get(score.model), (estimates or {}).get(score.model))
            for score, cells in models
        ],
    }
