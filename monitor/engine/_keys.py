"""Trial keys: a hash of everything that determines one fine-tune's result.

A *trial* is one cell (model, task, dataset, strategy) trained with one seed, so a cell has one
trial key per seed; what DESIGN.md calls a "cell key" is, in the code, that set of trial keys
(`PlannedCell.trials`, `CellResult.keys`). A result whose key is stored is never recomputed. Names (of models, tasks, strategies) are not
part of the key — renaming a strategy in the config must not throw its results away — but every
field that changes what is computed is.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ..data import DECODE_VERSION
from ..settings import ModelSpec, StrategySpec, TaskSpec
from ..types import ModelVersion

__all__ = ["KNN_TEMPERATURE", "TRAINING_PROTOCOL_VERSION", "config_digest", "estimate_key", "trial_key"]

# Bump when the training or evaluation protocol changes meaning (schedule, init, metrics, data
# preparation): every key changes with it and the grid is recomputed once.
#   1: every fine-tune decayed its learning rate on a cosine to 0 (no `schedule` field)
#   2: the strategy's `schedule` (constant by default), `warmup_epochs`, `bn` and `augment`
TRAINING_PROTOCOL_VERSION = 2

# The kNN vote's temperature (DINO's k-NN evaluation, Caron et al. 2021): in every knn trial key.
KNN_TEMPERATURE = 0.07
# Bump when an estimator's computation changes: estimates are recomputed, trials are not.
ESTIMATOR_VERSION = 1


def _digest(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def model_fingerprint(model: ModelSpec, version: ModelVersion) -> dict[str, Any]:
    return {
        "architecture": model.architecture,
        "weights_digest": version.digest,
        "head": model.head,
        "blocks": model.blocks,
        "image_size": model.image_size,
        "normalize": [list(model.normalize.mean), list(model.normalize.std)],
    }


def task_fingerprint(task: TaskSpec) -> dict[str, Any]:
    return {
        "metric": task.metric,
        "train_per_class": task.train_per_class,
        "test_per_class": task.test_per_class,
        "test_fraction": task.test_fraction,
    }


def strategy_fingerprint(strategy: StrategySpec) -> dict[str, Any]:
    """The strategy's training fields; those without effect on it are left out, so that changing
    one of them (or its default) never invalidates stored results."""
    if strategy.mode == "knn":
        # Nothing trains: the neighbours and the vote are all there is (its temperature is fixed).
        return {"mode": "knn", "k": strategy.k, "temperature": KNN_TEMPERATURE}
    fields = strategy.model_dump(exclude={"name", "k"})
    if strategy.optimizer != "sgd":
        fields.pop("momentum")
    if strategy.schedule not in ("cosine", "linear"):
        fields.pop("min_lr")
    if strategy.schedule != "step":
        fields.pop("step_size")
        fields.pop("gamma")
    if strategy.mode != "partial":
        fields.pop("bn")
    return fields


def trial_key(
    model: ModelSpec,
    version: ModelVersion,
    task: TaskSpec,
    snapshot_digest: str,
    strategy: StrategySpec,
    seed: int,
) -> str:
    """The key of one fine-tune: protocol, model version, task, snapshot content, strategy, seed."""
    return _digest(
        {
            "protocol": TRAINING_PROTOCOL_VERSION,
            "data_protocol": DECODE_VERSION,  # how images are selected, decoded and resized
            "model": model_fingerprint(model, version),
            "task": task_fingerprint(task),
            "snapshot": snapshot_digest,
            "strategy": strategy_fingerprint(strategy),
            "seed": seed,
        }
    )


def estimate_key(
    model: ModelSpec, version: ModelVersion, task: TaskSpec, snapshot_digest: str, estimator: str
) -> str:
    """The key of one transferability estimate: it depends on no strategy and no seed."""
    return _digest(
        {
            "protocol": TRAINING_PROTOCOL_VERSION,
            "data_protocol": DECODE_VERSION,
            "model": model_fingerprint(model, version),
            "task": task_fingerprint(task),
            "snapshot": snapshot_digest,
            "estimator": estimator,
            "estimator_version": ESTIMATOR_VERSION,
        }
    )


def config_digest(payload: Any) -> str:
    """A short digest of a configuration document, stored with each run."""
    return _digest(payload)[:16]
