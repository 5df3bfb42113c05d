"""`partial` and `full` fine-tunes: the backbone (or its last stages) trains with a fresh head.

Every trial starts from the master weights kept on the device (a copy, not a reload and not a
deepcopy), so a work group loads its model once whatever the number of trials. What a trial
trains on is a `Feed`: the images through the whole backbone, or — for `partial` trials of a
chain-shaped backbone — activations cached at the input of the first trainable stage.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import CellError
from ...models import Backbone, submodule
from ...settings import StrategySpec
from ...types import TrialResult
from .._plan import TrialSpec
from ._augment import augmenter
from ._curves import LossCurves
from ._device import Runtime
from ._metrics import predictions_of, score_predictions
from ._optim import init_head
from ._schedule import Schedule
from ._tensors import GroupData

__all__ = ["Feed", "finetune", "image_feed", "set_trainable"]


@dataclass
class Feed:
    """Inputs of a fine-tune and how they become features."""

    train: torch.Tensor  # uint8 images [N, 3, S, S] or cached activations
    test: torch.Tensor
    prepare: Callable[[torch.Tensor], torch.Tensor]  # per batch: normalise images, or nothing
    forward: nn.Module  # batch -> features [B, D]: the model, or the part of it after the cache
    kind: str  # "images" | "activations"


def image_feed(backbone: Backbone, data: GroupData) -> Feed:
    return Feed(data.train_x, data.test_x, data.images, backbone.module, "images")


def finetune(
    backbone: Backbone,
    master: dict[str, torch.Tensor],
    data: GroupData,
    trial: TrialSpec,
    metric: str,
    runtime: Runtime,
    *,
    feed: Feed | None = None,
    micro_batch: int | None = None,
) -> TrialResult:
    """Fine-tune from `master` with the trial's strategy and seed; score on the test split.

    This is the loop of README "Strategies and the training protocol": a fresh head drawn from
    the seed's generator, the model in train mode (stages that do not train in eval mode unless
    `bn: train`), one permutation of the training set per epoch from the same generator, the
    learning rate of each step from `Schedule`, cross-entropy, `torch.optim`.
    `micro_batch` splits each batch into gradient-accumulated chunks (same update, less memory):
    the answer to an out-of-memory error. The result's details keep the mean loss of every
    epoch and where it first stopped being finite (`_curves`).
    """
    start = time.perf_counter()
    feed = feed or image_feed(backbone, data)
    strategy = trial.strategy
    if strategy.augment != "none" and feed.kind != "images":
        raise CellError("augmented training needs the images, not cached activations")
    backbone.module.load_state_dict(master)  # on-device copy: also resets BatchNorm statistics
    trainable = set_trainable(backbone, strategy.mode, strategy.trainable_blocks, strategy.bn)

    generator = torch.Generator().manual_seed(trial.seed)
    torch.manual_seed(trial.seed)  # dropout and other stochastic layers
    weight, bias = init_head(data.num_classes, backbone.feature_dim, generator)
    head = nn.Linear(backbone.feature_dim, data.num_classes).to(runtime.device)
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias)
    optimizer = _optimizer([*trainable, *head.parameters()], strategy)
    augment = augmenter(strategy.augment, trial.seed, data.train_x.shape[-1])
    n = data.train_y.shape[0]
    batch = min(strategy.batch_size, n)
    micro = min(micro_batch or batch, batch)
    schedule = Schedule.of(strategy, math.ceil(n / batch))

    finite = torch.ones((), dtype=torch.bool, device=runtime.device)
    diverged = False
    step = 0
    loss_value = torch.zeros((), device=runtime.device)
    curves = LossCurves()
    for _ in range(strategy.train_epochs):
        order = torch.randperm(n, generator=generator).to(runtime.device)
        for begin in range(0, n, batch):
            idx = order[begin : begin + batch]
            inputs = feed.train[idx]
            if augment is not None:
                inputs = augment(inputs)  # drawn per batch, before any split into micro-batches
            for group in optimizer.param_groups:
                group["lr"] = schedule.lr(strategy.train_lr, step)
            optimizer.zero_grad(set_to_none=True)
            loss_value = torch.zeros((), device=runtime.device)
            for chunk, labels in zip(inputs.split(micro), idx.split(micro), strict=True):
                with runtime.autocast():
                    logits = head(feed.forward(feed.prepare(chunk)))
                loss = F.cross_entropy(
                    logits.float(), data.train_y[labels], label_smoothing=strategy.label_smoothing
                )
                share = labels.numel() / idx.numel()
                (loss * share).backward()
                loss_value = loss_value + loss.detach() * share
            finite &= torch.isfinite(loss_value)
            curves.step(loss_value, idx.numel() / n)
            optimizer.step()
            step += 1
        curves.end_epoch()
        if not bool(finite):  # one CPU-GPU sync per epoch, not per step
            diverged = True  # scored as it is, like any other outcome
            break
    score, predicted = _evaluate(backbone.module, head, feed, data, metric, runtime)
    set_trainable(backbone, "frozen", None)
    return TrialResult(
        key=trial.key,
        seed=trial.seed,
        status="diverged" if diverged else "ok",
        score=score,
        seconds=time.perf_counter() - start,
        details={
            "n_train": int(n),
            "n_test": int(data.test_y.shape[0]),
            "final_loss": float(loss_value),
            "inputs": feed.kind,
            **curves.read()[0],  # loss_curve, diverged_at
        },
        predictions=predictions_of(predicted, data.test_y, data.num_classes)[0],
    )


def _optimizer(params: list[nn.Parameter], strategy: StrategySpec) -> torch.optim.Optimizer:
    """torch.optim's fused kernels where the device has them: same update, one pass over memory.

    Measured on a 2-core CPU for ResNet-18 weights: AdamW 29 ms -> 4 ms a step, SGD 4.6 -> 2.7 ms.
    """
    for fused in (True, False):
        try:
            if strategy.optimizer == "sgd":
                return torch.optim.SGD(
                    params,
                    lr=strategy.train_lr,
                    momentum=strategy.momentum,
                    weight_decay=strategy.weight_decay,
                    fused=fused or None,
                )
            return torch.optim.AdamW(
                params, lr=strategy.train_lr, weight_decay=strategy.weight_decay, fused=fused or None
            )
        except (RuntimeError, TypeError, ValueError):
            continue  # no fused kernel for this device or dtype (or an older torch)
    raise AssertionError("unreachable")


def set_trainable(
    backbone: Backbone, mode: str, blocks: int | None, bn: str = "frozen"
) -> list[nn.Parameter]:
    """Set requires_grad and train/eval modes for `mode`; return the parameters that train.

    `linear` (and "frozen", between trials): everything in eval mode, nothing trains. `full`:
    everything trains, in train mode. `partial`: the last `blocks` stages train; with `bn`
    "frozen" only they are in train mode, with "train" the whole model is (as `model.train()`).
    """
    module = backbone.module
    for parameter in module.parameters():
        parameter.requires_grad_(False)
        parameter.grad = None  # a trial's gradients must not outlive it (memory, and the next trial)
    module.eval()
    if mode == "full":
        module.train()
        modules: list[nn.Module] = [module]
    elif mode == "partial":
        assert blocks is not None
        modules = backbone.trainable_modules(blocks)
        if bn == "train":
            module.train()  # every BatchNorm normalises with batch statistics and updates its own
        for m in modules:
            m.train()  # with bn "frozen" the other stages stay in eval mode: their statistics do not move
    else:
        return []
    params: list[nn.Parameter] = []
    seen: set[int] = set()
    for m in modules:
        for parameter in m.parameters():
            if id(parameter) not in seen and parameter.dtype.is_floating_point:
                seen.add(id(parameter))
                params.append(parameter)
    if backbone.scripted:
        # The identity map standing in for a TorchScript head must never train.
        head_params = {id(p) for p in submodule(module, backbone.head).parameters()}
        params = [p for p in params if id(p) not in head_params]
    for parameter in params:
        parameter.requires_grad_(True)
    return params


@torch.no_grad()
def _evaluate(
    module: nn.Module, head: nn.Module, feed: Feed, data: GroupData, metric: str, runtime: Runtime
) -> tuple[float, torch.Tensor]:
    """The test score and the predicted label of every test example."""
    module.eval()
    predictions = []
    for begin in range(0, data.test_y.shape[0], runtime.eval_batch):
        with runtime.autocast():
            logits = head(feed.forward(feed.prepare(feed.test[begin : begin + runtime.eval_batch])))
        predictions.append(torch.nan_to_num(logits.float(), nan=0.0).argmax(dim=1))
    predicted = torch.cat(predictions)
    return float(score_predictions(metric, predicted, data.test_y, data.num_classes)), predicted
