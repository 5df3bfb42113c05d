"""Read weights files safely and fit them to an architecture with errors a person can act on."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch
from torch import nn

from .._text import shown, shown_text
from ..errors import ModelError
from ._surgery import submodule

__all__ = ["fit_state_dict", "read_state_dict"]

# Wrappers people save around a state_dict (Lightning, timm/classy checkpoints, plain dicts).
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net")
# Prefixes added by DataParallel/DistributedDataParallel and torch.compile.
_PREFIXES = ("module.", "_orig_mod.")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # torch colours its messages; ours are plain text
_MAX_DETAIL = 160  # a library's message inside ours: one bounded line


# What to do with a file that is not a plain state_dict: re-export it where it was made.
_REEXPORT = (
    "re-export the weights where the model is built: torch.save(model.state_dict(), path) for a "
    ".pt/.pth file, or safetensors.torch.save_file(model.state_dict(), path) for a .safetensors file"
)
# torch names what the pickle wanted: "Unsupported global: GLOBAL __main__.Evil was not an allowed …"
_GLOBAL = re.compile(r"GLOBAL ([A-Za-z_][\w.]*)")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a state_dict from .safetensors, or from .pt/.pth with `weights_only=True` (no code runs).

    Errors never repeat torch's own advice (to load with `weights_only=False`, or to allowlist
    the pickle's globals, which runs whatever the file holds); they name the file and say how to
    re-export its weights.
    """
    shown_path = shown(path)
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors import SafetensorError
            from safetensors.torch import load_file

            try:
                raw: object = load_file(str(path), device="cpu")
            except (SafetensorError, ValueError) as exc:
                raise ModelError(
                    f"weights file {shown_path} is not a valid safetensors file ({_first_line(exc)}); "
                    "re-export it with safetensors.torch.save_file(model.state_dict(), path)"
                ) from None
        else:
            raw = torch.load(str(path), map_location="cpu", weights_only=True)
    except ModelError:
        raise
    except pickle.UnpicklingError as exc:
        found = _GLOBAL.search(str(exc))
        what = f" (it references {shown(found[1])})" if found else ""
        raise ModelError(
            f"refusing to load weights file {shown_path}: it holds more than plain tensors{what}, and "
            f"weights are only loaded weights-only, so no code in a weights file ever runs; {_REEXPORT}"
        ) from None
    except Exception as exc:  # torch raises many kinds on garbage bytes; all mean "unreadable"
        raise ModelError(
            f"cannot read weights file {shown_path} ({type(exc).__name__}: {_first_line(exc)}): is it "
            f"truncated, or not a torch/safetensors file? Copy it again, or {_REEXPORT}"
        ) from None
    return _unwrap(raw, path)


def _first_line(exc: BaseException) -> str:
    """The first line of a library's message, its control characters (ANSI colours) escaped,
    bounded; never torch's advice to load the file unsafely."""
    line = next((part for part in str(exc).splitlines() if part.strip()), "")
    line = _ANSI.sub("", line).split(". ")[0]  # the first sentence says what; the rest is advice
    if "weights_only" in line.replace(" ", "") or "safe_globals" in line:
        return "the file is not plain tensors"  # torch's advice to load it unsafely: never repeated
    return shown_text(line)[:_MAX_DETAIL] or type(exc).__name__


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
