"""Build a deployed model from its spec and turn it into a backbone that returns features.

Five kinds (DESIGN.md §3.2): `torchvision:<builder>` plus a state_dict file, `torchscript`
archives, `python:<module>:<callable>` factories (with an optional state_dict), `timm:<name>`
plus a state_dict file, and `hf:<folder>` (a folder saved with `save_pretrained`, optionally with
a state_dict over it). Nothing is ever downloaded: builders are called with `weights=None` /
`pretrained=False` / `local_files_only=True`, and the weights come from files.

timm and transformers are optional (`persistence-monitor[timm]`, `[hf]`) and imported only when a
model of that kind is built. Where a library knows its model's layout, it is asked instead of
guessed: timm's `get_classifier()` names the head and its `feature_info` the stage container; an
hf: model has no classifier at all (`AutoModel`) and its stages are its repeated layers.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import json
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
from ._surgery import (
    drop_head,
    find_head,
    find_stages,
    largest_module_list,
    module_path,
    submodule,
    tail_after,
)
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
    if spec.kind == "hf":
        backbone = _hf_backbone(spec)
    else:
        backbone = _classifier_backbone(spec, _build(spec, config_dir))
    _check_forward(backbone, spec)
    return backbone


@dataclass
class _Built:
    """A model with its weights, before surgery, and what its library says about its layout."""

    module: nn.Module
    head: str | None = None  # the classifier's path as the library names it (None: the last Linear)
    blocks: str | None = None  # the container of its stages as the library names it (None: found)


def _build(spec: ModelSpec, config_dir: Path | None) -> _Built:
    if spec.kind == "torchvision":
        return _Built(_torchvision(spec))
    if spec.kind == "torchscript":
        return _Built(_torchscript(spec))
    if spec.kind == "timm":
        return _timm(spec)
    return _Built(_python_factory(spec, config_dir))


def _classifier_backbone(spec: ModelSpec, built: _Built) -> Backbone:
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
    _freeze(module)
    return Backbone(spec.name, module, dim, head, stages, siblings, scripted)


def _freeze(module: nn.Module) -> None:
    # Nothing trains until a strategy says so (`set_trainable`).
    for parameter in module.parameters():
        parameter.requires_grad_(False)


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
    path = _weights_file(spec)
    state = read_state_dict(path)
    head = find_head(module, spec.head, name=spec.name)
    fit_state_dict(module, state, path=path, architecture=spec.architecture, head=head)
    return module


def _torchscript(spec: ModelSpec) -> nn.Module:
    path = _weights_file(spec)
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
        with _seeded():
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
        path = _weights_file(spec)
        state = read_state_dict(path)
        head = find_head(module, spec.head, name=spec.name)
        fit_state_dict(module, state, path=path, architecture=spec.architecture, head=head)
    return module


def _import_extra(module: str, extra: str, spec: ModelSpec) -> Any:
    """Import an optional library, or say which extra brings it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ModelError(
            f"model {spec.name}: {spec.architecture.split(':', 1)[0]}: models need {module}, which is not "
            f"installed here: pip install 'persistence-monitor[{extra}]'"
        ) from None


