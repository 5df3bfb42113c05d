"""Read weights files safely and fit them to an architecture with errors a person can act on."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelError
from ._surgery import submodule

__all__ = ["fit_state_dict", "read_state_dict"]

# Wrappers people save around a state_dict (Lightning, timm/classy checkpoints, plain dicts).
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net")
# Prefixes added by DataParallel/DistributedDataParallel and torch.compile.
_PREFIXES = ("module.", "_orig_mod.")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a state_dict from .safetensors, or from .pt/.pth with `weights_only=True` (no code runs)."""
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors import SafetensorError
            from safetensors.torch import load_file

            try:
                raw: object = load_file(str(path), device="cpu")
            except (SafetensorError, ValueError) as exc:
                raise ModelError(
                    f"weights file {path} is not a valid safetensors file ({exc}); re-export it with "
                    "safetensors.torch.save_file(model.state_dict(), path)"
                ) from None
        else:
            raw = torch.load(str(path), map_location="cpu", weights_only=True)
    except ModelError:
        raise
    except pickle.UnpicklingError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else "unsupported content"
        raise ModelError(
            f"refusing to load {path}: it holds more than plain tensors, and weights are only loaded "
            f"weights-only ({reason}). Save it with torch.save(model.state_dict(), path) or as .safetensors"
        ) from None
    except Exception as exc:  # torch raises many kinds on garbage bytes; all mean "unreadable"
        raise ModelError(
            f"cannot read weights file {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__} "
            "(is it truncated, or not a torch/safetensors file?)"
        ) from None
    return _unwrap(raw, path)


def _unwrap(raw: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(raw, dict):
        for key in _WRAPPER_KEYS:
            inner = raw.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                raw = inner
                break
    if not isinstance(raw, dict) or not raw or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise ModelError(
            f"weights file {path} does not hold a state_dict (a mapping of parameter names to tensors); "
            "save it with torch.save(model.state_dict(), path)"
        )
    state = {str(k): v for k, v in raw.items()}
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def fit_state_dict(
    model: nn.Module, state: dict[str, torch.Tensor], *, path: Path, architecture: str, head: str | None
) -> None:
    """Load `state` into `model` strictly, explaining any mismatch (keys and shapes).

    A classifier head whose class count differs from the builder's default is not a mismatch: the
    head is replaced for every fine-tune anyway, so it is resized to the file's shape first.
    """
    own = model.state_dict()
    if head is not None:
        _resize_head_to(model, head, state)
        own = model.state_dict()
    # Old checkpoints lack BatchNorm's step counter; it does not influence evaluation or training.
    missing = sorted(k for k in own.keys() - state.keys() if not k.endswith("num_batches_tracked"))
    unexpected = sorted(state.keys() - own.keys())
    shapes = sorted(
        f"{k}: file {list(state[k].shape)} vs model {list(own[k].shape)}"
        for k in own.keys() & state.keys()
        if own[k].shape != state[k].shape
    )
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_few(unexpected)}")
        if shapes:
            parts.append(f"shape mismatch {_few(shapes)}")
        raise ModelError(
            f"weights file {path} does not match {architecture}: {'; '.join(parts)} "
            "(check the architecture, or set `head:` if the classifier lives elsewhere)"
        )
    model.load_state_dict(state, strict=False)  # strict checks done above, with better messages


def _resize_head_to(model: nn.Module, head: str, state: dict[str, torch.Tensor]) -> None:
    weight = state.get(f"{head}.weight")
    try:
        module = submodule(model, head)
    except AttributeError:
        return
    if not isinstance(module, nn.Linear) or weight is None or weight.ndim != 2:
        return
    if tuple(weight.shape) == tuple(module.weight.shape):
        return
    if weight.shape[1] != module.in_features:
        return  # a real mismatch of the backbone's width: reported by the caller
    parent_name, _, leaf = head.rpartition(".")
    parent = submodule(model, parent_name)
    setattr(parent, leaf, nn.Linear(module.in_features, weight.shape[0], bias=module.bias is not None))


def _few(items: list[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" (and {len(items) - limit} more)" if len(items) > limit else "")
