"""Build a deployed model from its spec and turn it into a backbone that returns features.

Five kinds (DESIGN.md §3.2): `torchvision:<builder>` plus a state_dict file, `torchscript`
archives, `python:<module>:<callable>` factories (with an optional state_dict), `timm:<name>`
plus a state_dict file, and `hf:<folder>` (a folder saved with `save_pretrained`, optionally with
a state_dict over it). Nothing is ever downloaded: builders are called with `weights=None` /
`pretrained=False` / `local_files_only=True`, and the weights come from files.

timm and transformers are optional (`persistence-monitor[timm]`, `[hf]`) and imported only when a
model of that kind is built (`_timm`, `_hf`). Where a library knows its model's layout, it is
asked instead of guessed: timm's `get_classifier()` names the head and its `feature_info` the
stage container; an hf: model has no classifier at all (`AutoModel`) and its stages are its
repeated layers.
"""

from __future__ import annotations

import difflib
import importlib
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelError
from ..settings import ModelSpec
from ._backbone import Backbone, Built, freeze, seeded, weights_file
from ._hf import hf_backbone
from ._surgery import (
    drop_head,
    find_head,
    find_stages,
    submodule,
    tail_after,
)
from ._timm import build_timm
from ._weights import fit_state_dict, read_state_dict

__all__ = ["Backbone", "load_backbone"]


def load_backbone(spec: ModelSpec, *, config_dir: Path | None = None) -> Backbone:
    """Build the model of `spec` on the CPU with its weights, drop its head, and check it runs."""
    if spec.kind == "hf":
        backbone = hf_backbone(spec)
    else:
        backbone = _classifier_backbone(spec, _build(spec, config_dir))
    _check_forward(backbone, spec)
    return backbone


def _build(spec: ModelSpec, config_dir: Path | None) -> Built:
    if spec.kind == "torchvision":
        return Built(_torchvision(spec))
    if spec.kind == "torchscript":
        return Built(_torchscript(spec))
    if spec.kind == "timm":
        return build_timm(spec)
    return Built(_python_factory(spec, config_dir))


def _classifier_backbone(spec: ModelSpec, built: Built) -> Backbone:
    """Replace the classifier with an identity and list the stages `partial` counts from the end."""
    module = built.module
    module.eval()
    scripted = isinstance(module, torch.jit.ScriptModule)
    head = find_head(module, spec.head or built.head, name=spec.name)
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
    stages = find_stages(module, head, spec.blocks or built.blocks, name=spec.name)
    if spec.blocks is None and built.blocks is not None:
        stages += tail_after(module, built.blocks, head)
    # A final norm (DenseNet's norm5, Swin's norm) is not a stage of its own: `trainable_blocks:
    # 1` must train the last real stage. Such norms train with the head instead.
    while len(stages) > 1 and _norm_only(stages[-1][1]):
        siblings.insert(0, stages.pop()[1])
    freeze(module)
    return Backbone(spec.name, module, dim, head, stages, siblings, scripted)


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
    path = weights_file(spec)
    state = read_state_dict(path)
    head = find_head(module, spec.head, name=spec.name)
    fit_state_dict(module, state, path=path, architecture=spec.architecture, head=head)
    return module


def _torchscript(spec: ModelSpec) -> nn.Module:
    path = weights_file(spec)
    try:
        with warnings.catch_warnings():
            # TorchScript is deprecated upstream in favour of torch.export; archives still load.
            warnings.simplefilter("ignore", FutureWarning)
            module: nn.Module = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"model {spec.name}: {path} is not a TorchScript archive ({first}); export one with "
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
        with seeded():
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
        path = weights_file(spec)
        state = read_state_dict(path)
        head = find_head(module, spec.head, name=spec.name)
        fit_state_dict(module, state, path=path, architecture=spec.architecture, head=head)
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
