"""Training curves: the mean training loss of every epoch, and where the loss first stopped being finite.

What a trial keeps in its `details` (README "Training curves"):

    "loss_curve":  [l_1, l_2, ..., l_E]          mean loss of epoch 1..E, 5 significant digits
    "diverged_at": {"epoch": e, "step": s} | null

`l_e` is the mean over epoch e's training examples of the loss each example's batch was trained
on (batch losses weighted by batch size; with label smoothing, the smoothed loss). A curve
stops at the epoch in which the loss first became non-finite: that epoch's entry is null,
`diverged_at.epoch` is its number and `diverged_at.step` the number of the first non-finite
optimizer step, both counted from 1 over the whole training. The plain loop and the stacked
paths train on past that point in different ways (one stops at the epoch's end, the others
freeze the model where it stands), so neither curve goes on: they agree.

Losses stay on the device: each step adds one multiplication to the queue, each epoch one
reduction, and `read` moves every epoch of every model to the host in one transfer (one
CPU-GPU sync per training, not per step or epoch).
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["LossCurves", "rounded"]


def rounded(value: float) -> float | None:
    """`value` to 5 significant digits (JSON-compact, far below seed noise); None if not finite."""
    return float(f"{value:.5g}") if math.isfinite(value) else None


class LossCurves:
    """The loss curves of H models trained side by side (H = 1 for the plain loop)."""

    def __init__(self) -> None:
        self._epoch: list[torch.Tensor] = []  # this epoch's batch losses, weighted, [H] each
        self._means: list[torch.Tensor] = []  # per finished epoch: the mean loss, [H]
        self._first_bad: list[torch.Tensor] = []  # per finished epoch: first non-finite step, or -1
        self._steps: list[int] = []  # per finished epoch: its optimizer steps

    def step(self, loss: torch.Tensor, share: float) -> None:
        """Add one step's batch loss ([H] or a scalar); `share` = batch size / training examples."""
        self._epoch.append(loss.detach().float().reshape(-1) * share)  # queued, no sync

    def end_epoch(self) -> None:
        if not self._epoch:
            return
        losses = torch.stack(self._epoch)  # [S, H]
        bad = ~torch.isfinite(losses)
        self._means.append(losses.sum(dim=0))  # non-finite as soon as one step is
        # argmax of a 0/1 column is its first 1
        self._first_bad.append(torch.where(bad.any(dim=0), bad.int().argmax(dim=0), -1))
        self._steps.append(len(self._epoch))
        self._epoch = []

    def read(self) -> list[dict[str, Any]]:
        """Per model, `{"loss_curve": [...], "diverged_at": {...} | None}` (see the module docstring)."""
        self.end_epoch()
        if not self._means:
            return []
        # the one transfer: [E, H] means and [E, H] first bad steps
        means = torch.stack(self._means).cpu().tolist()
        first_bad = torch.stack(self._first_bad).cpu().tolist()
        out = []
        for h in range(len(means[0])):
            curve: list[float | None] = []
            diverged: dict[str, int] | None = None
            for epoch, (row, bad) in enumerate(zip(means, first_bad, strict=True)):
                if bad[h] >= 0:
                    curve.append(None)
                    step = sum(self._steps[:epoch]) + bad[h] + 1
                    diverged = {"epoch": epoch + 1, "step": step}
                    break
                curve.append(rounded(row[h]))
            out.append({"loss_curve": curve, "diverged_at": diverged})
        return out
