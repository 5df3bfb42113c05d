"""What every model builder shares: the `Backbone` it returns, the `Built` model before surgery, and
small helpers (optional imports, seeded initialisation, the local weights file)."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelError
from ..settings import ModelSpec

__all__ = ["Backbone", "Built", "freeze", "import_extra", "seeded", "weights_file"]


@dataclass
class Backbone:
    """A model whose forward returns the classifier's input features."""

    name: str
    module: nn.Module
    feature_dim: int
    head: str  # attribute path of the (removed) classifier
    stages: list[tuple[str, nn.Module]]  # forward order; `partial` trains the last k
    head_siblings: list[nn.Module]  # parameter-holding modules in the head's container (e.g. a final norm)
    scripted: bool

    def trainable_modules(self, trainable_blocks: int) -> list[nn.Module]:
        """Modules a `partial` fine-tune trains: the last stages plus the head's siblings."""
        if trainable_blocks > len(self.stages):
            raise ModelError(
                f"model {self.name} has {len(self.stages)} stages "
                f"({', '.join(n for n, _ in self.stages)}), a strategy asks to train {trainable_blocks}: "
                "lower trainable_blocks or use mode: full"
            )
        return [m for _, m in self.stages[-trainable_blocks:]] + self.head_siblings


@dataclass
class Built:
    """A model with its weights, before surgery, and what its library says about its layout."""

    module: nn.Module
    head: str | None = None  # the classifier's path as the library names it (None: the last Linear)
    blocks: str | None = None  # the container of its stages as the library names it (None: found)


def freeze(module: nn.Module) -> None:
    # Nothing trains until a strategy says so (`set_trainable`).
    for parameter in module.parameters():
        parameter.requires_grad_(False)


def import_extra(module: str, extra: str, spec: ModelSpec) -> Any:
    """Import an optional library, or say which extra brings it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ModelError(
            f"model {spec.name}: {spec.architecture.split(':', 1)[0]}: models need {module}, which is not "
            f"installed here: pip install 'persistence-monitor[{extra}]'"
        ) from None


@contextmanager
def seeded() -> Iterator[None]:
    """Initialise any freshly made parameters the same way in every process (one version, one model)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield


def weights_file(spec: ModelSpec) -> Path:
    """The local weights file: remote weights (s3://, models:/, …) are fetched before a worker runs."""
    path = spec.weights_path
    if path is None:
        raise ModelError(
            f"model {spec.name}: weights {spec.weights!r} were not fetched to a local file before "
            "training (a bug: the pipeline resolves every weights location first)"
        )
    return path
