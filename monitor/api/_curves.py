"""Training curves of a run's cells, read from the store: the run view, its JSON and the report.

A cell's seeds are its trials (`CellResult.keys`, in seed order); a trial's curve is the mean
training loss of each epoch with null where it stopped being finite, and where it diverged
(`details["loss_curve"]`, `details["diverged_at"]`, README "Training curves"). A seed whose trial
is not stored (it failed, retention pruned it) is left out; one stored without a curve (k-NN,
an older release) has an empty one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..store import Store
from ..types import CellResult

__all__ = ["CellCurves", "SeedCurve", "cell_curves"]


@dataclass(frozen=True)
class SeedCurve:
    """One seed of a cell: its score and its loss per epoch (1..E)."""

    seed: int
    status: str
    score: float | None
    losses: tuple[float | None, ...]
    diverged_at: dict[str, int] | None  # {"epoch": e, "step": s}, counted from 1

    def document(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "status": self.status,
            "score": self.score,
            "loss_curve": list(self.losses),
            "diverged_at": self.diverged_at,
        }


@dataclass(frozen=True)
class CellCurves:
    cell: CellResult
    seeds: tuple[SeedCurve, ...]

    @property
    def anchor(self) -> str:
        """The cell's fragment id in the run view (config names hold no space, quote or slash)."""
        c = self.cell
        return f"cell/{c.model}/{c.task}/{c.dataset}/{c.strategy}"


def cell_curves(store: Store, cells: Sequence[CellResult]) -> list[CellCurves]:
    """The seeds' curves of `cells`, in their order; reads only these cells' trials."""
    trials = store.trial_details(key for cell in cells for key in cell.keys)
    out = []
    for cell in cells:
        seeds = []
        for key in dict.fromkeys(cell.keys):
            trial = trials.get(key)
            if trial is None:
                continue
            curve = trial.details.get("loss_curve")
            diverged = trial.details.get("diverged_at")
            seeds.append(
                SeedCurve(
                    seed=trial.seed,
                    status=trial.status,
                    score=trial.score,
                    losses=tuple(curve) if isinstance(curve, list) else (),
                    diverged_at=dict(diverged) if isinstance(diverged, dict) else None,
                )
            )
        out.append(CellCurves(cell, tuple(seeds)))
    return out
