"""Find a snapshot's classes and its train/test files, before anything is decoded.

Two layouts (DESIGN.md §3.3):

    split:   train/<class>/<image> + test/<class>/<image>   (val/ is accepted when test/ is absent)
    hashed:  <class>/<image>, split by a hash of "<class>/<image>": the same file always lands in
             the same split, whatever else the snapshot holds

Images may sit in subfolders of a class folder. Non-image files and hidden entries (`.x`, `_x`,
the Hadoop convention: `_SUCCESS` is not a class) are ignored. Paths are relative to the
snapshot root, in posix form.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from .._text import shown
from ..errors import SourceError
from ..types import SnapshotInfo
from ._prepared import Layout
from ._verdict import label, rejected

__all__ = ["IMAGE_EXTENSIONS", "ScannedSnapshot", "in_test_split", "scan_snapshot"]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp"})
_TEST_NAMES = ("test", "val")  # in order of preference


@dataclass(frozen=True)
class ScannedSnapshot:
    """The files of each class in each split, as found on disk (sorted relative paths)."""

    layout: Layout
    train: dict[str, list[str]] = field(default_factory=dict)  # class -> relative paths
    test: dict[str, list[str]] = field(default_factory=dict)


def in_test_split(relpath: str, test_fraction: float) -> bool:
    """The hashed layout's split: a file is in test iff its hash, as a fraction of 2**64, is below."""
    return int(hashlib.sha256(relpath.encode()).hexdigest()[:16], 16) / 2**64 < test_fraction


def _raise(exc: OSError) -> None:
    raise exc


def _hidden(name: str) -> bool:
    return name.startswith((".", "_"))


def _subdirs(folder: Path) -> list[str]:
    # Linked folders are not followed: the snapshot digest does not cover what they point at.
    return sorted(
        e.name for e in os.scandir(folder) if e.is_dir(follow_symlinks=False) and not _hidden(e.name)
    )


def _images(root: Path, folder: Path) -> list[str]:
    found: list[str] = []
    # onerror: an unreadable subfolder must fail loudly, not silently shrink a class.
    for dirpath, dirnames, filenames in os.walk(folder, onerror=_raise):
        dirnames[:] = [d for d in dirnames if not _hidden(d)]
        base = Path(dirpath)
        found.extend(
            (base / name).relative_to(root).as_posix()
            for name in filenames
            if not _hidden(name) and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
        )
    return sorted(found)


def scan_snapshot(snapshot: SnapshotInfo, test_fraction: float) -> ScannedSnapshot:
    """List the snapshot's classes and files per split; reject layouts that cannot be used."""
    try:
        return _scan(snapshot, test_fraction)
    except OSError as exc:
        raise SourceError(
            f"snapshot {label(snapshot)}: cannot read {shown(exc.filename or snapshot.root)}: "
            f"{exc.strerror or exc}; check that the snapshot folder still exists and is readable"
        ) from None


def _scan(snapshot: SnapshotInfo, test_fraction: float) -> ScannedSnapshot:
    root = snapshot.root
    top = _subdirs(root)
    if "train" in top:
        test_name = next((name for name in _TEST_NAMES if name in top), None)
        if test_name is None:
            raise rejected(
                "missing_test_split",
                snapshot,
                " has train/ but neither test/ nor val/; add a test/<class>/ split, or drop the "
                "train/ level so the snapshot is split by hash",
            )
        train_dir, test_dir = root / "train", root / test_name
        train = {name: _images(root, train_dir / name) for name in _subdirs(train_dir)}
        test = {name: files for name in _subdirs(test_dir) if (files := _images(root, test_dir / name))}
        return ScannedSnapshot("split", train, test)
    orphan = next((name for name in _TEST_NAMES if name in top), None)
    if orphan is not None:
        raise rejected(
            "missing_train_split",
            snapshot,
            f" has {orphan}/ but no train/; add train/<class>/ beside it, or put class folders at "
            f"the top level to have the snapshot split by hash",
        )
    scanned = ScannedSnapshot("hashed")
    for name in top:
        files = _images(root, root / name)
        scanned.train[name] = [f for f in files if not in_test_split(f, test_fraction)]
        held_out = [f for f in files if in_test_split(f, test_fraction)]
        if held_out:
            scanned.test[name] = held_out
    return scanned
