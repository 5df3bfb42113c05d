"""Which cells moved P(M) between two runs, and by how much (for alerts and reports)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from monitor.types import CellResult

from ._grid import CellId, scored_grid

__all__ = ["CellContribution", "attribute_change"]


@dataclass(frozen=True)
class CellContribution:
    """One cell's share of the change of P(M) between two runs.

    `before`/`after` are the cell's scores (None where it was not scored in that run);
    `contribution` is w_after·after − w_before·before, a term of P_after − P_before.
    """

    task: str
    dataset: str
    strategy: str
    before: float | None
    after: float | None
    contribution: float


def attribute_change(
    before: Sequence[CellResult],
    after: Sequence[CellResult],
    planned_before: Sequence[CellId],
    planned_after: Sequence[CellId],
    top: int = 5,
) -> list[CellContribution]:
    """The `top` cells with the largest |contribution| to P_after − P_before, largest first.

    A cell contributes w_after·after − w_before·before, a missing side counting 0. Cells that
    contribute exactly 0 are not listed; ties keep the planned order (after's plan, then cells
    only planned before). See `monitor.scoring` for why the weights are not held fixed.
    """
    if top < 0:
        raise ValueError(f"top must be >= 0, got {top}")
    grid_before, grid_after = scored_grid(before, planned_before), scored_grid(after, planned_after)
    w_before, w_after = grid_before.weights(), grid_after.weights()
    order = dict.fromkeys([*grid_after.planned, *grid_before.planned])
    contributions: list[CellContribution] = []
    for cid in order:
        b, a = grid_before.scores.get(cid), grid_after.scores.get(cid)
        if b is None and a is None:
            continue
        term_after = w_after[cid] * a if a is not None else 0.0
        term_before = w_before[cid] * b if b is not None else 0.0
        contribution = term_after - term_before
        if contribution != 0.0:
            contributions.append(CellContribution(*cid, before=b, after=a, contribution=contribution))
    # sorted() is stable: equal magnitudes keep the planned order built above.
    contributions.sort(key=lambda c: abs(c.contribution), reverse=True)
    return contributions[:top]
