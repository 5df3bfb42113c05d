"""List a dataset's complete snapshots, whatever kind of source holds them."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import httpx

from ..errors import SourceError
from ..settings import DatasetSpec, redact_url
from ._candidate import SnapshotCandidate
from ._local import list_local
from ._manifest import list_manifest
from ._object_store import list_object_store

__all__ = ["list_snapshots"]


def list_snapshots(
    task: str, dataset: DatasetSpec, *, state_dir: Path, client: httpx.Client | None = None
) -> list[SnapshotCandidate]:
    """Return the dataset's complete snapshots sorted by id (the last one is the latest).

    A local directory (or `file://` URL) is listed directly; an `http(s)://` source is a JSON
    manifest; any other scheme fsspec knows (`s3://`, `gs://`, `az://`, …) is listed like a folder. `state_dir` is accepted so every source kind has the same call; listing itself
    never writes. Raises SourceError when the source cannot be listed.
    """
    del state_dir  # listing is read-only; kept for a uniform signature with materialize()
    scheme = urlsplit(dataset.location).scheme.lower()
    if scheme in ("http", "https"):
        return list_manifest(task, dataset, client)
    # One-letter schemes are Windows drive letters ("C:\\data"), i.e. local paths.
    if scheme in ("", "file") or len(scheme) == 1:
        return list_local(task, dataset)
    import fsspec

    if scheme in fsspec.available_protocols():
        return list_object_store(task, dataset)
    raise SourceError(
        f"cannot list snapshots of dataset {task}/{dataset.name} at {redact_url(dataset.location)}: "
        f"unsupported scheme {scheme!r}; use a local directory, a file:// URL, an http(s):// manifest or an fsspec URL (s3://, gs://, az://)"
    )
