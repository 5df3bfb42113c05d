"""`partial` and `full` fine-tunes: the backbone (or its last stages) trains with a fresh head.

Every trial starts from the master weights kept on the device (a copy, not a reload and not a
deepcopy), so a work group loads its model once whatever the number of trials.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from ...models import Backbone
from ...types import TrialResult
from .._plan import TrialSpec
from ._device import Runtime
from ._metrics import score_predictions
from ._optim import cosine_factor, init_head
from ._tensors import GroupData

__all__ = ["finetune"]


def finetune(
    backbone: Backbone,
    master: dict[str, torch.Tensor],
    data: GroupData,
    trial: TrialSpec,
    metric: str,
    runtime: Runtime,
    *,
    micro_batch: int | None = None,
) -> TrialResult:
    """Fine-tune from `master` with the trial's strategy and seed; score on the test split.

    `micro_batch` splits each batch into gradient-accumulated chunks (same update, less memory):
    the executor's answer to an out-of-memory error.
    """
    start = time.perf_counter()
    strategy = trial.strategy
    module = backbone.module
    module.load_state_dict(master)  # on-device copy: also resets BatchNorm statistics
    trainable = _set_trainable(backbone, strategy.mode, strategy.trainable_blocks)

    generator = torch.Generator().manual_seed(trial.seed)
    torch.manual_seed(trial.seed)  # dropout and other stochastic layers
    weight, bias = init_head(data.num_classes, backbone.feature_dim, generator)
    head = nn.Linear(backbone.feature_dim, data.num_classes).to(runtime.device)
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias)
    params = [*trainable, *head.parameters()]
    optimizer: torch.optim.Optimizer
    if strategy.optimizer == "sgd":
        optimizer = torch.optim.SGD(
            params, lr=strategy.lr, momentum=strategy.momentum, weight_decay=strategy.weight_decay
        )
    else:
        optimizer = torch.optim.AdamW(params, lr=strategy.lr, weight_decay=strategy.weight_decay)
    n = data.train_y.shape[0]
    batch = min(strategy.batch_size, n)
    micro = min(micro_batch or batch, batch)
    total = strategy.epochs * math.ceil(n / batch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_factor(s, total))

    finite = torch.ones((), dtype=torch.bool, device=runtime.device)
    diverged = False
    loss_value = torch.zeros((), device=runtime.device)
    for _ in range(strategy.epochs):
        order = torch.randperm(n, generator=generator).to(runtime.device)
        for begin in range(0, n, batch):
            idx = order[begin : begin + batch]
            optimizer.zero_grad(set_to_none=True)
            loss_value = torch.zeros((), device=runtime.device)
            for chunk in idx.split(micro):
                with runtime.autocast():
                    logits = head(module(data.images(data.train_x[chunk])))
                loss = F.cross_entropy(
                    logits.float(), data.train_y[chunk], label_smoothing=strategy.label_smoothing
                )
                (loss * (chunk.numel() / idx.numel())).backward()
                loss_value = loss_value + loss.detach() * (chunk.numel() / idx.numel())
            finite &= torch.isfinite(loss_value)
            optimizer.step()
            scheduler.step()
        if not bool(finite):  # one CPU-GPU sync per epoch, not per step
            diverged = True
            break
    score = _evaluate(module, head, data, metric, runtime)
    _set_trainable(backbone, "frozen", None)
    return TrialResult(
        key=trial.key,
        seed=trial.seed,
        status="diverged" if diverged else "ok",
        score=score,
        seconds=time.perf_counter() - start,
        details={"n_train": int(n), "n_test": int(data.test_y.shape[0]), "final_loss": float(loss_value)},
    )


def _set_trainable(backbone: Backbone, mode: str, blocks: int | None) -> list[nn.Parameter]:
    """Set requires_grad and train/eval modes for `mode`; return the parameters that train."""
    module = backbone.module
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    module.eval()
    if mode == "full":
        module.train()
        modules: list[nn.Module] = [module]
    elif mode == "partial":
        assert blocks is not None
        modules = backbone.trainable_modules(blocks)
        for m in modules:
            m.train()  # frozen stages stay in eval mode: their BatchNorm statistics do not move
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
        head_params = {id(p) for p in _scripted_head_params(backbone)}
        params = [p for p in params if id(p) not in head_params]
    for parameter in params:
        parameter.requires_grad_(True)
    return params


def _scripted_head_params(backbone: Backbone) -> list[nn.Parameter]:
    from ...models import submodule

    return list(submodule(backbone.module, backbone.head).parameters())


@torch.no_grad()
def _evaluate(module: nn.Module, head: nn.Module, data: GroupData, metric: str, runtime: Runtime) -> float:
    module.eval()
    predictions = []
    for begin in range(0, data.test_y.shape[0], runtime.eval_batch):
        with runtime.autocast():
            logits = head(module(data.images(data.test_x[begin : begin + runtime.eval_batch])))
        predictions.append(torch.nan_to_num(logits.float(), nan=0.0).argmax(dim=1))
    return float(score_predictions(metric, torch.cat(predictions), data.test_y, data.num_classes))
