"""Stream a remote snapshot archive to disk, size-capped, checking its sha256 on the way."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from .._text import shown
from ..errors import SnapshotRejected, SourceError
from ..settings import redact_url
from ._fs import sweep_stale
from ._http import http_client, request_headers, stream
from ._objects import scrubbed

__all__ = ["download"]


def download(
    url: str,
    expected_sha256: str,
    downloads_dir: Path,
    *,
    label: str,
    max_bytes: int,
    client: httpx.Client | None,
    headers: Mapping[str, Any] | None = None,
) -> Path:
    """Download `url` into `downloads_dir` and return the file; its sha256 equals `expected_sha256`.

    A network or HTTP failure is a SourceError (try again later); content that is too large or
    does not match the manifest's checksum is a SnapshotRejected (the snapshot itself is bad).
    The file only gets its final name once complete and verified. `headers` (the manifest's,
    only when the archive is on the manifest's own origin) are secrets: never shown.
    """
    where = shown(redact_url(url))  # the URL comes from a manifest: it may hold anything
    downloads_dir.mkdir(parents=True, exist_ok=True)
    sweep_stale(downloads_dir)
    fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=".part", dir=downloads_dir)
    tmp = Path(tmp_name)
    plain = request_headers(headers, f"cannot download snapshot {label}", "tasks[].datasets[].headers")
    try:
        digest = hashlib.sha256()
        size = 0
        with (
            os.fdopen(fd, "wb") as out,
            http_client(client) as http,
            stream(http, "GET", url, plain) as response,
        ):
            if response.status_code != 200:
                raise SourceError(
                    f"cannot download snapshot {label} from {where}: HTTP {response.status_code}; "
                    f"check that the manifest's url is right and the file is published"
                )
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise _too_large(label, where, max_bytes)
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise _too_large(label, where, max_bytes)
                digest.update(chunk)
                out.write(chunk)
        actual = digest.hexdigest()
        if actual != expected_sha256.lower():
            raise SnapshotRejected(
                "checksum_mismatch",
                f"snapshot {label} downloaded from {where} has sha256 {actual}, but the manifest says "
                f"{expected_sha256.lower()}; republish the archive or fix its sha256 in the manifest",
            )
        final = downloads_dir / actual
        os.replace(tmp, final)
        return final
    except httpx.HTTPError as exc:
        tmp.unlink(missing_ok=True)
        raise SourceError(
            f"cannot download snapshot {label} from {where}: {scrubbed(exc, also=plain.values())}; "
            f"check the network and the server, it will be retried on the next poll"
        ) from None
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise SourceError(
            f"cannot store snapshot {label} from {where} under {downloads_dir}: {exc.strerror or exc}; "
            f"check free space and permissions of state_dir"
        ) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _too_large(label: str, where: str, max_bytes: int) -> SnapshotRejected:
    return SnapshotRejected(
        "too_large",
        f"snapshot {label} at {where} is larger than the download limit of {max_bytes} bytes "
        f"(limits.max_download_bytes); publish a smaller snapshot (the compact protocol uses few "
        f"images per class)",
    )
