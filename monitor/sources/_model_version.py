"""Find a deployed model's version: the sha256 of its weights (or of its factory's source)."""

from __future__ import annotations

import hashlib
import sys
from importlib.machinery import ModuleSpec, PathFinder
from pathlib import Path

from ..errors import SourceError
from ..settings import ModelSpec
from ..types import ModelVersion
from ._digest import file_digest
from ._memo import DigestMemo

__all__ = ["model_version"]


def model_version(spec: ModelSpec, *, state_dir: Path, config_dir: Path | None = None) -> ModelVersion:
    """Return the model's current version; the weights are re-hashed only when they changed.

    With weights, the digest is the weights file's sha256. A `python:<module>:<callable>`
    factory is also versioned by the sha256 of the module's source file (found on `config_dir`
    then `sys.path`, without importing anything): changing the model's code is a new version.
    Code the module imports from elsewhere is not covered. Without weights and without a
    findable source the digest is "", and the worker that imports it reports the real problem.
    """
    memo = DigestMemo(Path(state_dir))
    source_digest = _factory_digest(spec, config_dir, memo)
    if spec.weights is not None:
        try:
            digest = file_digest(spec.weights, memo)
        except OSError as exc:
            raise SourceError(
                f"cannot read weights file {spec.weights} of model {spec.name}: {exc.strerror or exc}; "
                f"check models[].weights and the file's permissions"
            ) from None
        if source_digest:
            digest = hashlib.sha256(f"{digest}:{source_digest}".encode()).hexdigest()
        return ModelVersion(
            model=spec.name, architecture=spec.architecture, digest=digest, weights=spec.weights
        )
    return ModelVersion(model=spec.name, architecture=spec.architecture, digest=source_digest, weights=None)


def _factory_digest(spec: ModelSpec, config_dir: Path | None, memo: DigestMemo) -> str:
    if spec.kind != "python":
        return ""
    source = _module_file(spec.architecture.split(":")[1], config_dir)
    if source is None:
        return ""
    try:
        return file_digest(source, memo)
    except OSError:
        return ""  # unreadable source: the worker's import will say why, with the path


def _module_file(module: str, config_dir: Path | None) -> Path | None:
    """Locate a module's file by walking the import path by hand: parents are never imported.

    (`importlib.util.find_spec("a.b")` would import package `a`, running user code in the
    daemon just to compute a version.)
    """
    search: list[str] = ([str(config_dir)] if config_dir is not None else []) + sys.path
    parts = module.split(".")
    found: ModuleSpec | None = None
    for index, part in enumerate(parts):
        found = PathFinder.find_spec(part, search)
        if found is None:
            return None
        if index < len(parts) - 1:
            if found.submodule_search_locations is None:
                return None  # a plain module cannot have submodules
            search = list(found.submodule_search_locations)
    if found is None or not found.has_location or found.origin is None:
        return None
    origin = Path(found.origin)
    return origin if origin.is_file() else None
