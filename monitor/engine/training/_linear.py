"""Linear probes: frozen features computed once, every (lr × seed) head trained as one batched op.

A linear cell's backbone never changes, so its features are computed once per work group and
shared by all linear trials. Trials that share a schedule (optimizer, epochs, batch size,
momentum, label smoothing, lr schedule and warm-up) are stacked into H heads — W [H, C, D],
b [H, C] — and trained together with per-head learning rate, weight decay, initialisation and
data order. Each head sees exactly what it would see trained alone (same RNG draws, same
updates), only without H separate loops.
A linear probe with `augment` needs the backbone on every augmented batch: it trains as a
fine-tune with nothing but the head trainable (`_finetune`), not here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ...types import TrialResult
from .._plan import TrialSpec
from ._curves import LossCurves
from ._device import Runtime
from ._metrics import predictions_of, score_predictions
from ._optim import init_head, schedule_of, stacked_optimizer
from ._schedule import Schedule

__all__ = ["extract_features", "train_linear_heads"]


@torch.no_grad()
def extract_features(
    forward: torch.nn.Module,
    prepare: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    runtime: Runtime,
) -> torch.Tensor:
    """Features [N, D] in float32 of `forward(prepare(batch))`, in eval mode, `runtime.eval_batch` at a time.

    `forward` is the backbone on normalised images (`prepare`: `GroupData.images`), or the part
    of it after cached activations (`prepare`: nothing).
    """
    forward.eval()
    chunks = []
    for start in range(0, inputs.shape[0], runtime.eval_batch):
        with runtime.autocast():
            chunks.append(forward(prepare(inputs[start : start + runtime.eval_batch])).float())
    return torch.cat(chunks)


def train_linear_heads(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    trials: Sequence[TrialSpec],
    metric: str,
    *,
    shared_seconds: float = 0.0,
) -> list[TrialResult]:
    """Train and score every linear trial; `shared_seconds` (feature extraction) is spread over them."""
    by_schedule: dict[tuple[object, ...], list[TrialSpec]] = {}
    for trial in trials:
        by_schedule.setdefault(schedule_of(trial), []).append(trial)
    results: list[TrialResult] = []
    for stack in by_schedule.values():
        start = time.perf_counter()
        scores, diverged, final_loss, predicted, curves = _train_stack(
            train_features, train_labels, test_features, test_labels, num_classes, stack, metric
        )
        predictions = predictions_of(predicted, test_labels, num_classes)
        each = (time.perf_counter() - start) / len(stack) + shared_seconds / len(trials)
        for h, trial in enumerate(stack):
            results.append(
                TrialResult(
                    key=trial.key,
                    seed=trial.seed,
                    status="diverged" if diverged[h] else "ok",
                    score=scores[h],
                    seconds=each,
                    details={
                        "n_train": int(train_labels.shape[0]),
                        "n_test": int(test_labels.shape[0]),
                        "final_loss": final_loss[h],
                        "inputs": "features",  # frozen features computed once for the group
                        "models_batched": len(stack),
                        **curves[h],  # loss_curve, diverged_at
                    },
                    predictions=predictions[h],
                )
            )
    return results


def _train_stack(
    x: torch.Tensor,
    y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    num_classes: int,
    trials: Sequence[TrialSpec],
    metric: str,
) -> tuple[list[float], list[bool], list[float], torch.Tensor, list[dict[str, Any]]]:
    device = x.device
    strategy = trials[0].strategy
    heads, n, dim = len(trials), x.shape[0], x.shape[1]
    generators = [torch.Generator().manual_seed(t.seed) for t in trials]
    inits = [init_head(num_classes, dim, g) for g in generators]
    weight = torch.stack([w for w, _ in inits]).to(device).requires_grad_(True)  # [H, C, D]
    bias = torch.stack([b for _, b in inits]).to(device).requires_grad_(True)  # [H, C]
    optimizer, lr = stacked_optimizer([weight, bias], trials, device)
    batch = min(strategy.batch_size, n)
    schedule = Schedule.of(strategy, math.ceil(n / batch))
    active = torch.ones(heads, dtype=torch.bool, device=device)
    loss = torch.zeros(heads, device=device)
    step = 0
    order_cpu = torch.empty(heads, n, dtype=torch.long)  # [H, N]: the one per-head buffer of size N
    curves = LossCurves()
    for _ in range(strategy.train_epochs):
        # Data order is drawn on the CPU from each head's own generator: identical on every device.
        for h, g in enumerate(generators):
            torch.randperm(n, generator=g, out=order_cpu[h])
        order = order_cpu.to(device)
        for begin in range(0, n, batch):
            idx = order[:, begin : begin + batch]  # [H, B]
            logits = torch.baddbmm(bias[:, None, :], x[idx], weight.transpose(1, 2))  # [H, B, C]
            loss = (
                F.cross_entropy(
                    logits.reshape(-1, num_classes),
                    y[idx].reshape(-1),
                    reduction="none",
                    label_smoothing=strategy.label_smoothing,
                )
                .view(heads, -1)
                .mean(dim=1)
            )
            # Heads are independent: d(sum)/d(loss_h) = 1, so each head gets its own gradient.
            weight.grad = bias.grad = None
            loss.sum().backward()
            # No sync here: a head whose loss is not finite is frozen where it stands (diverged).
            active &= torch.isfinite(loss).detach()
            curves.step(loss, idx.shape[1] / n)
            optimizer.step(schedule.lr(lr, step), active)
            step += 1
        curves.end_epoch()
    with torch.no_grad():
        logits = torch.baddbmm(bias[:, None, :], test_x.expand(heads, -1, -1), weight.transpose(1, 2))
        predictions = torch.nan_to_num(logits, nan=0.0).argmax(dim=2)  # a diverged head is scored as it is
        scores = score_predictions(metric, predictions, test_y, num_classes)
    return scores.tolist(), (~active).tolist(), loss.detach().float().tolist(), predictions, curves.read()
