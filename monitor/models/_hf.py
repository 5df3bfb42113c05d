"""`hf:<folder>`: a Hugging Face vision backbone saved with `save_pretrained`, loaded offline.

`AutoModel.from_pretrained(folder, local_files_only=True)`, never with custom code; pickled
weights only where transformers loads them weights-only. The model has no classifier at all: its
pooled features are the backbone's output, and its repeated layers are the stages.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelError
from ..settings import ModelSpec
from ._backbone import Backbone, freeze, import_extra, seeded, weights_file
from ._surgery import find_stages, largest_module_list, tail_after
from ._weights import fit_state_dict, read_state_dict

__all__ = ["HFFeatures", "hf_backbone"]


class HFFeatures(nn.Module):
    """A transformers vision model as `forward(pixels [B, 3, H, W]) -> features [B, D]`.

    Features: `pooler_output` where the model has a pooler whose weights were in the folder
    (ConvNeXt, ResNet, Swin: the global average the family's own classifier reads; ViT saved with
    its pooler); otherwise the mean of `last_hidden_state` over tokens (or over space, for a
    convolutional map). A ViT saved from `ViTForImageClassification` has no pooler weights: its
    pooler would be random, so the token mean is used (defined for every token model, with or
    without a CLS token). `head` is an identity where a classifier would be: a fine-tune puts its
    new head after `forward`.
    """

    def __init__(self, model: nn.Module, *, use_pooler: bool, interpolate: bool) -> None:
        super().__init__()
        self.model = model
        self.head = nn.Identity()
        self.use_pooler = use_pooler
        self.interpolate = interpolate  # ViTs resample their position embeddings to the input size

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        extra = {"interpolate_pos_encoding": True} if self.interpolate else {}
        out = self.model(pixel_values=pixels, **extra)
        pooled = getattr(out, "pooler_output", None) if self.use_pooler else None
        if isinstance(pooled, torch.Tensor):
            return self.head(pooled.flatten(1))
        hidden = out.last_hidden_state
        features = hidden.mean(dim=1) if hidden.ndim == 3 else hidden.flatten(2).mean(dim=2)
        return self.head(features)


def hf_backbone(spec: ModelSpec) -> Backbone:
    if spec.head is not None:
        raise ModelError(
            f"model {spec.name}: an hf: model is loaded without a classifier (AutoModel), so there is no "
            f"`head:` to name; remove it"
        )
    model, pooler_trained = _hf_model(spec)
    forward = inspect.signature(model.forward).parameters
    wrapper = HFFeatures(model, use_pooler=pooler_trained, interpolate="interpolate_pos_encoding" in forward)
    wrapper.eval()
    blocks = spec.blocks or largest_module_list(model)
    if blocks is None:
        raise ModelError(
            f"model {spec.name}: found no list of layers in {type(model).__name__}; set `blocks:` to the "
            "container of its layers, as named in its state_dict (e.g. encoder.layer)"
        )
    stages = [(f"model.{n}", m) for n, m in find_stages(model, "", blocks, name=spec.name)]
    siblings = [m for n, m in tail_after(model, blocks, "") if pooler_trained or n != "pooler"]
    freeze(wrapper)
    with torch.no_grad():
        probe = wrapper(torch.zeros(1, 3, spec.image_size, spec.image_size))
    return Backbone(spec.name, wrapper, int(probe.shape[-1]), "head", stages, siblings, False)


def _hf_model(spec: ModelSpec) -> tuple[nn.Module, bool]:
    """The folder's AutoModel with its weights (and `weights:` over them); whether its pooler is trained."""
    transformers = import_extra("transformers", "hf", spec)
    folder = Path(spec.architecture.split(":", 1)[1])
    _refuse_custom_code(spec, folder)
    try:
        with _quiet(transformers), seeded():
            model, fresh = _hf_load(transformers, spec, folder)
    except ModelError:
        raise
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError, ... on a bad folder
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"model {spec.name}: transformers cannot load {folder} ({type(exc).__name__}: {first[:200]}); "
            "it must be a folder written by save_pretrained of a transformers vision model, without "
            "custom code (trust_remote_code is never used)"
        ) from None
    model = model.float()  # training keeps fp32 master weights whatever dtype the folder holds
    if spec.weights is not None:
        path = weights_file(spec)
        fit_state_dict(model, read_state_dict(path), path=path, architecture=spec.architecture, head=None)
        fresh = set()  # strict: every key came from the file
    uncovered = sorted(k for k in fresh if not k.startswith("pooler."))
    if uncovered:
        listed = ", ".join(uncovered[:6]) + (
            f" (and {len(uncovered) - 6} more)" if len(uncovered) > 6 else ""
        )
        raise ModelError(
            f"model {spec.name}: the weights in {folder} do not cover {type(model).__name__}: missing "
            f"{listed} (transformers would initialise them at random); save the folder again with "
            "save_pretrained from the model you deploy"
        )
    return model, not any(k.startswith("pooler.") for k in fresh)


def _hf_load(transformers: Any, spec: ModelSpec, folder: Path) -> tuple[nn.Module, set[str]]:
    """`AutoModel.from_pretrained` offline (or `from_config`, for a folder whose weights are `weights:`)
    and the keys transformers had to initialise itself (missing from, or mis-shaped in, the folder)."""
    names = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    offline: dict[str, Any] = {"local_files_only": True, "trust_remote_code": False}
    if not any(n.endswith((".safetensors", ".bin")) for n in names):
        if spec.weights is None:
            raise ModelError(
                f"model {spec.name}: {folder} holds no weights (model.safetensors or pytorch_model.bin); "
                "save the model with save_pretrained, or set `weights:` to a state_dict file"
            )
        config = transformers.AutoConfig.from_pretrained(str(folder), **offline)
        return transformers.AutoModel.from_config(config, trust_remote_code=False), set()
    if not any(n.endswith(".safetensors") for n in names):
        _require_weights_only(transformers, spec, folder)
        offline["weights_only"] = True  # transformers' torch.load then runs no code of the file
    model, info = transformers.AutoModel.from_pretrained(str(folder), output_loading_info=True, **offline)
    fresh = {str(k) for k in info.get("missing_keys", ())}
    fresh |= {str(k[0] if isinstance(k, tuple) else k) for k in info.get("mismatched_keys", ())}
    return model, fresh


def _refuse_custom_code(spec: ModelSpec, folder: Path) -> None:
    """A config that maps to code of its own (`auto_map`) is refused, not quietly loaded as the
    library's class of the same `model_type`: no code from a model folder ever runs here."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # transformers says what is wrong with it
    if isinstance(config, dict) and config.get("auto_map"):
        raise ModelError(
            f"model {spec.name}: {folder}/config.json maps to custom model code (auto_map), and code from "
            "a model folder never runs here (trust_remote_code is never used); use "
            "architecture python:<module>:<callable> for a model of your own"
        )


def _require_weights_only(transformers: Any, spec: ModelSpec, folder: Path) -> None:
    """Pickled weights (.bin) only when this transformers loads them weights-only (it has `weights_only`)."""
    if "weights_only" not in inspect.signature(transformers.PreTrainedModel.from_pretrained).parameters:
        raise ModelError(
            f"model {spec.name}: {folder} holds pickled weights (.bin) and this transformers "
            f"({transformers.__version__}) cannot load them weights-only; convert them to safetensors "
            "(model.save_pretrained(folder, safe_serialization=True)) or upgrade transformers"
        )


@contextmanager
def _quiet(transformers: Any) -> Iterator[None]:
    """No load report or progress bar from transformers: a worker's log is for its own messages."""
    logging = transformers.utils.logging
    level, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()
