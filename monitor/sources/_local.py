"""List the snapshots of a local directory source (a path or a `file://` URL)."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .._text import shown
from ..errors import SourceError
from ..settings import DatasetSpec
from ._candidate import PARTIAL_SUFFIXES, SnapshotCandidate, split_archive_name
from ._digest import is_hidden

__all__ = ["list_local", "local_path"]


def local_path(source: str) -> Path:
    """The directory a local source names (`file:///srv/x` and `/srv/x` are the same place)."""
    if source.startswith("file://"):
        return Path(unquote(urlsplit(source).path))
    return Path(source)


def list_local(task: str, dataset: DatasetSpec) -> list[SnapshotCandidate]:
    """Return the complete snapshots of a local source, sorted by id.

    Every subdirectory and every .tar/.tar.gz/.tgz/.zip is a snapshot. A directory counts once it
    holds `dataset.ready_marker` (always, when the marker is None). Hidden names (`.x`, `_x`)
    and partial files (`*.tmp`, `*.part`) are ignored. One id found twice (a folder and an
    archive, or two archive kinds) is an error: which one is meant cannot be guessed.
    """
    root = local_path(dataset.location).absolute()
    where = f"dataset {task}/{dataset.name} at {dataset.location}"
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except FileNotFoundError:
        raise SourceError(
            f"cannot list snapshots of {where}: no such directory; "
            f"check tasks[].datasets[].source (create the directory or fix the path)"
        ) from None
    except NotADirectoryError:
        raise SourceError(
            f"cannot list snapshots of {where}: not a directory; "
            f"check tasks[].datasets[].source (it must be the folder that holds the snapshots)"
        ) from None
    except OSError as exc:
        raise SourceError(
            f"cannot list snapshots of {where}: {exc.strerror or exc}; check the directory's permissions"
        ) from None

    seen: dict[str, Path] = {}
    found: list[SnapshotCandidate] = []
    for entry in entries:
        name = entry.name
        if is_hidden(name) or name.lower().endswith(PARTIAL_SUFFIXES):
            continue
        path = root / name
        try:
            if entry.is_dir():
                snapshot_id, kind = name, "directory"
            elif entry.is_file() and (split := split_archive_name(name)) is not None:
                snapshot_id, kind = split[0], "archive"
            else:
                continue
            if snapshot_id in seen:
                raise SourceError(
                    f"cannot list snapshots of {where}: snapshot id {snapshot_id!r} is ambiguous, both "
                    f"{shown(seen[snapshot_id])} and {shown(path)} exist; remove or rename one of them"
                )
            seen[snapshot_id] = path
            if kind == "directory":
                if dataset.ready_marker is None:
                    timestamp = entry.stat().st_mtime
                else:
                    marker = path / dataset.ready_marker
                    if not marker.is_file():
                        continue  # still being written: the writer drops the marker last
                    timestamp = marker.stat().st_mtime
                found.append(_candidate(task, dataset, snapshot_id, path, "directory", timestamp))
            else:
                found.append(_candidate(task, dataset, snapshot_id, path, "archive", entry.stat().st_mtime))
        except FileNotFoundError:
            continue  # removed while we listed: it is simply not there any more
    found.sort(key=lambda c: c.snapshot)
    return found


def _candidate(
    task: str, dataset: DatasetSpec, snapshot_id: str, path: Path, kind: str, timestamp: float
) -> SnapshotCandidate:
    return SnapshotCandidate(
        task=task,
        dataset=dataset.name,
        snapshot=snapshot_id,
        location=str(path),
        kind="directory" if kind == "directory" else "archive",
        sha256=None,
        timestamp=timestamp,
        source=dataset.location,
    )
