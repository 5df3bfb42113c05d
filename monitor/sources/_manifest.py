"""List the snapshots of an HTTP(S) source: a JSON manifest of archives with their sha256.

    {"snapshots": [{"id": "2026-11-29T06", "url": "2026-11-29T06.tar.gz", "sha256": "<hex>"}]}

`url` is resolved against the manifest's own URL. An entry may carry `"timestamp"` (seconds
since the epoch); otherwise an ISO-8601 id gives it, and failing that the manifest's
Last-Modified header (or the time of listing).
"""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urljoin, urlsplit

import httpx

from .._text import shown, shown_text
from ..errors import SourceError
from ..settings import DatasetSpec, redact_url
from ._candidate import SnapshotCandidate, split_archive_name
from ._http import http_client, request_headers, same_origin, stream
from ._objects import scrubbed

__all__ = ["MAX_MANIFEST_BYTES", "list_manifest"]

# A manifest lists archives, it does not hold them: anything this large is not a manifest.
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
# Ids become metric label values and folder names in messages: no separators, no control chars.
_ID = re.compile(r"^[^/\\\x00-\x1f]{1,200}$")


def list_manifest(task: str, dataset: DatasetSpec, client: httpx.Client | None) -> list[SnapshotCandidate]:
    """Fetch and validate the manifest of an HTTP(S) source; return its snapshots sorted by id."""
    where = f"dataset {task}/{dataset.name} at {redact_url(dataset.location)}"
    headers = request_headers(
        dataset.headers, f"cannot list snapshots of {where}", "tasks[].datasets[].headers"
    )
    body, fallback_time = _fetch(dataset.location, where, client, headers)
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise SourceError(
            f"cannot list snapshots of {where}: the manifest is not valid JSON ({shown_text(str(exc))}); "
            f'it must look like {{"snapshots": [{{"id": ..., "url": ..., "sha256": ...}}]}}'
        ) from None
    return sorted(
        _entries(document, task, dataset, where, fallback_time), key=lambda candidate: candidate.snapshot
    )


def _fetch(url: str, where: str, client: httpx.Client | None, headers: dict[str, str]) -> tuple[bytes, float]:
    try:
        with (
            http_client(client) as http,
            stream(http, "GET", url, headers) as response,
        ):
            if response.status_code in (401, 403):
                raise SourceError(
                    f"cannot list snapshots of {where}: HTTP {response.status_code} for the manifest; "
                    f"check the credentials in tasks[].datasets[].headers (e.g. Authorization)"
                )
            if response.status_code != 200:
                raise SourceError(
                    f"cannot list snapshots of {where}: HTTP {response.status_code} for the manifest; "
                    f"check the URL and that the server is up"
                )
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > MAX_MANIFEST_BYTES:
                    raise SourceError(
                        f"cannot list snapshots of {where}: the manifest is larger than "
                        f"{MAX_MANIFEST_BYTES} bytes; check that the source URL points at the manifest"
                    )
                chunks.append(chunk)
            modified = response.headers.get("last-modified")
    except httpx.HTTPError as exc:
        raise SourceError(
            f"cannot list snapshots of {where}: {scrubbed(exc, also=headers.values())}; check the URL and the network"
        ) from None
    return b"".join(chunks), _http_date(modified) or time.time()


def _entries(
    document: object, task: str, dataset: DatasetSpec, where: str, fallback_time: float
) -> list[SnapshotCandidate]:
    def bad(detail: str) -> SourceError:
        return SourceError(
            f"cannot list snapshots of {where}: invalid manifest: {detail}; "
            f'expected {{"snapshots": [{{"id": str, "url": str, "sha256": "<64 hex digits>"}}]}}'
        )

    if not isinstance(document, dict) or not isinstance(document.get("snapshots"), list):
        raise bad('the top level must be an object with a "snapshots" list')
    found: list[SnapshotCandidate] = []
    seen: set[str] = set()
    for index, entry in enumerate(document["snapshots"]):
        at = f"snapshots[{index}]"
        if not isinstance(entry, dict):
            raise bad(f"{at} is not an object")
        snapshot_id, url, sha256 = entry.get("id"), entry.get("url"), entry.get("sha256")
        if not isinstance(snapshot_id, str) or not _ID.match(snapshot_id):
            raise bad(f"{at}.id must be a non-empty string without '/' or control characters")
        if snapshot_id in seen:
            raise bad(f"{at}.id {snapshot_id!r} appears twice")
        seen.add(snapshot_id)
        if not isinstance(url, str) or not url:
            raise bad(f"{at}.url must be a non-empty string")
        if not isinstance(sha256, str) or not _SHA256.match(sha256):
            raise bad(f"{at}.sha256 must be the archive's sha256 as 64 hex digits")
        absolute = urljoin(dataset.location, url)
        parts = urlsplit(absolute)
        if parts.scheme not in ("http", "https"):
            raise bad(f"{at}.url resolves to {shown(redact_url(absolute))}, which is not http(s)")
        if split_archive_name(parts.path.rsplit("/", 1)[-1]) is None:
            raise bad(f"{at}.url {shown(redact_url(absolute))} does not end in .tar, .tar.gz, .tgz or .zip")
        found.append(
            SnapshotCandidate(
                task=task,
                dataset=dataset.name,
                snapshot=snapshot_id,
                location=absolute,
                kind="remote",
                sha256=sha256.lower(),
                timestamp=_timestamp(entry.get("timestamp"), snapshot_id, fallback_time),
                source=redact_url(dataset.location),
                # The manifest's credentials go along only to its own origin, never to a third party.
                headers=dataset.headers if same_origin(absolute, dataset.location) else {},
            )
        )
    return found


def _timestamp(declared: object, snapshot_id: str, fallback: float) -> float:
    if isinstance(declared, int | float) and not isinstance(declared, bool):
        return float(declared)
    try:
        parsed = datetime.fromisoformat(snapshot_id)
    except ValueError:
        return fallback
    # Sortable timestamp ids without a zone are taken as UTC (the scheduler's zone too).
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def _http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
