"""Extracted archive snapshots, `state_dir/snapshots/<digest>/`: extracted once, reused while in
use, removed when nothing uses them any more.

An extraction can be as large as `limits.max_archive_bytes`, so none is kept for nothing:

- every materialize that returns an extracted folder marks it used (sets its mtime to now);
- a folder that no materialize has used for `unused_retention_seconds` (a superseded snapshot,
  or a rejected one that is no longer the newest) is removed by the next materialize;
- `release_snapshot(info)` removes the extraction of a snapshot its caller has just rejected.

Nothing else is ever removed: a directory snapshot belongs to its producer, and stored results
need no extracted images (cells train on the decoded cache; a later decode extracts again).

Concurrent runs (the daemon and a `run-once`, several daemons on one state_dir): a lock file
serialises "is it there? mark it used" against "is it unused? move it away", so a folder a
materialize has just returned is never pruned. Removal first renames the folder out of the way
in one atomic step, then deletes it: a process still decoding from it sees all its files vanish
at once (the data layer turns that into a retry), never a half-deleted snapshot that would be
decoded as if it were complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from ..types import SnapshotInfo
from ._extract import extract_archive
from ._fs import publish_dir, staging_dir
from ._limits import SnapshotLimits

try:
    import fcntl
except ImportError:  # Windows: no flock; the retention window alone protects a folder in use
    fcntl = None  # type: ignore[assignment]

__all__ = ["extracted", "prune_unused", "release_snapshot", "reuse"]

# Prefix of a folder being removed: `sweep_stale` deletes leftovers of a removal that crashed.
_REMOVING = ".tmp-removing-"


@contextlib.contextmanager
def _locked(snapshots_dir: Path) -> Iterator[None]:
    lock = snapshots_dir.parent / "cache" / "snapshots.lock"  # beside the digest memo, not in snapshots/
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+b") as fh:
        if fcntl is not None:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)  # released when the file is closed
        yield


def reuse(snapshots_dir: Path, digest: str) -> Path | None:
    """`snapshots_dir/<digest>` marked used, if it exists; None if it must be extracted first."""
    folder = snapshots_dir / digest
    with _locked(snapshots_dir):
        if not folder.is_dir():
            return None
        os.utime(folder)
    return folder


def extracted(
    archive: Path, suffix: str, digest: str, snapshots_dir: Path, label: str, limits: SnapshotLimits
) -> Path:
    """Return `snapshots_dir/<digest>` marked used, extracting the archive there first if needed."""
    found = reuse(snapshots_dir, digest)
    if found is not None:
        return found
    staging = staging_dir(snapshots_dir, digest)
    try:
        extract_archive(archive, suffix, staging, label=label, limits=limits)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    final = publish_dir(staging, final=snapshots_dir / digest)
    with _locked(snapshots_dir), contextlib.suppress(FileNotFoundError):
        os.utime(final)
    return final


def prune_unused(snapshots_dir: Path, *, keep: str, retention_seconds: float) -> None:
    """Remove the extracted folders (other than `keep`) that nothing has used for the retention time."""
    try:
        entries = [e for e in os.scandir(snapshots_dir) if not e.name.startswith(".") and e.name != keep]
    except OSError:
        return  # nothing extracted yet, or unreadable: pruning is housekeeping, never an error
    cutoff = time.time() - retention_seconds
    for entry in entries:
        try:
            if not entry.is_dir(follow_symlinks=False) or entry.stat().st_mtime >= cutoff:
                continue
        except OSError:
            continue
        _remove(snapshots_dir, entry.name, unused_since=cutoff)


def release_snapshot(info: SnapshotInfo, *, state_dir: Path) -> None:
    """Remove the extracted copy of a snapshot the caller has rejected; a no-op for a directory snapshot.

    The rejection itself is remembered by the data layer (by content and protocol), so the same
    snapshot is not decoded again; if it is listed again it is extracted again, which costs time,
    never disk. A directory snapshot is the producer's folder and is never touched.
    """
    snapshots_dir = Path(state_dir) / "snapshots"
    folder = snapshots_dir / info.digest
    root = Path(info.root)
    if root != folder and folder not in root.parents:
        return
    _remove(snapshots_dir, info.digest, unused_since=None)


def _remove(snapshots_dir: Path, name: str, *, unused_since: float | None) -> None:
    folder = snapshots_dir / name
    with _locked(snapshots_dir):
        try:
            # Checked again under the lock: a materialize may have marked it used since the scan.
            if unused_since is not None and folder.stat().st_mtime >= unused_since:
                return
            away = Path(tempfile.mkdtemp(prefix=f"{_REMOVING}{name[:16]}-", dir=snapshots_dir))
        except OSError:
            return
        try:
            os.replace(folder, away / name)  # one atomic step: the folder is gone for every reader
        except OSError:
            away.rmdir()
            return
    shutil.rmtree(away, ignore_errors=True)
