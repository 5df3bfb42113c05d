"""Run one work group: load the model once, move the data to the device once, run every trial."""

from __future__ import annotations

import dataclasses
import gc
import logging
import math
import time
from collections import Counter
from collections.abc import Callable

import torch
from torch import nn

from ...models import Backbone, load_backbone
from ...types import TrialResult
from .._messages import Result, Started, ToParent, failed_result, failure_text
from .._options import EngineOptions
from .._plan import EstimateSpec, Job, TrialSpec, WorkGroup
from ._batched import finetune_batched
from ._chain import Chain, Suffix, find_chain
from ._device import Runtime, runtime_for
from ._estimators import estimate_with_stderr
from ._finetune import Feed, finetune, image_feed
from ._knn import knn_predict
from ._linear import extract_features, train_linear_heads
from ._metrics import predictions_of, score_predictions
from ._optim import schedule_of
from ._tensors import GroupData

__all__ = ["ModelCache", "release_memory", "run_group", "use_threads"]

log = logging.getLogger(__name__)
Emit = Callable[[ToParent], None]


class ModelCache:
    """Keeps the last loaded backbone: consecutive groups of one model skip the reload."""

    def __init__(self) -> None:
        self._key: tuple[str, str, str] | None = None
        self._backbone: Backbone | None = None
        self._chain: Chain | None = None
        self._compiled: nn.Module | None = None

    def get(self, group: WorkGroup, runtime: Runtime) -> tuple[Backbone, Chain | None]:
        key = (
            group.model.model_dump_json(),
            group.version.digest,
            runtime.device.type + str(runtime.device.index),
        )
        if self._key != key or self._backbone is None:
            self._backbone = self._chain = self._compiled = None  # free the previous model first
            backbone = load_backbone(group.model, config_dir=group.config_dir)
            backbone.module.to(runtime.device)
            if runtime.channels_last:
                backbone.module.to(memory_format=torch.channels_last)
            self._chain = find_chain(backbone, group.model.image_size)
            self._key, self._backbone = key, backbone
        return self._backbone, self._chain

    def compiled(self, backbone: Backbone) -> nn.Module:
        """The model under torch.compile: compiled once per model, recompiled per new input shape."""
        if self._compiled is None:
            self._compiled = torch.compile(backbone.module)  # type: ignore[assignment]
        assert self._compiled is not None
        return self._compiled


_DEFAULT_CACHE = ModelCache()


def run_group(
    group: WorkGroup,
    device: str,
    emit: Emit,
    *,
    cache: ModelCache | None = None,
    options: EngineOptions | None = None,
    should_stop: Callable[[], bool] | None = None,
    threads: Callable[[], int] | None = None,
) -> None:
    """Run every trial of `group`, emitting `Started(keys)` and `Result(TrialResult)` messages.

    Raises MonitorError (or anything else) only for group-level problems — the model cannot be
    loaded, the data cannot be read; a single trial's failure becomes a `failed` result.
    `threads()` (CPU workers sharing the cores) is the thread count to use from the next trial on.
    """
    runtime = runtime_for(device, options)
    cache = cache or _DEFAULT_CACHE
    # Where and how each result was computed, kept with it (neither is part of the trial key).
    emit = _stamping(emit, {"device": str(runtime.device), "precision": runtime.precision})
    backbone, chain = cache.get(group, runtime)
    data = GroupData.load(group.data, group.model.normalize, runtime)
    here = _Loaded(backbone, chain, data, group.task.metric, runtime, emit)

    def pace() -> None:
        if threads is not None and runtime.device.type == "cpu":
            use_threads(threads())

    # Linear probes train on features computed once, unless they augment: then every batch
    # needs the backbone, and they train like a fine-tune of nothing but the head.
    # knn cells and the transferability estimates use the same features, and train nothing.
    on_features = [t.strategy.mode == "linear" and t.strategy.augment == "none" for t in group.trials]
    linear = [t for t, shared in zip(group.trials, on_features, strict=True) if shared]
    knn = [t for t in group.trials if t.strategy.mode == "knn"]
    others = [
        t
        for t, shared in zip(group.trials, on_features, strict=True)
        if not shared and t.strategy.mode != "knn"
    ]
    feeds = _Feeds(here, cache)
    if linear or knn or group.estimates:
        pace()
        # With partial trials of a chain-shaped model, their cached activations are computed
        # first and the features from them: the frozen prefix runs once for both.
        _run_on_features(here, linear, knn, list(group.estimates), feeds.shared_activations(others))
    if others:
        _run_finetunes(here, others, feeds, pace=pace, should_stop=should_stop or (lambda: False))


