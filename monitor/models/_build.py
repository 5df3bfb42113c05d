"""Build a deployed model from its spec and turn it into a backbone that returns features.

Three kinds (DESIGN.md §3.2): `torchvision:<builder>` plus a state_dict file, `torchscript`
archives, and `python:<module>:<callable>` factories (with an optional state_dict). Nothing is
ever downloaded: builders are called with `weights=None` and the weights come from the file.
"""

from __future__ import annotations

import difflib
import importlib
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelError
from ..settings import ModelSpec
from ._surgery import drop_head, find_head, find_stages, submodule
from ._weights import fit_state_dict, read_state_dict

__all__ = ["Backbone", "load_backbone"]


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


def load_backbone(spec: ModelSpec, *, config_dir: Path | None = None) -> Backbone:
    """Build the model of `spec` on the CPU with its weights, drop its head, and check it runs."""
    if spec.kind == "torchvision":
        module = _torchvision(spec)
    elif spec.kind == "torchscript":
        module = _torchscript(spec)
    else:
        module = _python_factory(spec, config_dir)
    module.eval()
    scripted = isinstance(module, torch.jit.ScriptModule)
    head = find_head(module, spec.head, name=spec.name)
    head_top = head.split(".", 1)[0]
    siblings: list[nn.Module] = []
    if head_top != head:
        container = submodule(module, head_top)
        siblings = [
            m
            for n, m in container.named_children()
            if n != head.split(".")[1] and any(True for _ in m.parameters())
        ]
    dim = drop_head(module, head)
    stages = find_stages(module, head, spec.blocks, name=spec.name)
    # A final norm (DenseNet's norm5, Swin's norm) is not a stage of its own: `trainable_blocks:
    # 1` must train the last real stage. Such norms train with the head instead.
    while len(stages) > 1 and _norm_only(stages[-1][1]):
        siblings.insert(0, stages.pop()[1])
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    backbone = Backbone(spec.name, module, dim, head, stages, siblings, scripted)
    _check_forward(backbone, spec)
    return backbone


_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
_NORM_NAMES = {"BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "LayerNorm", "LayerNorm2d", "GroupNorm"}


def _norm_only(module: nn.Module) -> bool:
    """True when every parameter of `module` belongs to a normalisation layer."""
    holders = [m for m in module.modules() if any(True for _ in m.parameters(recurse=False))]
    return bool(holders) and all(
        isinstance(m, _NORMS) or getattr(m, "original_name", None) in _NORM_NAMES for m in holders
    )


def _torchvision(spec: ModelSpec) -> nn.Module:
    import torchvision

    builder = spec.architecture.split(":", 1)[1]
    known = torchvision.models.list_models()
    if builder not in known:
        close = difflib.get_close_matches(builder, known, n=1)
        hint = f"; did you mean {close[0]}?" if close else " (see torchvision.models.list_models())"
        raise ModelError(f"model {spec.name}: unknown torchvision builder {builder!r}{hint}")
    module: nn.Module = torchvision.models.get_model(builder, weights=None)
    assert spec.weights is not None  # enforced by the settings schema
    state = read_state_dict(spec.weights)
    head = find_head(module, spec.head, name=spec.name)
    fit_state_dict(module, state, path=spec.weights, architecture=spec.architecture, head=head)
    return module


def _torchscript(spec: ModelSpec) -> nn.Module:
    assert spec.weights is not None
    try:
        with warnings.catch_warnings():
            # TorchScript is deprecated upstream in favour of torch.export; archives still load.
            warnings.simplefilter("ignore", FutureWarning)
            module: nn.Module = torch.jit.load(str(spec.weights), map_location="cpu")
    except (RuntimeError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"model {spec.name}: {spec.weights} is not a TorchScript archive ({first}); export one with "
            "torch.jit.script(model).save(path), or use architecture torchvision:<builder> for a state_dict"
        ) from None
    return module


@contextmanager
def _importable_from(directory: Path | None) -> Iterator[None]:
    if directory is None:
        yield
        return
    entry = str(directory)
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        with suppress(ValueError):
            sys.path.remove(entry)


def _python_factory(spec: ModelSpec, config_dir: Path | None) -> nn.Module:
    _, module_name, attr = spec.architecture.split(":", 2)
    with _importable_from(config_dir):
        try:
            imported = importlib.import_module(module_name)
            # A long-lived worker must see the module's current code (a new model version).
            imported = importlib.reload(imported)
        except Exception as exc:  # any import-time error of user code
            raise ModelError(
                f"model {spec.name}: cannot import {module_name} ({type(exc).__name__}: {exc}); it must be "
                "importable from the config file's folder or the Python path"
            ) from None
    factory: Any = imported
    for part in attr.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise ModelError(f"model {spec.name}: module {module_name} has no attribute {attr!r}")
    if not callable(factory):
        raise ModelError(f"model {spec.name}: {module_name}:{attr} is not callable")
    try:
        # A factory without a weights file initialises randomly: make that the same in every
        # process, or the "same" model version would differ between runs and workers.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            module = factory()
    except Exception as exc:
        raise ModelError(
            f"model {spec.name}: {module_name}:{attr}() failed: {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(module, nn.Module):
        raise ModelError(
            f"model {spec.name}: {module_name}:{attr}() returned {type(module).__name__}, expected a torch.nn.Module"
        )
    if spec.weights is not None:
        state = read_state_dict(spec.weights)
        head = find_head(module, spec.head, name=spec.name)
        fit_state_dict(module, state, path=spec.weights, architecture=spec.architecture, head=head)
    return module


def _check_forward(backbone: Backbone, spec: ModelSpec) -> None:
    """One tiny forward pass, so that a model that cannot run at `image_size` fails here, clearly."""
    probe = torch.zeros(2, 3, spec.image_size, spec.image_size)
    try:
        with torch.no_grad():
            out = backbone.module(probe)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"model {spec.name} ({spec.architecture}) does not run on {spec.image_size}x{spec.image_size} "
            f"images: {first} (check image_size)"
        ) from None
    if not isinstance(out, torch.Tensor) or out.shape != (2, backbone.feature_dim):
        shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError(
            f"model {spec.name}: without its classifier `{backbone.head}` the model returns {shape}, "
            f"expected [batch, {backbone.feature_dim}]; set `head:` to the final classifier"
        )
