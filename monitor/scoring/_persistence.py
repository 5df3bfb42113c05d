"""P(M) and its companions (stderr, spread, worst cell, coverage, marginals) for one model."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from operator import itemgetter
from statistics import fmean, pstdev, variance

from monitor.types import CellResult, DatasetNoise, ModelScore

from ._grid import CellId, ScoredGrid, nested_mean, scored_grid
from ._sampling import dataset_test_noise

__all__ = ["cell_weights", "dataset_noise", "score_model"]


def score_model(
    model: str,
    version: str,
    cells: Sequence[CellResult],
    planned: Sequence[CellId],
    metrics: Mapping[str, str] | None = None,
    *,
    digest: str = "",
) -> ModelScore:
    """Score one model's run: nested P(M), its stderr, spread, worst cell, coverage, marginals.

    `planned` is every planned (task, dataset, strategy) cell of the model; `cells` are its
    results; `metrics` maps each task to its metric, which the test-sampling noise needs (without
    it, or without the cells' predictions, only the seeds count). `version` is the short form of
    the weights `digest` (`ModelVersion.version`). The definitions are in the docstring of
    `monitor.scoring`.
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
    noise = dataset_noise(grid, metrics or {})
    seed_var, test_var = _pm_variance(grid, noise)
    return ModelScore(
        model=model,
        version=version,
        digest=digest,
        persistence=nested_mean(tree) if tree else None,
        stderr=_root_of_sum(seed_var, test_var),
        stderr_seeds=math.sqrt(seed_var) if seed_var is not None else None,
        noise=noise,
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


def dataset_noise(grid: ScoredGrid, metrics: Mapping[str, str]) -> dict[str, dict[str, DatasetNoise]]:
    """Per dataset, the noise of its score (the mean over its strategies): (1/N_S)² Σ_c s_c² / n_c
    from the seeds (single-seed cells take the pooled s² of the model's multi-seed cells), and the
    test sample's (`_sampling`, where the cells have predictions and the task a metric)."""
    estimates: dict[CellId, tuple[float | None, int]] = {}
    for cid, cell in grid.cells.items():
        # A non-finite seed score would make the variance NaN; such a trial carries no spread
        # information, so it is left out of the variance estimate (the cell score is untouched).
        seeds = [s for s in cell.seed_scores if math.isfinite(s)]
        # A cell with no usable seed scores still stands for (at least) one observation.
        estimates[cid] = (variance(seeds) if len(seeds) >= 2 else None, max(len(seeds), 1))
    own = [s2 for s2, _ in estimates.values() if s2 is not None]
    pooled = fmean(own) if own else None  # None: no replicate anywhere to estimate seed noise from
    noise: dict[str, dict[str, DatasetNoise]] = {}
    for task, datasets in grid.tree.items():
        for dataset, strategies in datasets.items():
            ids = [(task, dataset, strategy) for strategy in strategies]
            share = 1.0 / len(ids)  # each strategy's weight in the dataset's score
            seed_var = None
            if pooled is not None:
                terms = []
                for c in ids:
                    own_var, n = estimates[c]
                    terms.append(share**2 * (pooled if own_var is None else own_var) / n)
                seed_var = math.fsum(terms)
            test_var = None
            metric = metrics.get(task)
            if metric is not None and all(grid.cells[c].predictions for c in ids):
                test_var = dataset_test_noise(metric, [(share, grid.cells[c].predictions) for c in ids])
            # which trials stand behind the dataset's score: equal digests, identical seed noise
            trials = hashlib.sha256(" ".join(sorted(k for c in ids for k in grid.cells[c].keys)).encode())
            noise.setdefault(task, {})[dataset] = DatasetNoise(
                grid.cells[ids[0]].snapshot, seed_var, test_var, trials.hexdigest()[:16]
            )
    return noise


def _root_of_sum(*variances: float | None) -> float | None:
    known = [v for v in variances if v is not None]
    return math.sqrt(math.fsum(known)) if known else None


def _pm_variance(
    grid: ScoredGrid, noise: dict[str, dict[str, DatasetNoise]]
) -> tuple[float | None, float | None]:
    """Var(P) from the seeds and from the test samples: Σ_j W_j² · noise_j, W_j = 1 / (N_T · N_D,i)
    the dataset's weight in P(M). Datasets are independent samples."""
    seeds: list[float] = []
    tests: list[float] = []
    for datasets in noise.values():
        for entry in datasets.values():
            weight_sq = (1.0 / (len(grid.tree) * len(datasets))) ** 2
            if entry.seeds is not None:
                seeds.append(weight_sq * entry.seeds)
            if entry.test is not None:
                tests.append(weight_sq * entry.test)
    return (math.fsum(seeds) if seeds else None), (math.fsum(tests) if tests else None)