@dataclasses.dataclass(frozen=True)
class _Loaded:
    """A work group ready to train: its model and data on the device, and where results go."""

    backbone: Backbone
    chain: Chain | None
    data: GroupData
    metric: str
    runtime: Runtime
    emit: Emit


def _run_on_features(
    here: _Loaded,
    linear: list[TrialSpec],
    knn: list[TrialSpec],
    estimates: list[EstimateSpec],
    activations: Feed | None = None,
) -> None:
    """Linear probes, knn cells and estimates on one pass of feature extraction (its time shared).

    `activations`: cached activations of the group's partial trials, to finish the features from
    (the rest of the chain in eval mode: what the whole model computes on the images).
    """
    data, runtime, emit = here.data, here.runtime, here.emit
    jobs: list[Job] = [*linear, *knn, *estimates]
    emit(Started(tuple(j.key for j in jobs)))
    try:
        start = time.perf_counter()
        feed = activations or image_feed(here.backbone, data)
        train_features, test_features = _features_with_retry(feed, runtime)
        shared = (time.perf_counter() - start) / len(jobs)
    except Exception as exc:
        for job in jobs:
            emit(Result(_failed(job, exc)))
        return
    try:
        results = train_linear_heads(
            train_features,
            data.train_y,
            test_features,
            data.test_y,
            data.num_classes,
            linear,
            here.metric,
            shared_seconds=shared * len(linear),
        )
    except Exception as exc:
        results = [_failed(t, exc) for t in linear]
    for result in results:
        emit(Result(result))
    for trial in knn:
        emit(Result(_knn_trial(here, trial, train_features, test_features, shared)))
    for job in estimates:
        emit(Result(_estimate(here, job, train_features, shared)))


def _knn_trial(
    here: _Loaded, trial: TrialSpec, train_features: torch.Tensor, test_features: torch.Tensor, shared: float
) -> TrialResult:
    data = here.data
    start = time.perf_counter()
    try:
        predicted = knn_predict(
            train_features, data.train_y, test_features, data.num_classes, trial.strategy.k
        )
        score = float(score_predictions(here.metric, predicted, data.test_y, data.num_classes))
    except Exception as exc:
        return _failed(trial, exc)
    return TrialResult(
        key=trial.key,
        seed=trial.seed,
        status="ok",
        score=score,
        seconds=time.perf_counter() - start + shared,
        details={
            "n_train": int(data.train_y.shape[0]),
            "n_test": int(data.test_y.shape[0]),
            "inputs": "features",
            "k": min(trial.strategy.k, int(data.train_y.shape[0])),
        },
        predictions=predictions_of(predicted, data.test_y, data.num_classes)[0],
    )


def _estimate(here: _Loaded, job: EstimateSpec, train_features: torch.Tensor, shared: float) -> TrialResult:
    """One transferability estimate, as a result whose score is the estimate (not in [0, 1])."""
    data = here.data
    start = time.perf_counter()
    try:
        value, stderr = estimate_with_stderr(job.estimator, train_features, data.train_y, data.num_classes)
        if not math.isfinite(value):
            raise ValueError(f"{job.estimator} is not finite ({value}) on these features")
    except Exception as exc:
        return _failed(job, exc)
    return TrialResult(
        key=job.key,
        seed=job.seed,
        status="ok",
        score=value,
        seconds=time.perf_counter() - start + shared,
        details={
            "estimator": job.estimator,
            **({"stderr": stderr} if stderr is not None else {}),
            "n_train": int(data.train_y.shape[0]),
            "dim": int(train_features.shape[1]),
        },
    )


