"""The scored part of a planned grid, nested task → dataset → strategy, and its cell weights."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from statistics import fmean

from monitor.types import CellResult, CellStatus

__all__ = ["SCORED_STATUSES", "CellId", "ScoredGrid", "is_scored", "nested_mean", "scored_grid"]

CellId = tuple[str, str, str]  # (task, dataset, strategy)
# A diverged fine-tune is a real outcome (usually chance level), so it counts as it is; a failed
# cell says nothing about the model and is left out (coverage shows the hole).
SCORED_STATUSES: frozenset[CellStatus] = frozenset({"ok", "cached", "diverged"})


def is_scored(cell: CellResult) -> bool:
    """Whether a cell counts in P(M): a scored status and a finite score."""
    return cell.status in SCORED_STATUSES and cell.score is not None and math.isfinite(cell.score)


@dataclass(frozen=True)
class ScoredGrid:
    """The planned cells of one model in one run, and those of them that are scored.

    `cells` and `tree` keep the order of `planned`, which is also the order of every tie-break.
    """

    planned: tuple[CellId, ...]
    cells: dict[CellId, CellResult]  # scored cells only
    scores: dict[CellId, float]  # their scores
    tree: dict[str, dict[str, dict[str, float]]]  # task -> dataset -> strategy -> score

    def weights(self) -> dict[CellId, float]:
        """w_ijk = 1 / (N_T · N_D,i · N_S,ij) for every scored cell; they sum to 1."""
        n_tasks = len(self.tree)
        weights: dict[CellId, float] = {}
        for task, datasets in self.tree.items():
            for dataset, strategies in datasets.items():
                # One division of an exact integer product: correctly rounded, no accumulated error.
                w = 1.0 / (n_tasks * len(datasets) * len(strategies))
                for strategy in strategies:
                    weights[(task, dataset, strategy)] = w
        return weights


def scored_grid(cells: Iterable[CellResult], planned: Sequence[CellId]) -> ScoredGrid:
    """Match results to the plan and keep the scored ones.

    A planned cell without a result is simply not scored. A result for a cell that is not planned,
    two results for one cell or a cell planned twice are caller bugs and raise ValueError (they
    would make coverage or the weights silently wrong).
    """
    plan = tuple((p[0], p[1], p[2]) for p in planned)
    plan_set = set(plan)
    if len(plan_set) != len(plan):
        dupes = sorted({p for p in plan if plan.count(p) > 1})
        raise ValueError(f"cells planned more than once: {dupes}")
    results: dict[CellId, CellResult] = {}
    for cell in cells:
        cid = (cell.task, cell.dataset, cell.strategy)
        if cid not in plan_set:
            raise ValueError(f"result for a cell that is not planned: {cid}")
        if cid in results:
            raise ValueError(f"more than one result for cell {cid}")
        results[cid] = cell
    scored: dict[CellId, CellResult] = {}
    scores: dict[CellId, float] = {}
    tree: dict[str, dict[str, dict[str, float]]] = {}
    for cid in plan:
        result = results.get(cid)
        if result is None or not is_scored(result):
            continue
        assert result.score is not None  # is_scored checked it; this narrows the type
        scored[cid] = result
        scores[cid] = result.score
        task, dataset, strategy = cid
        tree.setdefault(task, {}).setdefault(dataset, {})[strategy] = result.score
    return ScoredGrid(planned=plan, cells=scored, scores=scores, tree=tree)


def nested_mean(tree: Mapping[str, Mapping[str, Mapping[str, float]]]) -> float:
    """Mean over tasks of the mean over datasets of the mean over strategies (non-empty levels)."""
    return fmean(fmean(fmean(s.values()) for s in datasets.values()) for datasets in tree.values())
