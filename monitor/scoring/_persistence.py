"""P(M) and its companions (stderr, spread, worst cell, coverage, marginals) for one model."""

from __future__ import annotations

import math
from collections.abc import Sequence
from operator import itemgetter
from statistics import fmean, pstdev, variance

from monitor.types import CellResult, ModelScore

from ._grid import CellId, ScoredGrid, nested_mean, scored_grid

__all__ = ["cell_weights", "score_model"]


def score_model(
    model: str, version: str, cells: Sequence[CellResult], planned: Sequence[CellId]
) -> ModelScore:
    """Score one model's run: nested P(M), seed stderr, spread, worst cell, coverage, marginals.

    `planned` is every planned (task, dataset, strategy) cell of the model; `cells` are its
    results. The definitions are in the docstring of `monitor.scoring`.
    """
    for cell in cells:
        if cell.model != model:
            raise ValueError(
                f"cell {cell.task}/{cell.dataset}/{cell.strategy} is of model {cell.model!r}, not {model!r}"
            )
    grid = scored_grid(cells, planned)
    tree = grid.tree
    # min() keeps the first of equal keys and grid.scores is in planned order: ties go to the
    # first planned cell.
    worst = min(grid.scores.items(), key=itemgetter(1), default=None)
    return ModelScore(
        model=model,
        version=version,
        persistence=nested_mean(tree) if tree else None,
        stderr=_stderr(grid),
        spread=pstdev(list(grid.scores.values())) if grid.scores else None,
        worst_cell=worst[0] if worst else None,
        worst_cell_score=worst[1] if worst else None,
        coverage=len(grid.cells) / len(grid.planned) if grid.planned else 0.0,
        cells_planned=len(grid.planned),
        cells_scored=len(grid.cells),
        task_scores={task: nested_mean({task: datasets}) for task, datasets in tree.items()},
        dataset_scores={
            task: {dataset: fmean(strategies.values()) for dataset, strategies in datasets.items()}
            for task, datasets in tree.items()
        },
        strategy_scores=_strategy_scores(grid),
    )


def cell_weights(cells: Sequence[CellResult], planned: Sequence[CellId]) -> dict[CellId, float]:
    """The weight w_ijk of every scored cell in P(M) = Σ w·P_ijk (they sum to 1; empty if none)."""
    return scored_grid(cells, planned).weights()


def _strategy_scores(grid: ScoredGrid) -> dict[str, float]:
    """P(M) restricted to each strategy, in the order strategies are first scored in the plan."""
    restricted: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for (task, dataset, strategy), score in grid.scores.items():
        restricted.setdefault(strategy, {}).setdefault(task, {})[dataset] = {strategy: score}
    return {strategy: nested_mean(tree) for strategy, tree in restricted.items()}


def _stderr(grid: ScoredGrid) -> float | None:
    """sqrt(Σ w_c² s_c² / n_c); single-seed cells take the pooled s² of the multi-seed cells."""
    weights = grid.weights()
    estimates: dict[CellId, tuple[float | None, int]] = {}
    for cid, cell in grid.cells.items():
        # A non-finite seed score would make the variance NaN; such a trial carries no spread
        # information, so it is left out of the variance estimate (the cell score is untouched).
        seeds = [s for s in cell.seed_scores if math.isfinite(s)]
        # A cell with no usable seed scores still stands for (at least) one observation.
        estimates[cid] = (variance(seeds) if len(seeds) >= 2 else None, max(len(seeds), 1))
    own = [s2 for s2, _ in estimates.values() if s2 is not None]
    if not own:
        return None  # no replicate anywhere: nothing to estimate the seed noise from
    pooled = fmean(own)
    var_p = math.fsum(
        weights[cid] ** 2 * (pooled if s2 is None else s2) / n for cid, (s2, n) in estimates.items()
    )
    return math.sqrt(var_p)
