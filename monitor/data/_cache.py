"""The decoded-data cache folder: `<cache_dir>/decoded/<key>/` with four .npy files and meta.json.

A folder is published whole (written under a temp name, then `os.replace`), and meta.json is
written last inside it, so a folder that exists is complete unless something outside damaged it.
Reading a hit checks meta.json and every .npy header and length (cheap: no pixel is read).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ._prepared import ARRAY_FILES, DecodedArrays, PreparedData

__all__ = ["load_arrays", "read_cached", "write_cache"]

# A temp folder this old was left by a crash (decoding one snapshot takes seconds to minutes).
_STALE_SECONDS = 6 * 3600


def _expected(meta: dict[str, Any]) -> dict[str, tuple[tuple[int, ...], np.dtype[Any]]]:
    n_train, n_test, size = int(meta["n_train"]), int(meta["n_test"]), int(meta["image_size"])
    return {
        "train_x": ((n_train, 3, size, size), np.dtype(np.uint8)),
        "train_y": ((n_train,), np.dtype(np.int64)),
        "test_x": ((n_test, 3, size, size), np.dtype(np.uint8)),
        "test_y": ((n_test,), np.dtype(np.int64)),
    }


def _check_npy(path: Path, shape: tuple[int, ...], dtype: np.dtype[Any]) -> None:
    """Raise ValueError unless the file's header says (shape, dtype) and its length fits it."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            header = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            header = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ValueError(f"unsupported .npy version {version}")
        offset = fh.tell()
    found_shape, fortran, found_dtype = header
    if tuple(found_shape) != shape or found_dtype != dtype or fortran:
        raise ValueError(f"{path.name} holds {found_dtype}{list(found_shape)}, expected {dtype}{list(shape)}")
    expected_bytes = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if path.stat().st_size != expected_bytes:
        raise ValueError(
            f"{path.name} is {path.stat().st_size} bytes, expected {expected_bytes} (truncated?)"
        )


def read_cached(folder: Path, key: str) -> PreparedData:
    """Return the PreparedData a cache folder describes; ValueError/OSError if it is unusable."""
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    if not isinstance(meta, dict) or meta.get("key") != key:
        raise ValueError("meta.json does not describe this cache key")
    for name, (shape, dtype) in _expected(meta).items():
        _check_npy(folder / f"{name}.npy", shape, dtype)
    classes = meta["classes"]
    skipped = meta["skipped"]
    layout = meta["layout"]
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise ValueError("meta.json: classes must be a list of names")
    if not isinstance(skipped, list) or not all(
        isinstance(s, list) and len(s) == 2 and all(isinstance(p, str) for p in s) for s in skipped
    ):
        raise ValueError("meta.json: skipped must be a list of [path, reason] pairs")
    if layout not in ("split", "hashed"):
        raise ValueError(f"meta.json: unknown layout {layout!r}")
    return PreparedData(
        key=key,
        path=folder,
        classes=tuple(classes),
        n_train=int(meta["n_train"]),
        n_test=int(meta["n_test"]),
        image_size=int(meta["image_size"]),
        skipped=tuple((path, reason) for path, reason in skipped),
        layout=layout,
    )


def write_cache(decoded_dir: Path, key: str, arrays: DecodedArrays, meta: dict[str, Any]) -> Path:
    """Publish a complete cache folder atomically and return it (another writer's copy if it won)."""
    decoded_dir.mkdir(parents=True, exist_ok=True)
    _sweep_stale(decoded_dir)
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{key[:16]}-", dir=decoded_dir))
    final = decoded_dir / key
    try:
        for name in ARRAY_FILES:
            np.save(staging / f"{name}.npy", getattr(arrays, name), allow_pickle=False)
        # meta.json last: its presence is what marks the folder as complete.
        (staging / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(staging, final)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if (final / "meta.json").is_file():
            return final  # a concurrent writer published the same content first
        raise
    return final


def load_arrays(prepared: PreparedData) -> DecodedArrays:
    """Load the decoded arrays of a prepared snapshot (never unpickles anything).

    Raises DataError naming the folder when a file is missing, corrupt or does not match the
    counts in `prepared`.
    """
    try:
        loaded = {name: np.load(prepared.path / f"{name}.npy", allow_pickle=False) for name in ARRAY_FILES}
        meta = {"n_train": prepared.n_train, "n_test": prepared.n_test, "image_size": prepared.image_size}
        for name, (shape, dtype) in _expected(meta).items():
            if loaded[name].shape != shape or loaded[name].dtype != dtype:
                raise ValueError(f"{name}.npy holds {loaded[name].dtype}{list(loaded[name].shape)}")
        for name in ("train_y", "test_y"):
            labels = loaded[name]
            if labels.size and (labels.min() < 0 or labels.max() >= len(prepared.classes)):
                raise ValueError(f"{name}.npy has labels outside 0..{len(prepared.classes) - 1}")
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(
            f"decoded data in {prepared.path} is unusable ({exc}); delete that folder and it will be "
            f"decoded again from the snapshot on the next run"
        ) from None
    return DecodedArrays(
        train_x=loaded["train_x"], train_y=loaded["train_y"], test_x=loaded["test_x"], test_y=loaded["test_y"]
    )


def _sweep_stale(decoded_dir: Path) -> None:
    cutoff = time.time() - _STALE_SECONDS
    for entry in os.scandir(decoded_dir):
        if entry.name.startswith(".tmp-") and entry.is_dir(follow_symlinks=False):
            try:
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    shutil.rmtree(entry.path, ignore_errors=True)
            except OSError:
                continue
