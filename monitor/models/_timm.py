"""`timm:<name>`: `timm.create_model(name, pretrained=False)` with the weights of a state_dict file.

Where timm knows its model's layout it is asked instead of guessed: `get_classifier()` names the
head, `feature_info` the stage container; fixed-size models (ViT) are built at `image_size` with
their position embeddings resampled by the family's own `checkpoint_filter_fn`.
"""

from __future__ import annotations

import sys
from contextlib import suppress
from typing import Any

import torch
from torch import nn

from ..errors import ModelError
from ..settings import ModelSpec
from ._backbone import Built, import_extra, seeded, weights_file
from ._surgery import module_path
from ._weights import fit_state_dict, read_state_dict

__all__ = ["build_timm"]


def build_timm(spec: ModelSpec) -> Built:
    timm = import_extra("timm", "timm", spec)
    from ._probe import timm_name_problem  # imported here: `python -m` runs that module as __main__

    name = spec.architecture.split(":", 1)[1]
    problem = timm_name_problem(name)
    if problem is not None:
        raise ModelError(f"model {spec.name}: {problem}")
    path = weights_file(spec)
    state = read_state_dict(path)
    module, resized = _timm_create(timm, name, spec.image_size)
    classifier = module_path(module, module.get_classifier())
    head = spec.head or classifier
    if head is not None and head == classifier:
        _timm_fit_head(module, head, state)
    if resized:
        state = _timm_filter(module)(state, module)
    fit_state_dict(module, state, path=path, architecture=spec.architecture, head=head)
    return Built(module, head=head, blocks=_timm_blocks(module))


def _timm_create(timm: Any, name: str, image_size: int) -> tuple[Any, bool]:
    """`timm.create_model` without weights; models with a fixed input size get `image_size` as theirs.

    A ViT's position embeddings are sized for its input; timm resamples them to another size when
    it loads pretrained weights (its `checkpoint_filter_fn`), and so do we (`_timm_filter`). The
    model is typed `Any`: timm's own API (get_classifier, reset_classifier) is not nn.Module's.
    """
    cfg = timm.models.get_pretrained_cfg(name)
    fixed = cfg is not None and cfg.fixed_input_size and int(cfg.input_size[-1]) != image_size
    with seeded():
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
