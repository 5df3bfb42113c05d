"""Find a model's classifier and stages, and turn the model into a feature extractor.

Every fine-tune replaces the classifier ("head") with a fresh linear layer sized for the task, so
the deployed model is used as `backbone(x) -> features`. `partial` fine-tunes train the last
stages of the backbone, counted from the end of the list `find_stages` returns.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ModelError

__all__ = [
    "drop_head",
    "find_head",
    "find_stages",
    "head_in_features",
    "largest_module_list",
    "module_path",
    "submodule",
    "tail_after",
]

_CONTAINERS = (nn.Sequential, nn.ModuleList)


def submodule(model: nn.Module, path: str) -> nn.Module:
    """`submodule(model, path)`, which TorchScript modules do not support; AttributeError if absent."""
    module = model
    for part in path.split(".") if path else []:
        child = getattr(module, part, None)
        if not isinstance(child, nn.Module):
            raise AttributeError(path)
        module = child
    return module


def _is_linear(module: nn.Module) -> bool:
    # Scripted modules keep the name of the class they were compiled from.
    return isinstance(module, nn.Linear) or getattr(module, "original_name", None) == "Linear"


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def find_head(model: nn.Module, head: str | None, *, name: str) -> str:
    """Return the attribute path of the classifier: `head` if given, else the model's last Linear."""
    if head is not None:
        try:
            module = submodule(model, head)
        except AttributeError:
            raise ModelError(
                f"model {name}: `head: {head}` names no submodule; top-level modules are "
                f"{', '.join(n for n, _ in model.named_children())}"
            ) from None
        if not _is_linear(module):
            kind = getattr(module, "original_name", type(module).__name__)
            raise ModelError(f"model {name}: `head: {head}` is a {kind}, expected a Linear classifier")
        return head
    last = None
    for path, module in model.named_modules():
        if path and _is_linear(module):
            last = path
    if last is None:
        raise ModelError(
            f"model {name}: found no Linear classifier to replace; set `head:` to the attribute path "
            "of the classifier (e.g. fc or classifier.1)"
        )
    return last


def head_in_features(model: nn.Module, head: str) -> int:
    weight = submodule(model, head).weight
    assert isinstance(weight, torch.Tensor)
    return int(weight.shape[1])


def drop_head(model: nn.Module, head: str) -> int:
    """Make `model(x)` return the classifier's input features; return their dimension.

    Eager modules get an `nn.Identity` in the head's place. A TorchScript module cannot swap
    submodules, so its head is turned into an exact identity map instead (weight = I, bias = 0):
    same output, and its (frozen) parameters never train.
    """
    dim = head_in_features(model, head)
    parent_name, _, leaf = head.rpartition(".")
    parent = submodule(model, parent_name) if parent_name else model
    if isinstance(model, torch.jit.ScriptModule):
        module = submodule(parent, leaf)
        ref = module.weight
        assert isinstance(ref, torch.Tensor)
        with torch.no_grad():
            module.weight = nn.Parameter(
                torch.eye(dim, dtype=ref.dtype, device=ref.device), requires_grad=False
            )
            if getattr(module, "bias", None) is not None:
                module.bias = nn.Parameter(
                    torch.zeros(dim, dtype=ref.dtype, device=ref.device), requires_grad=False
                )
    else:
        setattr(parent, leaf, nn.Identity())
    return dim


def find_stages(model: nn.Module, head: str, blocks: str | None, *, name: str) -> list[tuple[str, nn.Module]]:
    """The backbone's stages in forward order; `partial` trains the last `trainable_blocks` of them.

    With `blocks:` set, the children of that container are the stages. Otherwise: the
    parameter-holding top-level children other than the head's own container (ResNet: conv1,
    bn1, layer1..layer4); a model that is essentially one container (`features` of MobileNet,
    EfficientNet, ConvNeXt, VGG) is expanded one level so that its stages become the units.
    """
    if blocks is not None:
        try:
            container = submodule(model, blocks)
        except AttributeError:
            raise ModelError(f"model {name}: `blocks: {blocks}` names no submodule") from None
        listed = [(f"{blocks}.{n}", m) for n, m in container.named_children() if _has_params(m)]
        if not listed:
            raise ModelError(f"model {name}: `blocks: {blocks}` has no children with parameters")
        return listed
    head_top = head.split(".", 1)[0]
    top = [(n, m) for n, m in model.named_children() if n != head_top and _has_params(m)]
    stages: list[tuple[str, nn.Module]] = []
    for child_name, child in top:
        inner = [(f"{child_name}.{n}", m) for n, m in child.named_children() if _has_params(m)]
        # Expand containers only for "one big container" models: ResNet's layer4 stays a stage.
        if (
            len(top) <= 2
            and (isinstance(child, _CONTAINERS) or _scripted_container(child))
            and len(inner) >= 2
        ):
            stages.extend(inner)
        else:
            stages.append((child_name, child))
    if not stages:
        raise ModelError(
            f"model {name}: found no stages besides the classifier; set `blocks:` to the container "
            "whose children are the stages (e.g. features or encoder.layers)"
        )
    return stages


def _scripted_container(module: nn.Module) -> bool:
    return getattr(module, "original_name", None) in ("Sequential", "ModuleList")


def module_path(model: nn.Module, target: nn.Module) -> str | None:
    """The attribute path of `target` inside `model` (None if it is not one of its submodules).

    Libraries hand out modules (timm's `get_classifier()`); the rest of this package speaks in paths.
    """
    return next((path for path, module in model.named_modules() if module is target and path), None)


def tail_after(model: nn.Module, container: str, head: str) -> list[tuple[str, nn.Module]]:
    """Parameter-holding top-level children registered after `container`'s top-level module.

    They sit between the last stage and the classifier (ViT's final norm, EfficientNet's
    conv_head and bn2): `partial` must train them with the last stage, or the stage it trains
    feeds a frozen layer it was never fitted to. Registration order is forward order in the
    libraries this is used for (timm); the head's own container is left out.
    """
    top, head_top = container.split(".", 1)[0], head.split(".", 1)[0]
    children = list(model.named_children())
    names = [n for n, _ in children]
    if top not in names:
        return []
    return [(n, m) for n, m in children[names.index(top) + 1 :] if n != head_top and _has_params(m)]


def largest_module_list(model: nn.Module) -> str | None:
    """The path of the ModuleList holding the most parameters: a transformer's layers, a CNN's stages.

    Hugging Face models keep their repeated blocks in one (ViT's `layers`/`encoder.layer`,
    ConvNeXt's `encoder.stages`, Swin's `encoder.layers`); an outer list wins ties with the lists
    inside its own blocks, because it comes first.
    """
    best, best_size = None, 0
    for path, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) >= 1:
            size = sum(p.numel() for p in module.parameters())
            if size > best_size:
                best, best_size = path, size
    return best
