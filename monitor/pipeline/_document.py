"""The run document of DESIGN.md §3.1 (`run-once --json`, and the API's run view)."""

from __future__ import annotations

from typing import Any

from ..types import CellResult, ModelScore

__all__ = ["cell_document", "model_document", "run_document"]


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


def model_document(score: ModelScore, cells: list[CellResult]) -> dict[str, Any]:
    return {
        "model": score.model,
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
    }


def run_document(
    run_id: str, status: str, seconds: float, models: list[tuple[ModelScore, list[CellResult]]]
) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "status": status,
        "seconds": round(seconds, 3),
        "models": [model_document(score, cells) for score, cells in models],
    }
