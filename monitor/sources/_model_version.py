"""Find a deployed model's version: the sha256 of its weights (or of its factory's source).

Weights live in a local file, behind an http(s) or fsspec URL (fetched into a digest-keyed cache,
`_remote_weights`), in an MLflow Model Registry (`_mlflow`), or in torch's hub cache for a
torchvision weights enum (`_hub`). Whatever the place, the version is the sha256 of the bytes a
worker loads, so the same weights found in two places are one version.
"""

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
    """Return the model's current version; the weights are re-hashed (or fetched) only when they changed.

    With weights, the digest is the weights' sha256. A `python:<module>:<callable>` factory is
    also versioned by the sha256 of the module's source file (found on `config_dir` then
    `sys.path`, without importing anything): changing the model's code is a new version. Code the
    module imports from elsewhere is not covered. An `hf:<folder>` model is versioned by its
    folder's config.json and weight files (combined with `weights:` when it has one). Without weights and without a findable source the digest is
    "", and the worker that imports it reports the real problem.

    `ModelVersion.weights` is always a local file: remote weights are fetched (once per content)
    into `state_dir/weights/`.
    """
    state_dir = Path(state_dir)
    memo = DigestMemo(state_dir)
    source_digest = _factory_digest(spec, config_dir, memo)
    if spec.kind == "hf":
        from ._hf import hf_digest

        # The folder's config.json (and its weights, if any) is the architecture: part of every version.
        source_digest = hf_digest(spec, memo)
    label: str | None = None
    kind = spec.weights_kind
    if kind is None:
        return ModelVersion(
            model=spec.name, architecture=spec.architecture, digest=source_digest, weights=None
        )
    if kind == "file":
        path = spec.weights_path
        assert path is not None
        try:
            digest = file_digest(path, memo)
        except OSError as exc:
            raise SourceError(
                f"cannot read weights file {path} of model {spec.name}: {exc.strerror or exc}; "
                f"check models[].weights and the file's permissions"
            ) from None
    elif kind in ("http", "fsspec"):
        from ._remote_weights import remote_weights

        path, digest = remote_weights(spec, state_dir=state_dir)
    elif kind == "mlflow":
        from ._mlflow import mlflow_weights

        path, digest, label = mlflow_weights(spec, state_dir=state_dir)
    else:
        from ._hub import torchvision_checkpoint

        path = torchvision_checkpoint(spec, state_dir=state_dir)
        try:
            digest = file_digest(path, memo)
        except OSError as exc:
            raise SourceError(
                f"cannot read {path} ({spec.weights} of model {spec.name}): {exc.strerror or exc}"
            ) from None
    if source_digest:
        digest = hashlib.sha256(f"{digest}:{source_digest}".encode()).hexdigest()
    return ModelVersion(
        model=spec.name, architecture=spec.architecture, digest=digest, weights=path, label=label
    )


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
