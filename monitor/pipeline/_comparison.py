"""The models side by side, each from its latest finished run (`compare`, the status page, `report`).

Reads what it shows, whatever the history holds: per model its latest score (one index lookup)
and that run's cells, then the trials of those cells for their test predictions (which the
test-sample part of a paired difference needs). Nothing is run; the arithmetic is
`monitor.scoring.compare_models`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..scoring import Comparison, ModelCells, compare_models
from ..settings import Settings
from ..store import RunRecord, Store
from ..types import CellResult, ModelRole, TrialResult

__all__ = ["LatestComparison", "compare_latest"]


@dataclass(frozen=True)
class LatestComparison:
    """A comparison of configured models, with the role of each and the run its cells come from."""

    comparison: Comparison
    roles: Mapping[str, ModelRole]
    runs: Mapping[str, RunRecord]  # a model without a finished run is absent

    @property
    def scored(self) -> int:
        """How many of the models have a P(M)."""
        return sum(1 for r in self.comparison.ranking if r.persistence is not None)

    def document(self) -> dict[str, Any]:
        """The comparison as one JSON document (`compare --json`)."""
        models = []
        for rank, entry in enumerate(self.comparison.ranking, start=1):
            run = self.runs.get(entry.model)
            models.append(
                {
                    "rank": rank,
                    "model": entry.model,
                    "role": self.roles[entry.model],
                    "version": entry.version or None,
                    "persistence": entry.persistence,
                    "stderr": entry.stderr,
                    "stderr_seeds": entry.stderr_seeds,
                    "coverage": entry.coverage,
                    "cells_scored": entry.cells_scored,
                    "cells_planned": entry.cells_planned,
                    "run_id": run.id if run else None,
                }
            )
        pairs = [
            {
                "first": pair.first,
                "second": pair.second,
                "difference": pair.difference,
                "stderr": pair.stderr,
                "stderr_seeds": pair.stderr_seeds,
                "z": pair.z,
                "first_persistence": pair.first_persistence,
                "second_persistence": pair.second_persistence,
                "shared_cells": pair.shared,
                "unpaired_cells": pair.unpaired,
                "cells": [
                    {
                        "task": c.task,
                        "dataset": c.dataset,
                        "strategy": c.strategy,
                        "snapshot": c.snapshot,
                        "first": c.first,
                        "second": c.second,
                        "difference": c.difference,
                        "contribution": c.contribution,
                    }
                    for c in pair.cells
                ],
            }
            for pair in self.comparison.pairs
        ]
        return {"models": models, "pairs": pairs}


def compare_latest(
    settings: Settings, store: Store, models: Sequence[str] | None = None, *, top: int = 5
) -> LatestComparison:
    """Compare `models` (configured names; default every configured model), each on the cells of
    its latest completed or partial run. An unknown name is a ValueError (say so before)."""
    configured = {m.name: m for m in settings.models}
    names = list(dict.fromkeys(models)) if models is not None else list(configured)
    unknown = [n for n in names if n not in configured]
    if unknown:
        raise ValueError(f"not configured models: {unknown}")
    latest = store.latest_scores(names)
    cells = {name: store.run_cells(latest[name][0].id, model=name) for name in names if name in latest}
    trials = store.find_trials(k for found in cells.values() for c in found for k in c.keys)
    entries = [
        ModelCells(
            name,
            latest[name][1].version if name in latest else "",
            [_with_predictions(c, trials) for c in cells.get(name, [])],
        )
        for name in names
    ]
    comparison = compare_models(entries, {t.name: t.metric for t in settings.tasks}, top=top)
    return LatestComparison(
        comparison,
        {name: configured[name].role for name in names},
        {name: run for name, (run, _) in latest.items()},
    )


def _with_predictions(cell: CellResult, trials: Mapping[str, TrialResult]) -> CellResult:
    """The cell with its scored seeds' test predictions, in the order of its seed scores (as the
    run had them); unchanged when one of them has none (a trial of an old release, or pruned)."""
    found = [trials.get(key) for key in cell.keys]
    scored = [t for t in found if t is not None and t.status != "failed" and t.score is not None]
    if not scored or len(scored) != len(cell.seed_scores):
        return cell
    predictions = [t.predictions for t in scored]
    if any(p is None for p in predictions):
        return cell
    return replace(cell, predictions=tuple(p for p in predictions if p is not None))
