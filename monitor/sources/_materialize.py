"""Turn a listed snapshot into a local folder with a content digest (`SnapshotInfo`)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from .._text import shown
from ..errors import SourceError
from ..settings import redact_url
from ..types import SnapshotInfo
from ._candidate import SnapshotCandidate, split_archive_name
from ._digest import directory_digest, file_digest, is_hidden
from ._download import download
from ._extracted import extracted, prune_unused, reuse
from ._limits import DEFAULT_LIMITS, SnapshotLimits
from ._memo import DigestMemo
from ._object_store import fetch_object_snapshot

__all__ = ["materialize"]

# A lone folder with one of these names is a split, not a wrapper around the snapshot.
_SPLIT_NAMES = frozenset({"train", "test", "val"})


def materialize(
    candidate: SnapshotCandidate,
    *,
    state_dir: Path,
    client: httpx.Client | None = None,
    limits: SnapshotLimits = DEFAULT_LIMITS,
) -> SnapshotInfo:
    """Make a snapshot available as a local folder and compute its content digest.

    A directory is used in place (digest over its image files, memoised). An archive is hashed
    (memoised) and extracted safely, once, into `state_dir/snapshots/<digest>/`. A remote archive
    is downloaded (size-capped), checked against the manifest's sha256, then extracted the same
    way; when that folder already exists nothing is downloaded. A snapshot on an object store
    (a prefix or an archive object) is fetched once the same way (see `_object_store`). If everything sits in one
    top-level folder (a tarred folder), `root` is that folder. Extracted folders that no call
    has used for `limits.unused_retention_seconds` are removed on the way (see `_extracted`).

    Raises SnapshotRejected for a bad snapshot (bad_archive, checksum_mismatch, too_large) and
    SourceError when it cannot be read right now.
    """
    state_dir = Path(state_dir)
    memo = DigestMemo(state_dir)
    timestamp = candidate.timestamp
    label = f"{candidate.task}/{candidate.dataset}/{shown(candidate.snapshot)}"
    snapshots_dir = state_dir / "snapshots"
    if candidate.kind == "directory":
        content = Path(candidate.location)
        if not content.is_dir():
            raise SourceError(
                f"snapshot {label}: directory {shown(content)} is gone; it will be listed again on the next poll"
            )
        digest = _digest_or_error(lambda: directory_digest(content, memo), label, content)
    elif candidate.kind == "archive":
        archive = Path(candidate.location)
        digest = _digest_or_error(lambda: file_digest(archive, memo), label, archive)
        content = extracted(archive, _suffix(archive.name, label), digest, snapshots_dir, label, limits)
    elif candidate.kind in ("prefix", "object"):
        content, digest, timestamp = fetch_object_snapshot(
            candidate, state_dir=state_dir, limits=limits, label=label
        )
    else:
        if not candidate.sha256:
            raise SourceError(
                f"snapshot {label}: a remote snapshot needs the manifest's sha256; fix the manifest"
            )
        digest = candidate.sha256.lower()
        found = reuse(snapshots_dir, digest)
        if found is not None:
            content = found
        else:
            suffix = _suffix(urlsplit(candidate.location).path.rsplit("/", 1)[-1], label)
            archive = download(
                candidate.location,
                digest,
                state_dir / "downloads",
                label=label,
                max_bytes=limits.max_download_bytes,
                client=client,
                headers=candidate.headers,
            )
            try:
                content = extracted(archive, suffix, digest, snapshots_dir, label, limits)
            finally:
                # The extracted folder is what is reused; keeping the archive would double the disk use.
                archive.unlink(missing_ok=True)
    prune_unused(snapshots_dir, keep=digest, retention_seconds=limits.unused_retention_seconds)
    return SnapshotInfo(
        task=candidate.task,
        dataset=candidate.dataset,
        snapshot=candidate.snapshot,
        digest=digest,
        root=_unwrap(content),
        source=candidate.source or redact_url(candidate.location),
        timestamp=timestamp,
    )


def _suffix(name: str, label: str) -> str:
    split = split_archive_name(name)
    if split is None:
        raise SourceError(f"snapshot {label}: {name!r} is not a .tar, .tar.gz, .tgz or .zip archive")
    return split[1]


def _digest_or_error(compute: Callable[[], str], label: str, path: Path) -> str:
    try:
        digest = compute()
    except OSError as exc:
        where = exc.filename or path
        raise SourceError(
            f"snapshot {label}: cannot read {shown(where)}: {exc.strerror or exc}; check that it still exists "
            f"and is readable by the monitor"
        ) from None
    return digest


def _unwrap(content: Path) -> Path:
    """The folder that holds the data: `content` itself, or its single visible subfolder."""
    try:
        visible = [entry for entry in os.scandir(content) if not is_hidden(entry.name)]
    except OSError:
        return content
    if (
        len(visible) == 1
        and visible[0].is_dir(follow_symlinks=False)
        and visible[0].name.lower() not in _SPLIT_NAMES
    ):
        return content / visible[0].name
    return content
