"""The torch side of the engine, imported only inside worker processes (and by tests/benchmarks)."""

from ._augment import Augmenter, augmenter
from ._chain import Chain, find_chain
from ._device import Runtime, resolve_devices, runtime_for
from ._finetune import Feed, finetune, image_feed, set_trainable
from ._group import ModelCache, activation_feed, release_memory, run_group, use_threads
from ._linear import extract_features, train_linear_heads
from ._metrics import METRICS, score_predictions
from ._optim import BatchedAdamW, BatchedSGD, init_head
from ._schedule import Schedule
from ._tensors import GroupData
from ._worker import serve

__all__ = [
    "METRICS",
    "Augmenter",
    "BatchedAdamW",
    "BatchedSGD",
    "Chain",
    "Feed",
    "GroupData",
    "ModelCache",
    "Runtime",
    "Schedule",
    "activation_feed",
    "augmenter",
    "extract_features",
    "find_chain",
    "finetune",
    "image_feed",
    "init_head",
    "release_memory",
    "resolve_devices",
    "run_group",
    "runtime_for",
    "score_predictions",
    "serve",
    "set_trainable",
    "train_linear_heads",
    "use_threads",
]
