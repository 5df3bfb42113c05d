"""Decode a snapshot once into the uint8 cache every cell of its work group reads."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from .._text import shown
from ..errors import DataError, SnapshotRejected, SourceError
from ..settings import TaskSpec
from ..types import SnapshotInfo
from ._cache import ChecksumMismatch, OutdatedEntry, file_checksums, read_cached, write_cache
from ._cache_key import DECODE_VERSION, cache_key
from ._decode import DEFAULT_MAX_IMAGE_PIXELS
from ._layout import ScannedSnapshot, scan_snapshot
from ._prepared import DecodedArrays, PreparedData
from ._select import Selection, protocol_order, select_and_decode
from ._verdict import label, recall, rejected, remember, where

__all__ = ["prepare_snapshot"]

log = logging.getLogger(__name__)

# What a broken cache folder can throw at us while being read back.
_UNUSABLE = (OSError, ValueError, KeyError, TypeError, EOFError)


def prepare_snapshot(
    snapshot: SnapshotInfo,
    task: TaskSpec,
    image_size: int,
    *,
    cache_dir: Path,
    workers: int = 2,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> PreparedData:
    """Return the decoded cache of `snapshot` under the task's protocol, decoding it if needed.

    The cache lives in `cache_dir/decoded/<cache_key>/` (`cache_dir` is `state_dir/cache`). A
    complete cache whose checksums hold is returned without opening any image; an unusable or
    damaged one is deleted and rebuilt. Undecodable files, and images over `max_image_pixels`
    (`limits.max_image_pixels`), are skipped and listed in `skipped`. Raises SnapshotRejected
    (reason: missing_test_split, missing_train_split, too_few_classes, test_class_not_in_train,
    empty_class, empty_test_split) when the snapshot cannot make a classification task,
    SourceError when its files vanish while it is decoded (it is tried again next time), and
    DataError when the cache cannot be written.
    """
    key = cache_key(snapshot.digest, task, image_size)
    decoded_dir = Path(cache_dir) / "decoded"
    verdict = decoded_dir / f"{key}.rejected.json"
    # Rejected before under this very protocol: the same content gets the same answer, without
    # decoding it again on every poll, worded for this snapshot. (Another protocol has another key.)
    known = recall(verdict, snapshot, max_image_pixels)
    if known is not None:
        raise known
    try:
        return _prepare(snapshot, task, image_size, key, decoded_dir, workers, max_image_pixels)
    except SnapshotRejected as exc:
        remember(verdict, exc, snapshot, max_image_pixels)
        raise


def _open_cached(
    snapshot: SnapshotInfo, folder: Path, key: str
) -> tuple[PreparedData | None, dict[str, str] | None]:
    """(the entry, None) if it is sound; else delete it: (None, the checksums of an entry of an
    earlier release, which had none of its own, to compare the fresh decode against)."""
    previous: dict[str, str] | None = None
    try:
        return read_cached(folder, key), None
    except OutdatedEntry as exc:
        # Rebuilt rather than given a checksum now: an entry that has none may be damaged
        # already, and hashing it would vouch for whatever bytes it holds. (An entry without
        # its images' paths is rebuilt too: decoding again is what finds them.)
        log.info(
            "decoded cache %s of snapshot %s %s; decoding the snapshot again once so that it is complete",
            folder,
            label(snapshot),
            exc,
        )
        try:
            previous = file_checksums(folder)
        except OSError:
            previous = None
    except ChecksumMismatch as exc:
        log.warning(
            "decoded cache %s of snapshot %s failed its checksum (%s); deleting it and decoding the "
            "snapshot again",
            folder,
            label(snapshot),
            exc,
        )
    except _UNUSABLE as exc:
        log.warning(
            "decoded cache %s is unusable (%s); deleting and decoding %s again", folder, exc, label(snapshot)
        )
    shutil.rmtree(folder, ignore_errors=True)
    return None, previous


def _prepare(
    snapshot: SnapshotInfo,
    task: TaskSpec,
    image_size: int,
    key: str,
    decoded_dir: Path,
    workers: int,
    max_image_pixels: int,
) -> PreparedData:
    folder = decoded_dir / key
    previous: dict[str, str] | None = None
    if folder.exists():
        cached, previous = _open_cached(snapshot, folder, key)
        if cached is not None:
            return cached

    scanned = scan_snapshot(snapshot, task.test_fraction)
    classes = _check_structure(snapshot, scanned)
    train = {name: Selection(protocol_order(scanned.train[name]), task.train_per_class) for name in classes}
    test = {
        name: Selection(protocol_order(files), task.test_per_class) for name, files in scanned.test.items()
    }
    try:
        skipped = select_and_decode(
            snapshot.root, [*train.values(), *test.values()], image_size, workers, max_image_pixels
        )
    except FileNotFoundError as exc:
        raise SourceError(
            f"{where(snapshot)}: {shown(exc.filename or '(a file)')} vanished while the snapshot was "
            f"decoded (it was removed or replaced meanwhile); it is read again on the next run"
        ) from None

    empty = [name for name in classes if not train[name].kept]
    if empty:
        raise rejected(
            "empty_class",
            snapshot,
            f": train class(es) {_names(empty)} have no decodable image ({len(skipped)} file(s) could "
            f"not be decoded); add images or remove the folder(s)",
        )
    train_selections = [train[name] for name in classes]
    test_selections = [test[name] if name in test else Selection([], 0) for name in classes]
    arrays = DecodedArrays(*_stack(train_selections, image_size), *_stack(test_selections, image_size))
    if len(arrays.test_y) == 0:
        raise rejected(
            "empty_test_split",
            snapshot,
            " has no decodable test image; add images under test/<class>/ (or, for a hashed split, "
            "more images per class)",
        )
    meta: dict[str, Any] = {
        "protocol": DECODE_VERSION,
        "key": key,
        "snapshot": snapshot.snapshot,
        "snapshot_digest": snapshot.digest,
        "layout": scanned.layout,
        "image_size": image_size,
        "classes": list(classes),
        "n_train": len(arrays.train_y),
        "n_test": len(arrays.test_y),
        "train_counts": {name: len(train[name].kept) for name in classes},
        "test_counts": {name: len(test[name].kept) if name in test else 0 for name in classes},
        "skipped": [list(item) for item in skipped],
        "max_image_pixels": max_image_pixels,
        # Each image's relative path, in array order: what a derived dataset seeds its corruption by.
        "paths": {
            "train": [rel for selection in train_selections for rel, _ in selection.kept],
            "test": [rel for selection in test_selections for rel, _ in selection.kept],
        },
    }
    try:
        folder = write_cache(decoded_dir, key, arrays, meta)
    except OSError as exc:
        raise DataError(
            f"cannot write decoded data of snapshot {label(snapshot)} under {decoded_dir}: "
            f"{exc.strerror or exc}; check free space and permissions of state_dir"
        ) from None
    log.info(
        "decoded %s: %d train, %d test images of %d classes (%d skipped) into %s",
        label(snapshot),
        meta["n_train"],
        meta["n_test"],
        len(classes),
        len(skipped),
        folder,
    )
    prepared = read_cached(folder, key)
    if previous is not None and previous != dict(prepared.checksums):
        changed = ", ".join(name for name, digest in prepared.checksums if previous.get(name) != digest)
        log.warning(
            "snapshot %s: the decoded data an earlier release cached for it differed from a fresh decode "
            "(%s): damaged on disk, or decoded by another Pillow version. Results stored for this "
            "snapshot before now may have trained on that data: they are keyed by the snapshot's "
            "content, not by its decode, and stay in use",
            label(snapshot),
            changed,
        )
    return prepared


def _names(classes: list[str]) -> str:
    return ", ".join(shown(name) for name in classes)


def _check_structure(snapshot: SnapshotInfo, scanned: ScannedSnapshot) -> tuple[str, ...]:
    """Reject what no amount of decoding can fix; return the sorted train classes."""
    classes = tuple(sorted(scanned.train))
    if len(classes) < 2:
        shape = "train/<class>/" if scanned.layout == "split" else "<class>/"
        raise rejected(
            "too_few_classes",
            snapshot,
            f" has {len(classes)} class folder(s) ({_names(list(classes)) or 'none'}); a classification "
            f"task needs at least 2: put each class's images in its own {shape} folder",
        )
    unknown = sorted(set(scanned.test) - set(classes))
    if unknown:
        raise rejected(
            "test_class_not_in_train",
            snapshot,
            f": test class(es) {_names(unknown)} have no train/ folder; add train/<class>/ for them or "
            f"remove them from the test split",
        )
    empty = [name for name in classes if not scanned.train[name]]
    if empty:
        raise rejected(
            "empty_class",
            snapshot,
            f": train class(es) {_names(empty)} have no image files (png, jpg, jpeg, bmp, webp) in the "
            f"train split; add images or remove the folder(s)",
        )
    if not any(scanned.test.values()):
        raise rejected(
            "empty_test_split",
            snapshot,
            " has no test images; add images under test/<class>/ (or, for a hashed split, more "
            "images per class)",
        )
    return classes


def _stack(selections: list[Selection], image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate kept images class by class; labels are the class indices."""
    images = [image for selection in selections for _, image in selection.kept]
    labels = [index for index, selection in enumerate(selections) for _ in selection.kept]
    x = np.stack(images) if images else np.zeros((0, 3, image_size, image_size), dtype=np.uint8)
    return x, np.asarray(labels, dtype=np.int64)
