"""Run one work group: load the model once, move the data to the device once, run every trial."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import torch

from ...errors import MonitorError
from ...models import Backbone, load_backbone
from ...types import TrialResult
from .._plan import TrialSpec, WorkGroup
from ._device import Runtime, runtime_for
from ._finetune import finetune
from ._linear import extract_features, train_linear_heads
from ._tensors import GroupData

__all__ = ["ModelCache", "run_group"]

log = logging.getLogger(__name__)
Emit = Callable[[tuple[Any, ...]], None]


class ModelCache:
    """Keeps the last loaded backbone: consecutive groups of one model skip the reload."""

    def __init__(self) -> None:
        self._key: tuple[str, str, str] | None = None
        self._backbone: Backbone | None = None

    def get(self, group: WorkGroup, runtime: Runtime) -> Backbone:
        key = (
            group.model.model_dump_json(),
            group.version.digest,
            runtime.device.type + str(runtime.device.index),
        )
        if self._key != key or self._backbone is None:
            self._backbone = None  # free the previous model before loading the next
            backbone = load_backbone(group.model, config_dir=group.config_dir)
            backbone.module.to(runtime.device)
            if runtime.channels_last:
                backbone.module.to(memory_format=torch.channels_last)
            self._key, self._backbone = key, backbone
        return self._backbone


_DEFAULT_CACHE = ModelCache()


def run_group(group: WorkGroup, device: str, emit: Emit, *, cache: ModelCache | None = None) -> None:
    """Run every trial of `group`, emitting ("started", keys) and ("result", TrialResult) messages.

    Raises MonitorError (or anything else) only for group-level problems — the model cannot be
    loaded, the data cannot be read; a single trial's failure becomes a `failed` result.
    """
    runtime = runtime_for(device)
    backbone = (cache or _DEFAULT_CACHE).get(group, runtime)
    data = GroupData.load(group.data, group.model.normalize, runtime)
    metric = group.task.metric
    linear = [t for t in group.trials if t.strategy.mode == "linear"]
    others = [t for t in group.trials if t.strategy.mode != "linear"]

    if linear:
        emit(("started", tuple(t.key for t in linear)))
        try:
            start = time.perf_counter()
            train_features = extract_features(backbone.module, data, data.train_x, runtime)
            test_features = extract_features(backbone.module, data, data.test_x, runtime)
            shared = time.perf_counter() - start
            results = train_linear_heads(
                train_features,
                data.train_y,
                test_features,
                data.test_y,
                data.num_classes,
                linear,
                metric,
                shared_seconds=shared,
            )
        except Exception as exc:
            results = [_failed(t, exc) for t in linear]
        for result in results:
            emit(("result", result))

    if others:
        master = {k: v.detach().clone() for k, v in backbone.module.state_dict().items()}
        try:
            for trial in others:
                emit(("started", (trial.key,)))
                emit(("result", _run_finetune(backbone, master, data, trial, metric, runtime)))
        finally:
            backbone.module.load_state_dict(master)  # the cached model must stay the deployed one


def _run_finetune(
    backbone: Backbone,
    master: dict[str, torch.Tensor],
    data: GroupData,
    trial: TrialSpec,
    metric: str,
    runtime: Runtime,
) -> TrialResult:
    micro: int | None = None
    while True:
        try:
            return finetune(backbone, master, data, trial, metric, runtime, micro_batch=micro)
        except torch.OutOfMemoryError as exc:
            current = micro or trial.strategy.batch_size
            if runtime.device.type == "cuda":
                torch.cuda.empty_cache()
            if current <= 1:
                return _failed(trial, exc)
            micro = current // 2
            log.warning("%s: out of memory, retrying with micro-batches of %d", trial.cell, micro)
        except Exception as exc:
            return _failed(trial, exc)


def _failed(trial: TrialSpec, exc: BaseException) -> TrialResult:
    if isinstance(exc, MonitorError):
        message = str(exc)
    else:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        message = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    log.warning("%s seed %d failed: %s", trial.cell, trial.seed, message)
    return TrialResult(
        key=trial.key, seed=trial.seed, status="failed", score=None, seconds=0.0, error=message
    )