class _Feeds:
    """What a group's fine-tunes train on, built once and kept for all of them (`Feed`).

    Images through the whole model; or, for `partial` trials of a chain-shaped model whose
    frozen prefix computes the same thing every time (in eval mode, on plain images), the
    activations cached at the input of their first trainable stage, one cache per depth.
    """

    def __init__(self, here: _Loaded, cache: ModelCache) -> None:
        self._here, self._cache = here, cache
        self._feeds: dict[int | None, Feed] = {}

    def _depth(self, trial: TrialSpec) -> int | None:
        s = trial.strategy
        cacheable = s.mode == "partial" and s.bn == "frozen" and s.augment == "none"
        return s.trainable_blocks if cacheable and self._here.chain is not None else None

    def of(self, trial: TrialSpec) -> Feed:
        return self._at(self._depth(trial))

    def _at(self, blocks: int | None) -> Feed:
        if blocks not in self._feeds:
            here = self._here
            feed = None
            if blocks and here.chain is not None:
                feed = activation_feed(here.backbone, here.chain, here.data, blocks, here.runtime)
            if feed is None:
                feed = image_feed(here.backbone, here.data)
                if here.runtime.compile:
                    feed.forward = self._cache.compiled(here.backbone)
            self._feeds[blocks] = feed
        return self._feeds[blocks]

    def shared_activations(self, trials: list[TrialSpec]) -> Feed | None:
        """The activation cache of the most common depth among `trials`, built now; None if none."""
        depths = Counter(d for t in trials if (d := self._depth(t)))
        if not depths:
            return None
        depth = depths.most_common(1)[0][0]
        try:
            feed = self._at(depth)
        except Exception as exc:  # the trials themselves will report it; the features go the plain way
            log.warning("cached activations for %d stages failed: %s: %s", depth, type(exc).__name__, exc)
            return None
        return feed if feed.kind == "activations" else None


def _run_finetunes(
    here: _Loaded,
    trials: list[TrialSpec],
    feeds: _Feeds,
    *,
    pace: Callable[[], None],
    should_stop: Callable[[], bool],
) -> None:
    """`partial`/`full` trials (and augmented probes): stacked per schedule where allowed, else looped.

    Each starts from the same on-device copy of the deployed weights, which the cached model
    gets back afterwards. Between trials `should_stop()` ends the group early (shutdown: the
    rest is left for the resumed run).
    """
    backbone, data, runtime, emit = here.backbone, here.data, here.runtime, here.emit
    metric = here.metric
    master = {k: v.detach().clone() for k, v in backbone.module.state_dict().items()}

    try:
        for stack in _stacks(trials, runtime):
            if should_stop():
                return
            pace()
            feed = feeds.of(stack[0])
            if len(stack) > 1:
                emit(Started(tuple(t.key for t in stack)))
                stacked = _run_batched(backbone, master, data, stack, metric, runtime, feed)
                if stacked is not None:
                    for result in stacked:
                        emit(Result(result))
                    continue
            for trial in stack:
                if should_stop():
                    return
                pace()
                emit(Started((trial.key,)))
                emit(Result(_run_finetune(backbone, master, data, trial, metric, runtime, feed)))
    finally:
        backbone.module.load_state_dict(master)  # the cached model must stay the deployed one


def release_memory() -> None:
    """Give back what a finished group held (its data, activations, optimizer state) to the device.

    A reused worker (a Ray actor, a local worker) runs many groups: without this, CUDA's caching
    allocator keeps the previous group's peak reserved. The cached model stays (`ModelCache`).
    """
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def use_threads(n: int) -> None:
    """Use `n` intra-op threads from now on (0: leave torch's choice)."""
    if n > 0 and torch.get_num_threads() != n:
        torch.set_num_threads(n)


def _stamping(emit: Emit, stamp: dict[str, str]) -> Emit:
    """`emit` that adds `stamp` to the details of every trial that ran (a path may set its own).

    On the CPU also `threads`: the intra-op threads the trial ran with (CPU workers share cores).
    """

    def stamped(message: ToParent) -> None:
        if isinstance(message, Result) and message.result.status != "failed":
            result = message.result
            here: dict[str, float | int | str] = dict(stamp)
            if stamp["device"] == "cpu":
                here["threads"] = torch.get_num_threads()
            message = Result(dataclasses.replace(result, details={**here, **result.details}))
        emit(message)

    return stamped


