"""The decoded-data cache folder: `<cache_dir>/decoded/<key>/` with four .npy files and meta.json.

meta.json also lists each image's path within its snapshot, in array order (`image_paths`): a
derived dataset draws each image's corruption from it.

A folder is published whole (written under a temp name, then `os.replace`), and meta.json is
written last inside it, so a folder that exists is complete unless something outside damaged it.
meta.json carries the sha256 of each .npy file, taken when it was written. Opening a hit for a
run checks meta.json, every .npy header and length, and every checksum (streamed: hashing the
cache costs about a second per GB, decoding it again costs minutes), so damage that keeps a
file's size (zeroed pixels, labels out of range) is found before anything trains on it; the
worker checks the checksums again as it loads the arrays.
"""

from __future__ import annotations

import hashlib
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

__all__ = [
    "ChecksumMismatch",
    "MissingChecksum",
    "MissingPaths",
    "OutdatedEntry",
    "file_checksums",
    "image_paths",
    "load_arrays",
    "read_cached",
    "write_cache",
]

# A temp folder this old was left by a crash (decoding one snapshot takes seconds to minutes).
_STALE_SECONDS = 6 * 3600
_CHECKSUM = "sha256"  # hashlib's fastest here (SHA extensions); a few MB to a few hundred per entry


class ChecksumMismatch(ValueError):
    """A cache file's content is not what was written: it changed on disk since it was decoded."""


class OutdatedEntry(ValueError):
    """A cache folder written by an earlier release, without something every entry now carries."""


class MissingChecksum(OutdatedEntry):
    """A cache folder written before entries carried checksums: its content cannot be vouched for."""


class MissingPaths(OutdatedEntry):
    """A cache folder written before entries listed their images' paths."""


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, _CHECKSUM).hexdigest()  # streamed in chunks


def file_checksums(folder: Path) -> dict[str, str]:
    """The checksum of each .npy file of a cache folder, by file name (OSError if one is missing)."""
    return {f"{name}.npy": _sha256(folder / f"{name}.npy") for name in ARRAY_FILES}


def _recorded_checksums(meta: dict[str, Any]) -> dict[str, str]:
    recorded = meta.get("checksum")
    if recorded is None:
        raise MissingChecksum("has no checksum (written by an earlier release)")
    files = recorded.get("files") if isinstance(recorded, dict) else None
    if (
        not isinstance(recorded, dict)
        or recorded.get("algorithm") != _CHECKSUM
        or not isinstance(files, dict)
        or set(files) != {f"{name}.npy" for name in ARRAY_FILES}
        or not all(isinstance(v, str) for v in files.values())
    ):
        raise ValueError("meta.json: unknown checksum layout")
    return dict(files)


def _verify(folder: Path, expected: dict[str, str]) -> None:
    for name, digest in sorted(expected.items()):
        if _sha256(folder / name) != digest:
            raise ChecksumMismatch(
                f"{name} does not match the checksum written with it (it changed on disk after it was decoded)"
            )


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
    checksums = _recorded_checksums(meta)
    _check_paths(meta)
    _verify(folder, checksums)
    return PreparedData(
        key=key,
        path=folder,
        classes=tuple(classes),
        n_train=int(meta["n_train"]),
        n_test=int(meta["n_test"]),
        image_size=int(meta["image_size"]),
        skipped=tuple((path, reason) for path, reason in skipped),
        layout=layout,
        checksums=tuple(sorted(checksums.items())),
    )


def _check_paths(meta: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The (train, test) image paths meta.json lists, one per image; ValueError if they do not fit."""
    paths = meta.get("paths")
    if paths is None:
        raise MissingPaths("does not list its images' paths (written by an earlier release)")
    if not isinstance(paths, dict) or set(paths) != {"train", "test"}:
        raise ValueError("meta.json: paths must hold a train and a test list")
    for split, count in (("train", int(meta["n_train"])), ("test", int(meta["n_test"]))):
        listed = paths[split]
        if (
            not isinstance(listed, list)
            or not all(isinstance(p, str) for p in listed)
            or len(listed) != count
        ):
            raise ValueError(f"meta.json: paths.{split} must list the {count} {split} images' paths")
    return list(paths["train"]), list(paths["test"])


def image_paths(prepared: PreparedData) -> tuple[list[str], list[str]]:
    """Each image's path within its snapshot, (train, test), in the order of the arrays.

    Raises DataError naming the folder when meta.json cannot be read or does not fit the entry.
    """
    try:
        meta = json.loads((prepared.path / "meta.json").read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or (int(meta["n_train"]), int(meta["n_test"])) != (
            prepared.n_train,
            prepared.n_test,
        ):
            raise ValueError("meta.json does not describe this entry")
        return _check_paths(meta)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(
            f"decoded data in {prepared.path} is unusable ({exc}); delete that folder and it will be "
            f"decoded again from the snapshot on the next run"
        ) from None


def write_cache(decoded_dir: Path, key: str, arrays: DecodedArrays, meta: dict[str, Any]) -> Path:
    """Publish a complete cache folder atomically and return it (another writer's copy if it won)."""
    decoded_dir.mkdir(parents=True, exist_ok=True)
    _sweep_stale(decoded_dir)
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{key[:16]}-", dir=decoded_dir))
    final = decoded_dir / key
    try:
        for name in ARRAY_FILES:
            np.save(staging / f"{name}.npy", getattr(arrays, name), allow_pickle=False)
        # Hashed as written to disk (read back from the page cache): what a reader will check.
        meta = {**meta, "checksum": {"algorithm": _CHECKSUM, "files": file_checksums(staging)}}
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

    Raises DataError naming the folder when a file is missing, corrupt, does not match the
    checksum it was prepared with, or does not match the counts in `prepared`.
    """
    try:
        # Checked again here: the worker may load the arrays long after the run opened the cache.
        _verify(prepared.path, dict(prepared.checksums))
    except ChecksumMismatch as exc:
        raise DataError(
            f"decoded data in {prepared.path} is unusable ({exc}); the next run decodes the snapshot again"
        ) from None
    except OSError:
        pass  # a missing file: reported below, by the load that fails on it
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
