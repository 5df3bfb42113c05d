"""Optimizers for a stack of H models (or linear heads) trained as one batched op.

They follow torch.optim.SGD (momentum, coupled weight decay, no dampening) and torch.optim.AdamW
(decoupled weight decay) exactly, with a learning rate and weight decay *per head*; a test checks
them against torch.optim on single heads. Each step takes the heads' learning rates of that step
(from `Schedule.lr`). Heads marked inactive (diverged) are frozen as they are.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .._plan import TrialSpec

__all__ = ["BatchedAdamW", "BatchedSGD", "init_head", "schedule_of", "stacked_optimizer"]


def schedule_of(trial: TrialSpec) -> tuple[object, ...]:
    """Trials with equal schedules can be stacked (they differ in seed, lr, weight decay only)."""
    s = trial.strategy
    return (
        s.mode,
        s.trainable_blocks,
        s.optimizer,
        s.epochs,
        s.batch_size,
        s.momentum if s.optimizer == "sgd" else None,
        s.label_smoothing,
        s.schedule,
        s.min_lr,
        s.step_size,
        s.gamma,
        s.warmup_epochs,
        s.bn,
        s.augment,
    )


def init_head(
    out_features: int, in_features: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A fresh classifier drawn like `nn.Linear`'s default: U(-1/sqrt(in), 1/sqrt(in)) for both tensors."""
    bound = 1.0 / math.sqrt(in_features)
    weight = (torch.rand(out_features, in_features, generator=generator) * 2 - 1) * bound
    bias = (torch.rand(out_features, generator=generator) * 2 - 1) * bound
    return weight, bias


def _per_head(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.view(-1, *([1] * (like.ndim - 1)))


class BatchedSGD:
    def __init__(self, params: list[torch.Tensor], weight_decay: torch.Tensor, momentum: float) -> None:
        self.params, self.weight_decay, self.momentum = params, weight_decay, momentum
        self._buffers: list[torch.Tensor | None] = [None] * len(params)

    @torch.no_grad()
    def step(self, lr: torch.Tensor, active: torch.Tensor) -> None:
        """One update with the heads' learning rates `lr` [H] of this step."""
        for i, p in enumerate(self.params):
            assert p.grad is not None
            grad = p.grad + _per_head(self.weight_decay, p) * p
            if self.momentum:
                buf = self._buffers[i]
                buf = grad.clone() if buf is None else buf.mul_(self.momentum).add_(grad)
                self._buffers[i] = buf
                grad = buf
            update = _per_head(lr, p) * grad
            p.copy_(torch.where(_per_head(active, p), p - update, p))


class BatchedAdamW:
    def __init__(
        self,
        params: list[torch.Tensor],
        weight_decay: torch.Tensor,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.params, self.weight_decay = params, weight_decay
        self.betas, self.eps = betas, eps
        self._m = [torch.zeros_like(p) for p in params]
        self._v = [torch.zeros_like(p) for p in params]
        self._t = 0

    @torch.no_grad()
    def step(self, lr: torch.Tensor, active: torch.Tensor) -> None:
        """One update with the heads' learning rates `lr` [H] of this step."""
        self._t += 1
        beta1, beta2 = self.betas
        for p, m, v in zip(self.params, self._m, self._v, strict=True):
            assert p.grad is not None
            rate = _per_head(lr, p)
            keep = _per_head(active, p)
            decayed = p * (1 - rate * _per_head(self.weight_decay, p))
            m.mul_(beta1).add_(p.grad, alpha=1 - beta1)
            v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
            denom = (v.sqrt() / math.sqrt(1 - beta2**self._t)).add_(self.eps)
            new = decayed - (rate / (1 - beta1**self._t)) * m / denom
            p.copy_(torch.where(keep, new, p))


def stacked_optimizer(
    params: list[torch.Tensor], trials: Sequence[TrialSpec], device: torch.device
) -> tuple[BatchedSGD | BatchedAdamW, torch.Tensor]:
    """The optimizer of a stack of `trials` (one schedule), and their base learning rates [H]."""
    strategy = trials[0].strategy
    lr = torch.tensor([t.strategy.train_lr for t in trials], dtype=torch.float32, device=device)
    wd = torch.tensor([t.strategy.weight_decay for t in trials], dtype=torch.float32, device=device)
    if strategy.optimizer == "sgd":
        return BatchedSGD(params, wd, strategy.momentum), lr
    return BatchedAdamW(params, wd), lr