def _features_with_retry(feed: Feed, runtime: Runtime) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of the train and test inputs; out of memory halves the batch until it fits."""
    while True:
        try:
            return (
                extract_features(feed.forward, feed.prepare, feed.train, runtime),
                extract_features(feed.forward, feed.prepare, feed.test, runtime),
            )
        except torch.cuda.OutOfMemoryError:
            if runtime.eval_batch <= 1:
                raise
            if runtime.device.type == "cuda":
                torch.cuda.empty_cache()
            runtime = dataclasses.replace(runtime, eval_batch=runtime.eval_batch // 2)
            log.warning("feature extraction out of memory; retrying %d images at a time", runtime.eval_batch)


def _stacks(trials: list[TrialSpec], runtime: Runtime) -> list[list[TrialSpec]]:
    """Trials to train together: one stack per schedule when batching, else one trial each.

    Augmented linear probes always train one at a time (their backbone has nothing to stack).
    """
    if not runtime.batch_finetunes:
        return [[t] for t in trials]
    stacks: dict[tuple[object, ...], list[TrialSpec]] = {}
    for trial in trials:
        key = schedule_of(trial) if trial.strategy.mode != "linear" else (trial.key,)
        stacks.setdefault(key, []).append(trial)
    return list(stacks.values())


def _run_batched(
    backbone: Backbone,
    master: dict[str, torch.Tensor],
    data: GroupData,
    trials: list[TrialSpec],
    metric: str,
    runtime: Runtime,
    feed: Feed,
) -> list[TrialResult] | None:
    """The stacked fine-tune, or None (after a warning) when it cannot run: the loop takes over."""
    try:
        return finetune_batched(backbone, master, data, trials, metric, runtime, feed=feed)
    except Exception as exc:  # an op without a vmap rule, out of memory for H copies, ...
        if runtime.device.type == "cuda":
            torch.cuda.empty_cache()
        log.warning(
            "%d stacked fine-tunes fell back to one at a time: %s: %s", len(trials), type(exc).__name__, exc
        )
        return None


# Cached activations may take this much memory at most; beyond it, partial trials run the plain way.
_ACTIVATION_BUDGET = {"cpu": 2 * 2**30, "cuda": 8 * 2**30}


@torch.no_grad()
def activation_feed(
    backbone: Backbone, chain: Chain, data: GroupData, blocks: int, runtime: Runtime
) -> Feed | None:
    """Activations at the input of the first of the last `blocks` stages, for train and test."""
    if blocks > len(backbone.stages):
        return None  # the trial itself reports the problem
    start = chain.index_of(backbone.stages[-blocks][1])
    if start is None or start == 0:
        return None
    backbone.module.eval()

    def prefix(images: torch.Tensor) -> torch.Tensor:
        chunks = []
        for begin in range(0, images.shape[0], runtime.eval_batch):
            with runtime.autocast():
                chunks.append(chain.run(data.images(images[begin : begin + runtime.eval_batch]), 0, start))
        return torch.cat(chunks)

    one = prefix(data.train_x[:1])
    needed = one.numel() * one.element_size() * (data.train_x.shape[0] + data.test_x.shape[0])
    if needed > _ACTIVATION_BUDGET.get(runtime.device.type, _ACTIVATION_BUDGET["cpu"]):
        log.info("partial: %d MiB of activations is over budget; training the plain way", needed >> 20)
        return None

    return Feed(prefix(data.train_x), prefix(data.test_x), _identity, Suffix(chain, start), "activations")


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _run_finetune(
    backbone: Backbone,
    master: dict[str, torch.Tensor],
    data: GroupData,
    trial: TrialSpec,
    metric: str,
    runtime: Runtime,
    feed: Feed,
) -> TrialResult:
    micro: int | None = None
    while True:
        try:
            return finetune(backbone, master, data, trial, metric, runtime, feed=feed, micro_batch=micro)
        except torch.cuda.OutOfMemoryError as exc:  # (torch.OutOfMemoryError only from 2.5)
            current = micro or trial.strategy.batch_size
            if runtime.device.type == "cuda":
                torch.cuda.empty_cache()
            if current <= 1:
                return _failed(trial, exc)
            micro = current // 2
            log.warning("%s: out of memory, retrying with micro-batches of %d", trial.cell, micro)
        except Exception as exc:
            return _failed(trial, exc)


def _failed(trial: Job, exc: BaseException) -> TrialResult:
    reason = failure_text(exc)
    log.warning("%s seed %d failed: %s", trial.cell, trial.seed, reason)
    return failed_result(trial, reason)
