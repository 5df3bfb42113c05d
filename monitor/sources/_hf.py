"""An `hf:<folder>` model seen from the daemon: its version and its preprocessing, read as files.

A folder written by `save_pretrained` holds `config.json`, the weights (`model.safetensors`, or
shards with an `.index.json`, or pickled `pytorch_model.bin`) and, when the image processor was
saved too, `preprocessor_config.json`. Nothing here imports transformers.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..errors import SourceError
from ..settings import ModelSpec
from ._digest import file_digest, is_hidden
from ._memo import DigestMemo

__all__ = ["hf_digest", "hf_files", "hf_folder", "preprocessor_defaults"]

_WEIGHTS_SUFFIXES = (".safetensors", ".bin")


def hf_folder(spec: ModelSpec) -> Path:
    return Path(spec.architecture.split(":", 1)[1])


def hf_files(folder: Path) -> list[Path]:
    """The files that decide what the model computes: config.json, the weights and their shard index.

    The preprocessor config is left out: what it changes (image_size, normalize) is part of every
    cell's key already.
    """
    found = []
    for path in sorted(folder.iterdir()):
        name = path.name
        if is_hidden(name) or not path.is_file():
            continue
        if name == "config.json" or name.endswith(_WEIGHTS_SUFFIXES) or name.endswith(".index.json"):
            found.append(path)
    return found


def hf_digest(spec: ModelSpec, memo: DigestMemo) -> str:
    """sha256 over the folder's config and weights (each file hashed once per size and mtime).

    A folder without weights is refused unless `weights:` brings them (then its config alone is
    the architecture, and this digest is combined with the weights' own).
    """
    folder = hf_folder(spec)
    try:
        files = hf_files(folder)
        if spec.weights is None and not any(p.name.endswith(_WEIGHTS_SUFFIXES) for p in files):
            raise SourceError(
                f"model {spec.name}: {folder} holds no weights (model.safetensors or pytorch_model.bin); "
                "save the model with save_pretrained, or set `weights:` to a state_dict file"
            )
        digest = hashlib.sha256()
        for path in files:
            digest.update(f"{path.name}\0{file_digest(path, memo)}\n".encode())
    except OSError as exc:
        raise SourceError(
            f"cannot read the model folder {folder} of model {spec.name}: {exc.strerror or exc}"
        ) from None
    return digest.hexdigest()


def preprocessor_defaults(folder: Path) -> dict[str, Any]:
    """`image_size`, `mean` and `std` from the folder's preprocessor_config.json (what it has of them).

    The image size is the center crop when the processor crops (`crop_size`), else its resize
    target (`size`: height, or shortest_edge): the size the network was fed. ValueError for a file
    that is not a JSON object; an absent file has nothing to say.
    """
    path = folder / "preprocessor_config.json"
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    if not isinstance(document, dict):
        raise ValueError(f"{path} is not a JSON object")
    found: dict[str, Any] = {}
    crop = _side(document.get("crop_size")) if document.get("do_center_crop", True) else None
    size = crop or (_side(document.get("size")) if document.get("do_resize", True) else None)
    if size is not None:
        found["image_size"] = size
    for ours, theirs in (("mean", "image_mean"), ("std", "image_std")):
        value = document.get(theirs)
        if isinstance(value, list) and len(value) == 3 and all(isinstance(v, int | float) for v in value):
            found[ours] = [float(v) for v in value]
    return found


def _side(value: object) -> int | None:
    """One side of a square from an image processor's size: an int, {height, width} or {shortest_edge}."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, dict):
        height, width = value.get("height"), value.get("width")
        if isinstance(height, int) and height == width:
            return height
        edge = value.get("shortest_edge")
        if isinstance(edge, int):
            return edge
    return None
