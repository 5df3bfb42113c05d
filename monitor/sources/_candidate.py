"""What a listing finds: one complete snapshot of a dataset, before it is materialised."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["ARCHIVE_SUFFIXES", "PARTIAL_SUFFIXES", "CandidateKind", "SnapshotCandidate", "split_archive_name"]

# directory/archive: local; remote: an archive in an HTTP manifest; prefix/object: a folder or an
# archive on an fsspec filesystem (s3://, gs://, …)
CandidateKind = Literal["directory", "archive", "remote", "prefix", "object"]

# Longest first, so "x.tar.gz" is an id "x", not "x.tar".
ARCHIVE_SUFFIXES: tuple[str, ...] = (".tar.gz", ".tgz", ".tar", ".zip")
# Writers that follow the write-then-rename convention leave these while a file is incomplete.
PARTIAL_SUFFIXES: tuple[str, ...] = (".tmp", ".part")


def split_archive_name(name: str) -> tuple[str, str] | None:
    """Split "2026-11-29T06.tar.gz" into ("2026-11-29T06", ".tar.gz"); None if not an archive name."""
    lowered = name.lower()
    for suffix in ARCHIVE_SUFFIXES:
        if lowered.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], suffix
    return None


@dataclass(frozen=True)
class SnapshotCandidate:
    """A complete snapshot found in a dataset's source, not yet read or extracted."""

    task: str
    dataset: str
    snapshot: str  # the snapshot id: its name without archive suffix; ids sort lexicographically
    location: str  # absolute local path, or the (absolute) URL of a remote archive
    kind: CandidateKind
    sha256: str | None  # from an HTTP manifest; None for local snapshots
    timestamp: float  # when the snapshot became complete (marker/archive mtime, or manifest time)
    source: str = ""  # the dataset's configured source, credentials removed: for messages only
    # prefix/object: the object store's identity of the snapshot (ETag, version, size of the
    # archive, or of the folder's ready marker): a change of it is a new snapshot
    identity: str | None = None
    # prefix: False for a folder older than the newest complete snapshot, whose ready marker is
    # checked only when it is fetched (a poll costs one request per snapshot otherwise)
    verified: bool = True
    ready_marker: str | None = None
    # what opens the location again (fsspec storage_options, HTTP headers): secrets, never shown
    storage_options: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    headers: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
