"""Several `partial`/`full` fine-tunes of one model trained at once with `torch.func.vmap`.

Trials that share a schedule (mode, trainable stages, optimizer, epochs, batch size, momentum,
label smoothing, lr schedule, warm-up, BatchNorm mode, augmentation) and differ only by seed,
learning rate or weight decay are stacked: H copies of
the trainable parameters (and of the BatchNorm statistics they update), one forward/backward for
all of them. On a GPU a small model leaves most of the device idle; stacking fills it. Every
model still gets exactly its own initialisation, data order, augmentation and updates (a test
checks batched against looped training).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value, vmap
from torch.utils.hooks import RemovableHandle

from ...models import Backbone
from ...types import TrialResult
from .._plan import TrialSpec
from ._augment import augmenter
from ._curves import LossCurves
from ._device import Runtime
from ._finetune import Feed, set_trainable
from ._metrics import predictions_of, score_predictions
from ._optim import init_head, stacked_optimizer
from ._schedule import Schedule
from ._tensors import GroupData

__all__ = ["finetune_batched"]


def finetune_batched(
    backbone: Backbone,
    master: dict[str, torch.Tensor],
    data: GroupData,
    trials: Sequence[TrialSpec],
    metric: str,
    runtime: Runtime,
    *,
    feed: Feed,
) -> list[TrialResult]:
    """Train `trials` (one schedule) as one stack of models; one result per trial, in order."""
    start = time.perf_counter()
    if runtime.device.type == "cpu" and runtime.autocast_dtype is not None:
        # On the CPU, autocast is applied only to some ops under vmap (matmul decomposes past
        # it), so a "bf16" stack would train in a mix of precisions: stacks train in fp32 there.
        runtime = dataclasses.replace(runtime, autocast_dtype=None)
    strategy = trials[0].strategy
    backbone.module.load_state_dict(master)
    trainable = set_trainable(backbone, strategy.mode, strategy.trainable_blocks, strategy.bn)
    generators = [torch.Generator().manual_seed(t.seed) for t in trials]
    stack = _Stack.of(feed.forward, trainable, generators, data.num_classes, backbone.feature_dim, runtime)
    hooks = (
        _float_batchnorm_inputs(stack.net, runtime.autocast_dtype)
        if runtime.autocast_dtype is not None
        else []
    )
    try:
        ever_bad, loss, curves = _train(stack, trials, generators, feed, data, runtime)
        scores, predicted = _evaluate(stack, feed, data, metric, runtime)
    finally:
        for hook in hooks:
            hook.remove()
        set_trainable(backbone, "frozen", None)
    each = (time.perf_counter() - start) / len(trials)
    predictions = predictions_of(predicted, data.test_y, data.num_classes)
    diverged = ever_bad.tolist()
    losses = loss.detach().float().tolist()
    curve = curves.read()
    return [
        TrialResult(
            key=t.key,
            seed=t.seed,
            status="diverged" if diverged[h] else "ok",
            score=scores[h],
            seconds=each,
            details={
                "n_train": int(data.train_y.shape[0]),
                "n_test": int(data.test_y.shape[0]),
                "final_loss": losses[h],
                "inputs": feed.kind,
                "models_batched": len(trials),
                "precision": runtime.precision,  # (fp32 stacks on CPUs)
                **curve[h],  # loss_curve, diverged_at
            },
            predictions=predictions[h],
        )
        for h, t in enumerate(trials)
    ]


@dataclasses.dataclass
class _Stack:
    """H models as one: H copies of what trains, one copy of what does not, H fresh heads."""

    net: nn.Module
    stacked: dict[str, torch.Tensor]  # trainable parameters, [H, ...]
    shared: dict[str, torch.Tensor]  # frozen parameters and the buffers nothing updates
    moving: dict[str, torch.Tensor]  # buffers of modules in train mode (BatchNorm statistics), [H, ...]
    head_w: torch.Tensor  # [H, classes, features]
    head_b: torch.Tensor  # [H, classes]

    @classmethod
    def of(
        cls,
        net: nn.Module,
        trainable: list[nn.Parameter],
        generators: list[torch.Generator],
        num_classes: int,
        feature_dim: int,
        runtime: Runtime,
    ) -> _Stack:
        heads = len(generators)
        trainable_ids = {id(p) for p in trainable}
        stacked = {
            name: p.detach().unsqueeze(0).repeat(heads, *([1] * p.ndim)).requires_grad_(True)
            for name, p in net.named_parameters()
            if id(p) in trainable_ids
        }
        shared = {name: p.detach() for name, p in net.named_parameters() if id(p) not in trainable_ids}
        # Buffers of modules that train (BatchNorm statistics) move per model; the others are shared.
        moving = {
            f"{prefix}.{name}" if prefix else name: b.detach()
            .unsqueeze(0)
            .repeat(heads, *([1] * b.ndim))
            .clone()
            for prefix, module in net.named_modules()
            if module.training
            for name, b in module.named_buffers(recurse=False)
            if b.dtype.is_floating_point or name == "num_batches_tracked"
        }
        shared.update({n: b for n, b in net.named_buffers() if n not in moving})
        # each model's head from its own seed's generator, drawn first (as in the loop)
        inits = [init_head(num_classes, feature_dim, g) for g in generators]
        head_w = torch.stack([w for w, _ in inits]).to(runtime.device).requires_grad_(True)
        head_b = torch.stack([b for _, b in inits]).to(runtime.device).requires_grad_(True)
        return cls(net, stacked, shared, moving, head_w, head_b)


def _train(
    stack: _Stack,
    trials: Sequence[TrialSpec],
    generators: list[torch.Generator],
    feed: Feed,
    data: GroupData,
    runtime: Runtime,
) -> tuple[torch.Tensor, torch.Tensor, LossCurves]:
    """The training loop of every model at once: ever non-finite and last loss per model, curves."""
    strategy = trials[0].strategy
    heads, device, net, shared = len(trials), runtime.device, stack.net, stack.shared
    params = [*stack.stacked.values(), stack.head_w, stack.head_b]
    optimizer, lr = stacked_optimizer(params, trials, device)
    augments = [augmenter(strategy.augment, t.seed, data.train_x.shape[-1]) for t in trials]

    def loss_of(tp: dict, hw: torch.Tensor, hb: torch.Tensor, tb: dict, x: torch.Tensor, y: torch.Tensor):
        with runtime.autocast():
            features = functional_call(net, {**shared, **tp, **tb}, (x,))
            logits = features.float() @ hw.T + hb
        return F.cross_entropy(logits, y, label_smoothing=strategy.label_smoothing)

    step_fn = vmap(
        grad_and_value(loss_of, argnums=(0, 1, 2)), in_dims=(0, 0, 0, 0, 0, 0), randomness="different"
    )
    n = data.train_y.shape[0]
    batch = min(strategy.batch_size, n)
    schedule = Schedule.of(strategy, math.ceil(n / batch))
    active = torch.ones(heads, dtype=torch.bool, device=device)
    ever_bad = torch.zeros(heads, dtype=torch.bool, device=device)
    step = 0
    loss = torch.zeros(heads, device=device)
    curves = LossCurves()
    for _ in range(strategy.train_epochs):
        order = torch.stack([torch.randperm(n, generator=g) for g in generators]).to(device)
        for begin in range(0, n, batch):
            idx = order[:, begin : begin + batch]  # [H, B]
            inputs = feed.train[idx.reshape(-1)]
            if augments[0] is not None:  # each model's batch with its own draws
                parts = inputs.split(idx.shape[1])
                inputs = torch.cat([a(part) for a, part in zip(augments, parts, strict=True)])  # type: ignore[misc]
            # .float(): activations may be cached in bf16, and under vmap autocast does not
            # cast an unbatched bf16 input for batched fp32 weights (exact: bf16 -> fp32 -> bf16)
            x = feed.prepare(inputs).float()
            x = x.reshape(heads, -1, *x.shape[1:])
            (grads, loss) = step_fn(
                stack.stacked, stack.head_w, stack.head_b, stack.moving, x, data.train_y[idx]
            )
            (g_params, g_w, g_b) = grads
            for name, p in stack.stacked.items():
                p.grad = g_params[name]
            stack.head_w.grad, stack.head_b.grad = g_w, g_b
            finite = torch.isfinite(loss)
            ever_bad |= ~finite
            active &= finite
            curves.step(loss, idx.shape[1] / n)
            optimizer.step(schedule.lr(lr, step), active)
            step += 1
        curves.end_epoch()
    return ever_bad, loss, curves


def _float_batchnorm_inputs(net: nn.Module, dtype: torch.dtype) -> list[RemovableHandle]:
    """Under autocast, BatchNorm gets an fp32 input and hands back `dtype`, as in the loop.

    Plain autocast gives BatchNorm a bf16 input with fp32 statistics, which the eager kernels
    accept; vmap's batching rule for per-model statistics does not ("expected scalar type
    BFloat16 but found Float"). BatchNorm computes in fp32 either way; casting its output back
    keeps the activations that follow (and those saved for backward) in bf16, like the loop's.
    """

    def to_float(module: nn.Module, args: tuple[object, ...]) -> tuple[object, ...]:
        return tuple(a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)

    def back(module: nn.Module, args: tuple[object, ...], output: torch.Tensor) -> torch.Tensor:
        return output.to(dtype)

    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    return [m.register_forward_pre_hook(to_float) for m in norms] + [
        m.register_forward_hook(back) for m in norms
    ]


@torch.no_grad()
def _evaluate(
    stack: _Stack, feed: Feed, data: GroupData, metric: str, runtime: Runtime
) -> tuple[list[float], torch.Tensor]:
    """Every model's test score, and its predicted label of every test example ([H, N])."""
    net, shared = stack.net, stack.shared
    net.eval()

    def logits_of(tp: dict, tb: dict, hw: torch.Tensor, hb: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        with runtime.autocast():
            features = functional_call(net, {**shared, **tp, **tb}, (x,))
        return features.float() @ hw.T + hb

    run = vmap(logits_of, in_dims=(0, 0, 0, 0, None))
    trained = {k: v.detach() for k, v in stack.stacked.items()}
    predictions = []
    for begin in range(0, data.test_y.shape[0], runtime.eval_batch):
        x = feed.prepare(feed.test[begin : begin + runtime.eval_batch]).float()
        logits = run(trained, stack.moving, stack.head_w.detach(), stack.head_b.detach(), x)
        predictions.append(torch.nan_to_num(logits, nan=0.0).argmax(dim=2))
    predicted = torch.cat(predictions, dim=1)
    scores = score_predictions(metric, predicted, data.test_y, data.num_classes)
    return [float(s) for s in scores], predicted
