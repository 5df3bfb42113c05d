"""A model's input size and normalisation from what its weights were trained with, unless set.

`image_size` and `normalize` default to ImageNet's 224 and statistics in the schema; a model that
says otherwise knows better than that default, and the config should not have to repeat it:

    torchvision:<builder> + torchvision:<Enum>.<NAME>   the enum's evaluation transforms
                                                        (crop_size, mean, std)
    timm:<name>                                         timm's pretrained config (input_size[-1],
                                                        mean, std; the tag's, e.g. .augreg_in21k)
    hf:<folder>                                         the folder's preprocessor_config.json
                                                        (crop_size or size, image_mean, image_std)

A value the config (or `PM_*`) sets always wins: only fields outside `model_fields_set` are filled.
torchvision and timm facts come from `model_facts` (a child process, memoised per library
version), so this costs no process once the facts are known. Every timm name and torchvision enum
is checked on the way, so a typo fails at start-up with the field's name rather than at the
first poll.
"""

from __future__ import annotations

from typing import Any, TypeGuard

from ..errors import ConfigError
from ..settings import ModelSpec, Normalize, Settings
from ._hf import hf_folder, preprocessor_defaults
from ._hub import Facts, Library, enum_problem, model_facts

__all__ = ["with_model_defaults"]

_SIZE_RANGE = (8, 1024)  # ModelSpec.image_size's own bounds


def with_model_defaults(settings: Settings) -> Settings:
    """`settings` with each model's unset `image_size` / `normalize` taken from the model itself.

    ConfigError (naming `models[i].…`) for an unknown timm model or torchvision enum, an enum of
    another builder, or an unreadable preprocessor_config.json; SourceError when the libraries
    cannot be asked at all.
    """
    request = _facts_needed(settings.models)
    facts = model_facts(request, state_dir=settings.state_dir) if request else {}
    problems: list[tuple[str, str]] = []
    models: list[ModelSpec] = []
    for index, model in enumerate(settings.models):
        try:
            found = _defaults_of(model, facts)
        except _Problem as problem:
            problems.append((f"models[{index}].{problem.field}", str(problem)))
            found = {}
        models.append(_filled(model, found))
    if problems:
        raise ConfigError(problems)
    if all(new is old for new, old in zip(models, settings.models, strict=True)):
        return settings
    return settings.model_copy(update={"models": models})


class _Problem(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _facts_needed(models: list[ModelSpec]) -> dict[Library, list[str]]:
    request: dict[Library, list[str]] = {}
    for model in models:
        if model.weights is not None and model.weights_kind == "torchvision":
            request.setdefault("torchvision", []).append(model.weights.split(":", 1)[1])
        elif model.kind == "timm":
            request.setdefault("timm", []).append(model.architecture.split(":", 1)[1])
    return request


def _defaults_of(model: ModelSpec, facts: dict[Library, dict[str, Facts]]) -> dict[str, Any]:
    """What the model says its image_size, mean and std are (whatever of them it says)."""
    if model.weights is not None and model.weights_kind == "torchvision":
        found = facts["torchvision"][model.weights.split(":", 1)[1]]
        problem = enum_problem(found, model)
        if problem is not None:
            raise _Problem("weights", problem)
        return found
    if model.kind == "timm":
        found = facts["timm"][model.architecture.split(":", 1)[1]]
        if "error" in found:
            raise _Problem("architecture", str(found["error"]))
        return found
    if model.kind == "hf":
        try:
            return preprocessor_defaults(hf_folder(model))
        except ValueError as exc:
            raise _Problem("architecture", str(exc)) from None
    return {}


def _filled(model: ModelSpec, found: dict[str, Any]) -> ModelSpec:
    """The model with the found values where the config left the field out (and they are valid)."""
    update: dict[str, Any] = {}
    size = found.get("image_size")
    if (
        "image_size" not in model.model_fields_set
        and isinstance(size, int)
        and _SIZE_RANGE[0] <= size <= _SIZE_RANGE[1]
    ):
        update["image_size"] = size
    mean, std = found.get("mean"), found.get("std")
    if "normalize" not in model.model_fields_set and _three(mean) and _three(std) and min(std) > 0:
        update["normalize"] = Normalize.model_validate({"mean": mean, "std": std})
    if not update or all(getattr(model, k) == v for k, v in update.items()):
        return model
    return model.model_copy(update=update)


def _three(value: object) -> TypeGuard[list[float]]:
    return isinstance(value, list) and len(value) == 3 and all(isinstance(v, int | float) for v in value)