@contextmanager
def _seeded() -> Iterator[None]:
    """Initialise any freshly made parameters the same way in every process (one version, one model)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield


# -- timm ------------------------------------------------------------------------------------


def _timm(spec: ModelSpec) -> _Built:
    timm = _import_extra("timm", "timm", spec)
    from ._probe import timm_name_problem  # imported here: `python -m` runs that module as __main__

    name = spec.architecture.split(":", 1)[1]
    problem = timm_name_problem(name)
    if problem is not None:
        raise ModelError(f"model {spec.name}: {problem}")
    path = _weights_file(spec)
    state = read_state_dict(path)
    module, resized = _timm_create(timm, name, spec.image_size)
    classifier = module_path(module, module.get_classifier())
    head = spec.head or classifier
    if head is not None and head == classifier:
        _timm_fit_head(module, head, state)
    if resized:
        state = _timm_filter(module)(state, module)
    fit_state_dict(module, state, path=path, architecture=spec.architecture, head=head)
    return _Built(module, head=head, blocks=_timm_blocks(module))


def _timm_create(timm: Any, name: str, image_size: int) -> tuple[Any, bool]:
    """`timm.create_model` without weights; models with a fixed input size get `image_size` as theirs.

    A ViT's position embeddings are sized for its input; timm resamples them to another size when
    it loads pretrained weights (its `checkpoint_filter_fn`), and so do we (`_timm_filter`). The
    model is typed `Any`: timm's own API (get_classifier, reset_classifier) is not nn.Module's.
    """
    cfg = timm.models.get_pretrained_cfg(name)
    fixed = cfg is not None and cfg.fixed_input_size and int(cfg.input_size[-1]) != image_size
    with _seeded():
        if fixed:
            with suppress(TypeError):  # a fixed-size model without an img_size argument
                return timm.create_model(name, pretrained=False, img_size=image_size), True
        return timm.create_model(name, pretrained=False), False


def _timm_fit_head(module: Any, head: str, state: dict[str, torch.Tensor]) -> None:
    """Size timm's classifier for the file (`reset_classifier`); a file without one keeps the model's.

    The head is replaced for every fine-tune, so its class count (or its absence, in a file saved
    with `num_classes=0`) never matters; only the backbone's weights must match.
    """
    own = module.state_dict()
    prefix = f"{head}."
    if not any(k.startswith(prefix) for k in state):
        state.update({k: v for k, v in own.items() if k.startswith(prefix)})
        return
    weight, mine = state.get(f"{prefix}weight"), own.get(f"{prefix}weight")
    if weight is not None and mine is not None and weight.ndim == 2 and weight.shape[0] != mine.shape[0]:
        module.reset_classifier(int(weight.shape[0]))


def _timm_filter(module: nn.Module) -> Any:
    """The model family's own `checkpoint_filter_fn` (resamples position embeddings), or no change."""
    family = sys.modules.get(type(module).__module__)
    found = getattr(family, "checkpoint_filter_fn", None)
    return found if callable(found) else (lambda state, _model: state)


def _timm_blocks(module: nn.Module) -> str | None:
    """The container whose children are the stages, from timm's `feature_info` (None: top level).

    `feature_info` lists the modules features are tapped from (not every stage: EfficientNet taps
    blocks 0, 1, 2, 4 and 6), so the stages are all children of their container: the parent of the
    last tap, widened until it holds at least two taps (`stages.3.blocks` -> `stages`).
    """
    info = getattr(module, "feature_info", None)
    taps = (
        [str(f["module"]) for f in info if isinstance(f, dict) and f.get("module")]
        if isinstance(info, list)
        else []
    )
    if not taps:
        return None
    container = taps[-1].rpartition(".")[0]
    while container and sum(t.startswith(f"{container}.") for t in taps) < 2:
        container = container.rpartition(".")[0]
    return container or None


# -- Hugging Face transformers ------------------------------------------------------------------


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


def _hf_backbone(spec: ModelSpec) -> Backbone:
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
    _freeze(wrapper)
    with torch.no_grad():
        probe = wrapper(torch.zeros(1, 3, spec.image_size, spec.image_size))
    return Backbone(spec.name, wrapper, int(probe.shape[-1]), "head", stages, siblings, False)


def _hf_model(spec: ModelSpec) -> tuple[nn.Module, bool]:
    """The folder's AutoModel with its weights (and `weights:` over them); whether its pooler is trained."""
    transformers = _import_extra("transformers", "hf", spec)
    folder = Path(spec.architecture.split(":", 1)[1])
    _refuse_custom_code(spec, folder)
    try:
        with _quiet(transformers), _seeded():
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
        path = _weights_file(spec)
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


def _weights_file(spec: ModelSpec) -> Path:
    """The local weights file: remote weights (s3://, models:/, …) are fetched before a worker runs."""
    path = spec.weights_path
    if path is None:
        raise ModelError(
            f"model {spec.name}: weights {spec.weights!r} were not fetched to a local file before "
            "training (a bug: the pipeline resolves every weights location first)"
        )
    return path


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
