"""The torch side of the engine, imported only inside worker processes (and by tests/benchmarks)."""

from ._device import Runtime, resolve_devices, runtime_for
from ._finetune import finetune
from ._group import ModelCache, run_group
from ._linear import extract_features, train_linear_heads
from ._metrics import METRICS, score_predictions
from ._optim import BatchedAdamW, BatchedSGD, cosine_factor, init_head
from ._tensors import GroupData
from ._worker import serve

__all__ = [
    "METRICS",
    "BatchedAdamW",
    "BatchedSGD",
    "GroupData",
    "ModelCache",
    "Runtime",
    "cosine_factor",
    "extract_features",
    "finetune",
    "init_head",
    "resolve_devices",
    "run_group",
    "runtime_for",
    "score_predictions",
    "serve",
    "train_linear_heads",
]
