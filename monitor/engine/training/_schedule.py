"""The learning rate of every training step, as the strategy's `schedule` and `warmup_epochs` say.

One closed form serves every path (looped fine-tunes, stacked fine-tunes, batched linear heads),
per step (one optimizer update = one batch), for a base learning rate that may be a float or a
tensor of per-head rates. With W warm-up steps and T steps in all:

    step s < W                 lr · s / W                       linear warm-up from 0
    t = s - W, S = T - W:
      constant                 lr                               a plain torch.optim loop
      cosine                   min_lr + (lr - min_lr) · (1 + cos(π t / S)) / 2   CosineAnnealingLR(T_max=S, eta_min=min_lr)
      linear                   lr + (min_lr - lr) · t / S       LinearLR(1, min_lr / lr, total_iters=S)
      step                     lr · gamma ^ floor(t / (step_size · steps per epoch))   StepLR, stepped per epoch

The schedule starts after the warm-up (its step 0 is the first step after it), as
`SequentialLR([warm-up, schedule], milestones=[W])` runs it; a test checks every form against
torch's own schedulers stepped once per batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, overload

import torch

from ...settings import StrategySpec

__all__ = ["Schedule"]


@dataclass(frozen=True)
class Schedule:
    kind: str  # constant | cosine | linear | step
    total_steps: int
    warmup_steps: int
    min_lr: float
    gamma: float
    step_every: int  # steps between two decays of `step` (its step_size in epochs, in steps)

    @classmethod
    def of(cls, strategy: StrategySpec, steps_per_epoch: int) -> Schedule:
        return cls(
            kind=strategy.schedule,
            total_steps=strategy.train_epochs * steps_per_epoch,
            warmup_steps=strategy.warmup_epochs * steps_per_epoch,
            min_lr=strategy.min_lr,
            gamma=strategy.gamma,
            step_every=(strategy.step_size or 1) * steps_per_epoch,
        )

    @overload
    def lr(self, base: float, step: int) -> float: ...
    @overload
    def lr(self, base: torch.Tensor, step: int) -> torch.Tensor: ...

    def lr(self, base: Any, step: int) -> Any:
        """The learning rate of optimizer update number `step` (from 0) for base rate `base`
        (a float, or a tensor of per-head rates)."""
        if step < self.warmup_steps:
            return base * (step / self.warmup_steps)
        t, span = step - self.warmup_steps, max(1, self.total_steps - self.warmup_steps)
        if self.kind == "cosine":
            return self.min_lr + (base - self.min_lr) * (0.5 * (1.0 + math.cos(math.pi * t / span)))
        if self.kind == "linear":
            return base + (self.min_lr - base) * (t / span)
        if self.kind == "step":
            return base * self.gamma ** (t // self.step_every)
        return base
