"""Models side by side: ranked by P(M), and the paired difference of every pair (`compare_models`).

The definitions are in the docstring of `monitor.scoring` ("Comparison"). In short: a pair is
compared on the cells both models scored on the same snapshot, with P(M)'s own weights over
those cells; the seeds of the two models are independent, their test sample is the same one, so
the test part of the variance comes from the per-example influence of the *difference*.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from monitor._checks import duplicates
from monitor.types import CellResult, Predictions

from ._grid import CellId, ScoredGrid, nested_mean, scored_grid
from ._persistence import dataset_noise, score_model
from ._sampling import dataset_test_noise

__all__ = [
    "CellDifference",
    "Comparison",
    "ModelCells",
    "PairedDifference",
    "RankedModel",
    "compare_models",
]


@dataclass(frozen=True)
class ModelCells:
    """One model as compared: the cells of one of its runs (every planned cell, failed ones
    included), with their seeds' test predictions where they are known."""

    model: str
    version: str
    cells: Sequence[CellResult]


@dataclass(frozen=True)
class RankedModel:
    """A model's place in the ranking: its P(M) over its own scored cells, as `score_model` has it."""

    model: str
    version: str
    persistence: float | None
    stderr: float | None
    stderr_seeds: float | None
    coverage: float
    cells_scored: int
    cells_planned: int


@dataclass(frozen=True)
class CellDifference:
    """One shared cell of a pair: both scores, their difference and its term in the pair's."""

    task: str
    dataset: str
    strategy: str
    snapshot: str
    first: float
    second: float
    difference: float  # first − second
    contribution: float  # w_c · difference, with the weights of the shared cells (they sum to it)


@dataclass(frozen=True)
class PairedDifference:
    """`first` (ranked above) against `second` on the cells both scored on the same snapshot."""

    first: str
    second: str
    difference: float | None  # P_first − P_second over the shared cells; None: none shared
    stderr: float | None  # seeds of both models and the shared test samples
    stderr_seeds: float | None  # the seeds' part alone
    first_persistence: float | None  # P(M) of `first` restricted to the shared cells
    second_persistence: float | None
    shared: int  # cells both models scored on the same snapshot
    unpaired: int  # cells both scored, but on different snapshots: left out of the pair
    cells: tuple[CellDifference, ...]  # the cells that differ most, largest |difference| first

    @property
    def z(self) -> float | None:
        """The difference in standard errors (None without both, or with a zero standard error)."""
        if self.difference is None or not self.stderr:
            return None
        return self.difference / self.stderr


@dataclass(frozen=True)
class Comparison:
    ranking: tuple[RankedModel, ...]  # best P(M) first; models without one last
    pairs: tuple[PairedDifference, ...]  # (ranking[i], ranking[j]) for every i < j, in that order


def compare_models(
    models: Sequence[ModelCells], metrics: Mapping[str, str] | None = None, *, top: int = 5
) -> Comparison:
    """Rank `models` by P(M) (ties keep the given order) and compare every pair of them.

    `metrics` maps each task to its metric, which the test-sampling noise needs (without it, or
    without predictions, only the seeds count, as in `score_model`). `top` cells are listed per
    pair. Two models of one name, or a model's cell given twice, raise ValueError.
    """
    if top < 0:
        raise ValueError(f"top must be >= 0, got {top}")
    repeated = duplicates(m.model for m in models)
    if repeated:
        raise ValueError(f"models given more than once: {repeated}")
    metrics = metrics or {}
    ranked: list[tuple[RankedModel, ScoredGrid]] = []
    for entry in models:
        planned = [(c.task, c.dataset, c.strategy) for c in entry.cells]
        score = score_model(entry.model, entry.version, entry.cells, planned, metrics)
        ranked.append(
            (
                RankedModel(
                    entry.model,
                    entry.version,
                    score.persistence,
                    score.stderr,
                    score.stderr_seeds,
                    score.coverage,
                    score.cells_scored,
                    score.cells_planned,
                ),
                scored_grid(entry.cells, planned),
            )
        )
    # sorted() is stable: equal P(M) keep the given order; models without a P(M) go last.
    ranked.sort(key=lambda pair: (pair[0].persistence is None, -(pair[0].persistence or 0.0)))
    pairs = [
        _pair(first, grid_first, second, grid_second, metrics, top)
        for i, (first, grid_first) in enumerate(ranked)
        for second, grid_second in ranked[i + 1 :]
    ]
    return Comparison(tuple(r for r, _ in ranked), tuple(pairs))


