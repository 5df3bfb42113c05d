"""What torchvision's weights enums and timm's registry say about a model, answered as JSON.

The daemon must know a torchvision enum's checkpoint file and a model's input size and
normalisation without importing torch, torchvision or timm (DESIGN.md §4). It runs this module in
a child process of its own (`monitor.sources._hub`), and memoises the answer per library version:

    python -m monitor.models._probe '{"torchvision": ["ResNet50_Weights.IMAGENET1K_V2"], "timm": ["resnet18"]}'

prints one line of JSON on stdout (the libraries' own chatter goes to stderr):

    {"torchvision": {"ResNet50_Weights.IMAGENET1K_V2": {"url", "file", "builders", "num_classes",
                                                        "image_size", "resize_size", "mean", "std"}},
     "timm": {"resnet18": {"image_size", "mean", "std", "num_classes", "classifier"}}}

A name the library does not know answers `{"error": "<what, and the closest known name>"}`.
Nothing here downloads: enums are looked up, timm models are described by their pretrained
config, never built.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import sys
from collections.abc import Iterable
from typing import Any

__all__ = ["answer", "timm_facts", "timm_name_problem", "torchvision_facts"]


def _closest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _torchvision_enum_names() -> list[str]:
    """Every `<Enum>.<MEMBER>` the installed torchvision knows (for a "did you mean")."""
    from torchvision.models import get_model_weights, list_models

    names: list[str] = []
    for builder in list_models():
        with contextlib.suppress(Exception):  # a builder without an enum has nothing to offer
            enum = get_model_weights(builder)
            names.extend(f"{enum.__name__}.{member}" for member in enum.__members__)
    return sorted(set(names))


def torchvision_facts(enum_name: str) -> dict[str, Any]:
    """The checkpoint URL, file name, builders and evaluation transforms of a torchvision weights enum."""
    from torchvision.models import get_model_weights, get_weight, list_models

    try:
        weights = get_weight(enum_name)
    except (KeyError, ValueError, AttributeError):
        hint = _closest(enum_name, _torchvision_enum_names())
        return {
            "error": f"torchvision has no weights {enum_name}{hint or ' (see torchvision.models.list_models())'}"
        }
    builders = []
    for builder in list_models():
        with contextlib.suppress(Exception):
            if get_model_weights(builder) is type(weights):
                builders.append(builder)
    transforms = weights.transforms()
    # ImageClassification: resize the shorter side to resize_size, center-crop crop_size.
    crop = getattr(transforms, "crop_size", None)
    resize = getattr(transforms, "resize_size", None)
    categories = weights.meta.get("categories") or []
    return {
        "enum": str(weights),  # DEFAULT resolved to the member it stands for
        "url": weights.url,
        "file": weights.url.rsplit("/", 1)[-1].split("?", 1)[0],
        "builders": sorted(builders),
        "num_classes": len(categories) or None,
        "image_size": int(crop[0]) if crop else None,
        "resize_size": int(resize[0]) if resize else None,
        "mean": [float(v) for v in transforms.mean] if hasattr(transforms, "mean") else None,
        "std": [float(v) for v in transforms.std] if hasattr(transforms, "std") else None,
    }


def timm_name_problem(name: str) -> str | None:
    """Why timm cannot build `name` (unknown model or pretrained tag, with the closest name), or None."""
    import timm
    from timm.models import get_pretrained_cfg

    if not timm.is_model(name):
        base = name.split(".", 1)[0]
        return f"timm has no model {base}{_closest(base, timm.list_models()) or ' (see timm.list_models())'}"
    try:
        get_pretrained_cfg(name)
    except RuntimeError:  # "Invalid pretrained tag (x) for <model>."
        base, _, tag = name.partition(".")
        known = timm.list_pretrained(f"{base}.*")
        listed = ", ".join(known[:8]) + (" …" if len(known) > 8 else "")
        return f"timm model {base} has no pretrained tag {tag!r}{_closest(name, known)} (known: {listed or 'none'})"
    return None


def timm_facts(name: str) -> dict[str, Any]:
    """Input size, normalisation, class count and classifier path from timm's pretrained config."""
    from timm.data import resolve_data_config
    from timm.models import get_pretrained_cfg

    problem = timm_name_problem(name)
    if problem is not None:
        return {"error": problem}
    cfg = get_pretrained_cfg(name)
    if cfg is None:  # a registered model without any pretrained config: nothing to say
        return {"image_size": None, "mean": None, "std": None, "num_classes": None, "classifier": None}
    data = resolve_data_config({}, pretrained_cfg=cfg.to_dict())
    return {
        "image_size": int(data["input_size"][-1]),
        "mean": [float(v) for v in data["mean"]],
        "std": [float(v) for v in data["std"]],
        "num_classes": cfg.num_classes,
        "classifier": cfg.classifier,
    }


def answer(request: dict[str, list[str]]) -> dict[str, dict[str, dict[str, Any]]]:
    """The facts for every name of the request (see the module docstring)."""
    result: dict[str, dict[str, dict[str, Any]]] = {}
    if request.get("torchvision"):
        result["torchvision"] = {name: torchvision_facts(name) for name in request["torchvision"]}
    if request.get("timm"):
        result["timm"] = {name: timm_facts(name) for name in request["timm"]}
    return result


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: python -m monitor.models._probe '<request JSON>'\n")
        return 2
    out = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):  # the answer must be the only thing on stdout
        result = answer(json.loads(argv[0]))
    out.write(json.dumps(result) + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
