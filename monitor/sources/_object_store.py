"""Snapshots on an fsspec filesystem (`s3://bucket/prefix/`, `gs://…`, `az://…`): list and fetch.

The layout is a local folder's (DESIGN.md §3.3): every sub-prefix holding the ready marker and
every `.tar`/`.tar.gz`/`.tgz`/`.zip` object is a snapshot. Listing is metadata only. A snapshot
is fetched once into the state dir and then handled like a local one, with the same digest the
same files would have on local disk (so the same grid on S3 and on disk is the same cells):

- an archive object is streamed to `downloads/` (size-capped, its sha256 taken on the way) and
  extracted safely into `snapshots/<sha256>/`, exactly like a local archive;
- a folder's image files are copied into a staging folder (size- and count-capped), digested as
  a local folder is, and published as `snapshots/<digest>/`.

The object store's identity of the snapshot (ETag, version id, size) is memoised with that
digest, so a poll that finds nothing new lists and never downloads.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .._text import shown
from ..errors import SnapshotRejected, SourceError
from ..settings import DatasetSpec, redact_url
from ._candidate import PARTIAL_SUFFIXES, SnapshotCandidate, split_archive_name
from ._digest import IMAGE_EXTENSIONS, directory_digest, is_hidden
from ._extracted import extracted, reuse
from ._fs import publish_dir, staging_dir, sweep_stale
from ._limits import SnapshotLimits
from ._memo import DigestMemo
from ._objects import copy_object, identity, mtime, open_fs, scrubbed

__all__ = ["fetch_object_snapshot", "list_object_store"]

# Objects fetched at once for a folder snapshot: one request each, so latency, not bandwidth,
# bounds a folder of small images; a few parallel requests hide most of it.
_PARALLEL_FETCHES = 8


def list_object_store(task: str, dataset: DatasetSpec) -> list[SnapshotCandidate]:
    """Return the complete snapshots under an fsspec URL, sorted by id (metadata requests only)."""
    where = f"dataset {task}/{dataset.name} at {redact_url(dataset.location)}"
    fs, root = open_fs(dataset.location, dataset.storage_options, f"cannot list snapshots of {where}")
    root = root.rstrip("/")
    try:
        fs.invalidate_cache()  # a poll must see the store as it is now, not as it was listed
        entries = fs.ls(root, detail=True)
    except FileNotFoundError:
        raise SourceError(
            f"cannot list snapshots of {where}: no such bucket or prefix; check tasks[].datasets[].source"
        ) from None
    except Exception as exc:
        raise SourceError(
            f"cannot list snapshots of {where}: {scrubbed(exc, dataset.storage_options)}; check the credentials "
            "(AWS_* variables, a profile, or storage_options), the endpoint (AWS_ENDPOINT_URL or "
            "storage_options.endpoint_url) and the network"
        ) from None
    listed: dict[str, tuple[str, str, str, dict[str, Any]]] = {}  # id -> (kind, path, name, entry)
    for entry in sorted(entries, key=lambda e: str(e.get("name", ""))):
        path = str(entry.get("name", "")).rstrip("/")
        name = posixpath.basename(path)
        if not name or path == root or is_hidden(name) or name.lower().endswith(PARTIAL_SUFFIXES):
            continue
        if entry.get("type") == "directory":
            snapshot_id, kind = name, "prefix"
        elif (split := split_archive_name(name)) is not None:
            snapshot_id, kind = split[0], "object"
        else:
            continue
        if snapshot_id in listed:
            raise SourceError(
                f"cannot list snapshots of {where}: snapshot id {snapshot_id!r} is ambiguous, both "
                f"{shown(listed[snapshot_id][2])} and {shown(name)} exist; remove or rename one of them"
            )
        listed[snapshot_id] = (kind, path, name, entry)
    found: list[SnapshotCandidate] = []
    complete_seen = False
    for snapshot_id in sorted(listed, reverse=True):  # newest first
        kind, path, name, entry = listed[snapshot_id]
        info = entry
        if kind == "prefix" and not complete_seen:
            ready = _ready(fs, path, dataset, where)
            if ready is None:
                continue  # still being written: the writer puts the marker last
            info = ready
        verified = kind == "object" or not complete_seen
        complete_seen = True
        found.append(
            SnapshotCandidate(
                task=task,
                dataset=dataset.name,
                snapshot=snapshot_id,
                location=f"{dataset.location.rstrip('/')}/{name}",
                kind="prefix" if kind == "prefix" else "object",
                sha256=None,
                timestamp=mtime(info) if verified else 0.0,
                source=redact_url(dataset.location),
                identity=identity(info, with_time=kind == "prefix") if verified else None,
                storage_options=dataset.storage_options,
                verified=verified,
                ready_marker=dataset.ready_marker,
            )
        )
    found.sort(key=lambda c: c.snapshot)
    return found


def _ready(
    fs: Any, prefix: str, dataset: DatasetSpec | SnapshotCandidate, where: str
) -> dict[str, Any] | None:
    """The marker's metadata (None while it is missing); without a marker, the newest object's."""
    try:
        if dataset.ready_marker is not None:
            try:
                info: dict[str, Any] = fs.info(f"{prefix}/{dataset.ready_marker}")
            except FileNotFoundError:
                return None
            return info
        objects = fs.find(prefix, detail=True)
    except Exception as exc:
        raise SourceError(
            f"cannot list snapshots of {where}: {scrubbed(exc, dataset.storage_options)}; check the credentials "
            "and the network"
        ) from None
    if not objects:
        return None
    newest = max(objects.values(), key=mtime)
    # No marker: the folder's identity is its whole listing (any object added or changed counts).
    listing = hashlib.sha256(json.dumps(sorted((k, identity(v)) for k, v in objects.items())).encode())
    return {
        **newest,
        "ETag": listing.hexdigest(),
        "size": sum(int(v.get("size") or 0) for v in objects.values()),
    }


def fetch_object_snapshot(
    candidate: SnapshotCandidate, *, state_dir: Path, limits: SnapshotLimits, label: str
) -> tuple[Path, str, float]:
    """(local folder, content digest, completion time) of an fsspec snapshot, fetched only the first time.

    An older folder that the listing did not check (`verified` False) has its ready marker
    checked here; a missing one is a SourceError (this snapshot is not complete: an older one is
    tried), never a partial fetch.
    """
    memo = DigestMemo(state_dir, name="remote-snapshots.json", local_keys=False)
    key = "snapshot:" + hashlib.sha256(candidate.location.encode()).hexdigest()
    snapshots_dir = state_dir / "snapshots"
    fs, path = open_fs(candidate.location, candidate.storage_options, f"snapshot {label}")
    signature, timestamp = candidate.identity or "", candidate.timestamp
    if not candidate.verified:
        where = redact_url(candidate.location)
        info = _ready(fs, path.rstrip("/"), candidate, f"snapshot {label}")
        if info is None:
            raise SourceError(
                f"snapshot {label}: {where} is not complete (no {candidate.ready_marker}); a folder is taken "
                "once its writer uploads the marker, last"
            )
        signature, timestamp = identity(info, with_time=True), mtime(info)
    known = memo.get(key, signature) if signature else None
    if known is not None:
        found = reuse(snapshots_dir, known)
        if found is not None:
            return found, known, timestamp
    if candidate.kind == "object":
        folder, digest = _fetch_archive(fs, path, candidate, state_dir, limits, label)
    else:
        folder, digest = _fetch_prefix(fs, path, candidate, snapshots_dir, limits, label)
    if signature:
        memo.put(key, signature, digest)
    return folder, digest, timestamp


def _fetch_archive(
    fs: Any, path: str, candidate: SnapshotCandidate, state_dir: Path, limits: SnapshotLimits, label: str
) -> tuple[Path, str]:
    name = posixpath.basename(path)
    split = split_archive_name(name)
    assert split is not None  # listed as an archive
    size = json.loads(candidate.identity or "{}").get("size")
    downloads = state_dir / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    sweep_stale(downloads)
    tmp = (
        downloads / f".tmp-{hashlib.sha256(candidate.location.encode()).hexdigest()[:16]}-{os.getpid()}.part"
    )
    digest = copy_object(
        fs,
        path,
        tmp,
        expected_size=int(size) if size not in (None, "None") else None,
        max_bytes=limits.max_download_bytes,
        label=f"snapshot {label}",
        url=candidate.location,
        options=candidate.storage_options,
    )
    try:
        # The same archive on local disk has this digest too: sha256 of its bytes.
        folder = extracted(tmp, split[1], digest, state_dir / "snapshots", label, limits)
    finally:
        tmp.unlink(missing_ok=True)  # the extracted folder is what is reused
    return folder, digest


def _fetch_prefix(
    fs: Any,
    prefix: str,
    candidate: SnapshotCandidate,
    snapshots_dir: Path,
    limits: SnapshotLimits,
    label: str,
) -> tuple[Path, str]:
    where = redact_url(candidate.location)
    try:
        objects = fs.find(prefix, detail=True)
    except Exception as exc:
        raise SourceError(
            f"snapshot {label}: cannot list {where}: {scrubbed(exc, candidate.storage_options)}; it will be retried"
        ) from None
    wanted = _image_objects(prefix, objects, label, where)
    if len(wanted) > limits.max_members:
        raise SnapshotRejected(
            "too_large",
            f"snapshot {label} at {where} has {len(wanted)} image files, more than limits.max_archive_members "
            f"({limits.max_members}); publish a smaller snapshot",
        )
    total = sum(int(info.get("size") or 0) for _, _, info in wanted)
    if total > limits.max_bytes:
        raise SnapshotRejected(
            "too_large",
            f"snapshot {label} at {where} holds {total} bytes of images, more than limits.max_archive_bytes "
            f"({limits.max_bytes}); publish a smaller snapshot",
        )
    # Listed sizes are checked against what arrives, so their sum bounds the fetch; a backend that
    # lists no sizes is fetched one object at a time against what is left of the cap.
    sized = all(isinstance(info.get("size"), int) for _, _, info in wanted)
    budget = [limits.max_bytes]
    staging = staging_dir(snapshots_dir, hashlib.sha256(candidate.location.encode()).hexdigest())

    def fetch(item: tuple[str, str, dict[str, Any]]) -> None:
        relative, path, info = item
        target = staging.joinpath(*relative.split("/"))
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SourceError(
                f"snapshot {label}: cannot write {shown(relative)} under {staging}: {exc.strerror or exc}; "
                "check free space and permissions of state_dir"
            ) from None
        size = info.get("size")
        copy_object(
            fs,
            path,
            target,
            expected_size=size if isinstance(size, int) else None,
            max_bytes=limits.max_bytes if sized else budget[0],
            label=f"snapshot {label}",
            url=f"{candidate.location.rstrip('/')}/{relative}",
            options=candidate.storage_options,
        )
        if not sized:
            budget[0] -= target.stat().st_size

    try:
        if sized:
            with ThreadPoolExecutor(max_workers=_PARALLEL_FETCHES, thread_name_prefix="pm-fetch") as pool:
                for _ in pool.map(fetch, wanted):  # the first failure is raised here
                    pass
        else:
            for item in wanted:
                fetch(item)
        digest = directory_digest(staging, DigestMemo(snapshots_dir.parent))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    found = reuse(snapshots_dir, digest)
    if found is not None:  # the same content was fetched before (under another name or identity)
        shutil.rmtree(staging, ignore_errors=True)
        return found, digest
    return publish_dir(staging, snapshots_dir / digest), digest


# A file name longer than this cannot be created on the usual Linux filesystems (ext4, xfs).
_MAX_NAME_BYTES = 255


def _image_objects(
    prefix: str, objects: dict[str, Any], label: str, where: str
) -> list[tuple[str, str, dict[str, Any]]]:
    """(relative posix path, object path, info) of the image files, as a local folder's digest sees them.

    Keys come from the bucket: a name no local folder can hold (too long, or a file and a folder
    of the same name) rejects the snapshot, naming the key, rather than failing on the disk.
    """
    base = prefix.rstrip("/") + "/"
    wanted = []
    for path, info in sorted(objects.items()):
        if info.get("type") == "directory" or not path.startswith(base):
            continue
        relative = path[len(base) :]
        parts = relative.split("/")
        # The same names a local folder skips; ".." and empty parts never reach the disk.
        if any(not part or part in (".", "..") or is_hidden(part) for part in parts):
            continue
        if os.path.splitext(parts[-1])[1].lower() not in IMAGE_EXTENSIONS:
            continue
        if any(len(part.encode()) > _MAX_NAME_BYTES for part in parts):
            raise SnapshotRejected(
                "bad_archive",
                f"snapshot {label} at {where}: the key {shown(relative)} has a name longer than "
                f"{_MAX_NAME_BYTES} bytes, which no local folder can hold; rename it",
            )
        wanted.append((relative, path, info))
    files = {relative for relative, _, _ in wanted}
    for relative in files:
        parts = relative.split("/")
        for depth in range(1, len(parts)):
            if "/".join(parts[:depth]) in files:
                raise SnapshotRejected(
                    "bad_archive",
                    f"snapshot {label} at {where}: {shown('/'.join(parts[:depth]))} is both an image and the "
                    f"folder of {shown(relative)}; rename one of them",
                )
    return wanted