def _pair(
    first: RankedModel,
    grid_first: ScoredGrid,
    second: RankedModel,
    grid_second: ScoredGrid,
    metrics: Mapping[str, str],
    top: int,
) -> PairedDifference:
    both = [cid for cid in grid_first.cells if cid in grid_second.cells]  # first's planned order
    shared = [cid for cid in both if grid_first.cells[cid].snapshot == grid_second.cells[cid].snapshot]
    if not shared:
        return PairedDifference(first.model, second.model, None, None, None, None, None, 0, len(both), ())
    a = scored_grid([grid_first.cells[c] for c in shared], shared)
    b = scored_grid([grid_second.cells[c] for c in shared], shared)
    p_a, p_b = nested_mean(a.tree), nested_mean(b.tree)
    seed_var, test_var = _difference_variance(a, b, metrics)
    weights = a.weights()
    cells = [
        CellDifference(
            *cid,
            a.cells[cid].snapshot,
            a.scores[cid],
            b.scores[cid],
            a.scores[cid] - b.scores[cid],
            weights[cid] * (a.scores[cid] - b.scores[cid]),
        )
        for cid in shared
        if a.scores[cid] != b.scores[cid]
    ]
    # sorted() is stable: equal magnitudes keep the planned order of `first`.
    cells.sort(key=lambda c: abs(c.difference), reverse=True)
    known = [v for v in (seed_var, test_var) if v is not None]
    return PairedDifference(
        first.model,
        second.model,
        p_a - p_b,
        math.sqrt(math.fsum(known)) if known else None,
        math.sqrt(seed_var) if seed_var is not None else None,
        p_a,
        p_b,
        len(shared),
        len(both) - len(shared),
        tuple(cells[:top]),
    )


def _difference_variance(
    a: ScoredGrid, b: ScoredGrid, metrics: Mapping[str, str]
) -> tuple[float | None, float | None]:
    """Var(P_a − P_b) over one set of shared cells, from the seeds and from the test samples:
    Σ_j W_j² (seeds_a,j + seeds_b,j + test_j), test_j of the difference on dataset j's test split."""
    noise_a, noise_b = dataset_noise(a, {}), dataset_noise(b, {})  # seeds only: the test part is joint
    seeds: list[float] = []
    tests: list[float] = []
    for task, datasets in a.tree.items():
        weight_sq = (1.0 / (len(a.tree) * len(datasets))) ** 2  # the dataset's weight in the pair
        for dataset, strategies in datasets.items():
            ids: list[CellId] = [(task, dataset, strategy) for strategy in strategies]
            if all(a.cells[c].keys and a.cells[c].keys == b.cells[c].keys for c in ids):
                # The very same trials (one model under two names): the dataset's difference is
                # exactly 0, with no noise at all.
                seeds.append(0.0)
                tests.append(0.0)
                continue
            own = [v for v in (noise_a[task][dataset].seeds, noise_b[task][dataset].seeds) if v is not None]
            if own:
                seeds.append(weight_sq * math.fsum(own))
            metric = metrics.get(task)
            if metric is not None and all(a.cells[c].predictions and b.cells[c].predictions for c in ids):
                share = 1.0 / len(ids)  # each strategy's weight in the dataset's score
                sides = (
                    [(share, a.cells[c].predictions) for c in ids],
                    [(-share, b.cells[c].predictions) for c in ids],
                )
                tests.append(weight_sq * _test_noise(metric, *sides))
    return (math.fsum(seeds) if seeds else None), (math.fsum(tests) if tests else None)


def _test_noise(
    metric: str,
    first: Sequence[tuple[float, Sequence[Predictions]]],
    second: Sequence[tuple[float, Sequence[Predictions]]],
) -> float:
    """The test noise of one dataset's score difference: one linearisation over both models'
    trials (weights of `second` negative), since they were scored on the same test examples."""
    try:
        return dataset_test_noise(metric, [*first, *second])
    except ValueError:
        # Not the same test examples after all (another test selection): two independent samples.
        return dataset_test_noise(metric, first) + dataset_test_noise(metric, second)
