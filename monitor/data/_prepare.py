"""Decode a snapshot once into the uint8 cache every cell of its work group reads."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, SnapshotRejected
from ..settings import TaskSpec
from ..types import SnapshotInfo
from ._cache import read_cached, write_cache
from ._key import PROTOCOL_VERSION, cache_key
from ._layout import ScannedSnapshot, scan_snapshot
from ._prepared import DecodedArrays, PreparedData
from ._select import Selection, protocol_order, select_and_decode

__all__ = ["prepare_snapshot"]

log = logging.getLogger(__name__)

# What a broken cache folder can throw at us while being read back.
_UNUSABLE = (OSError, ValueError, KeyError, TypeError, EOFError)


def prepare_snapshot(
    snapshot: SnapshotInfo, task: TaskSpec, image_size: int, *, cache_dir: Path, workers: int = 2
) -> PreparedData:
    """Return the decoded cache of `snapshot` under the task's protocol, decoding it if needed.

    The cache lives in `cache_dir/decoded/<cache_key>/` (`cache_dir` is `state_dir/cache`). A
    complete cache is returned without opening any image; an unusable one is deleted and
    rebuilt. Undecodable files are skipped and listed in `skipped`. Raises SnapshotRejected
    (reason: missing_test_split, missing_train_split, too_few_classes, test_class_not_in_train,
    empty_class, empty_test_split) when the snapshot cannot make a classification task, and
    DataError when the cache cannot be written.
    """
    key = cache_key(snapshot.digest, task, image_size)
    decoded_dir = Path(cache_dir) / "decoded"
    verdict = decoded_dir / f"{key}.rejected.json"
    if verdict.exists():
        # Rejected before under this very protocol: the same content gets the same answer,
        # without decoding it again on every poll. (Another protocol has another key.)
        try:
            known = json.loads(verdict.read_text(encoding="utf-8"))
            raise SnapshotRejected(str(known["reason"]), str(known["message"]))
        except (OSError, ValueError, KeyError, TypeError):
            verdict.unlink(missing_ok=True)
    try:
        return _prepare(snapshot, task, image_size, key, decoded_dir, workers)
    except SnapshotRejected as exc:
        _remember(verdict, exc)
        raise


def _remember(verdict: Path, exc: SnapshotRejected) -> None:
    try:
        verdict.parent.mkdir(parents=True, exist_ok=True)
        partial = verdict.with_suffix(".tmp")
        partial.write_text(json.dumps({"reason": exc.reason, "message": str(exc)}), encoding="utf-8")
        os.replace(partial, verdict)
    except OSError as error:  # only an optimisation: the next run decodes again
        log.warning("cannot record the rejection of a snapshot in %s: %s", verdict, error)


def _prepare(
    snapshot: SnapshotInfo, task: TaskSpec, image_size: int, key: str, decoded_dir: Path, workers: int
) -> PreparedData:
    folder = decoded_dir / key
    if folder.exists():
        try:
            return read_cached(folder, key)
        except _UNUSABLE as exc:
            log.warning(
                "decoded cache %s is unusable (%s); deleting and decoding %s again",
                folder,
                exc,
                _label(snapshot),
            )
            shutil.rmtree(folder, ignore_errors=True)

    scanned = scan_snapshot(snapshot, task.test_fraction)
    classes = _check_structure(snapshot, scanned)
    train = {name: Selection(protocol_order(scanned.train[name]), task.train_per_class) for name in classes}
    test = {
        name: Selection(protocol_order(files), task.test_per_class) for name, files in scanned.test.items()
    }
    skipped = select_and_decode(snapshot.root, [*train.values(), *test.values()], image_size, workers)

    empty = [name for name in classes if not train[name].kept]
    if empty:
        raise SnapshotRejected(
            "empty_class",
            f"snapshot {_label(snapshot)} at {snapshot.root}: train class(es) {', '.join(empty)} have no "
            f"decodable image ({len(skipped)} file(s) could not be decoded); add images or remove "
            f"the folder(s)",
        )
    arrays = DecodedArrays(
        *_stack([train[name] for name in classes], image_size),
        *_stack([test[name] if name in test else Selection([], 0) for name in classes], image_size),
    )
    if len(arrays.test_y) == 0:
        raise SnapshotRejected(
            "empty_test_split",
            f"snapshot {_label(snapshot)} at {snapshot.root} has no decodable test image; "
            f"add images under test/<class>/ (or, for a hashed split, more images per class)",
        )
    meta: dict[str, Any] = {
        "protocol": PROTOCOL_VERSION,
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
    }
    try:
        folder = write_cache(decoded_dir, key, arrays, meta)
    except OSError as exc:
        raise DataError(
            f"cannot write decoded data of snapshot {_label(snapshot)} under {decoded_dir}: "
            f"{exc.strerror or exc}; check free space and permissions of state_dir"
        ) from None
    log.info(
        "decoded %s: %d train, %d test images of %d classes (%d skipped) into %s",
        _label(snapshot),
        meta["n_train"],
        meta["n_test"],
        len(classes),
        len(skipped),
        folder,
    )
    return read_cached(folder, key)


def _label(snapshot: SnapshotInfo) -> str:
    return f"{snapshot.task}/{snapshot.dataset}/{snapshot.snapshot}"


def _check_structure(snapshot: SnapshotInfo, scanned: ScannedSnapshot) -> tuple[str, ...]:
    """Reject what no amount of decoding can fix; return the sorted train classes."""
    classes = tuple(sorted(scanned.train))
    where = f"snapshot {_label(snapshot)} at {snapshot.root}"
    if len(classes) < 2:
        shape = "train/<class>/" if scanned.layout == "split" else "<class>/"
        raise SnapshotRejected(
            "too_few_classes",
            f"{where} has {len(classes)} class folder(s) ({', '.join(classes) or 'none'}); a classification "
            f"task needs at least 2: put each class's images in its own {shape} folder",
        )
    unknown = sorted(set(scanned.test) - set(classes))
    if unknown:
        raise SnapshotRejected(
            "test_class_not_in_train",
            f"{where}: test class(es) {', '.join(unknown)} have no train/ folder; add train/<class>/ for "
            f"them or remove them from the test split",
        )
    empty = [name for name in classes if not scanned.train[name]]
    if empty:
        raise SnapshotRejected(
            "empty_class",
            f"{where}: train class(es) {', '.join(empty)} have no image files (png, jpg, jpeg, bmp, webp) "
            f"in the train split; add images or remove the folder(s)",
        )
    if not any(scanned.test.values()):
        raise SnapshotRejected(
            "empty_test_split",
            f"{where} has no test images; add images under test/<class>/ (or, for a hashed split, "
            f"more images per class)",
        )
    return classes


def _stack(selections: list[Selection], image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate kept images class by class; labels are the class indices."""
    images = [image for selection in selections for _, image in selection.kept]
    labels = [index for index, selection in enumerate(selections) for _ in selection.kept]
    x = np.stack(images) if images else np.zeros((0, 3, image_size, image_size), dtype=np.uint8)
    return x, np.asarray(labels, dtype=np.int64)
