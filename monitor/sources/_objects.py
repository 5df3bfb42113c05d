"""Objects on fsspec filesystems (S3, GCS, Azure, MinIO, …): open, identify, copy, explain errors.

fsspec is imported here only; the backend (s3fs, gcsfs, adlfs) is whichever the URL's scheme
needs, installed through the matching extra. Credentials come from the backend's standard chain
(`AWS_*` variables, profiles, instance roles, `AWS_ENDPOINT_URL`) or from `storage_options`,
whose values are revealed only in the call that opens the filesystem. A library's error message
is scrubbed of those values before it is shown.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from .._text import shown_text
from ..errors import SnapshotRejected, SourceError
from ..settings import redact_url, reveal_options, secret_values

__all__ = ["copy_object", "identity", "mtime", "open_fs", "scrubbed"]

_CHUNK = 1 << 20
# Metadata that identifies an object's content (or its version) across the backends fsspec has:
# S3 (ETag, VersionId), GCS (etag, generation, md5Hash, crc32c), Azure (etag, content_md5).
_IDENTITY_FIELDS = (
    "ETag",
    "etag",
    "VersionId",
    "version_id",
    "generation",
    "md5Hash",
    "crc32c",
    "content_md5",
    "checksum",
)
_TIME_FIELDS = ("LastModified", "last_modified", "updated", "mtime", "created", "modified")
# Filesystems are reused for a while (a new S3 client resolves credentials and opens connections:
# ~1 s), then rebuilt, so that rotated credentials in a profile or a mounted file are picked up.
_REUSE_SECONDS = 600.0
# The environment the backends read their credentials and endpoints from.
_ENV_PREFIXES = ("AWS_", "GOOGLE_", "GCS_", "AZURE_", "FSSPEC_")
_FILESYSTEMS: dict[str, tuple[float, Any]] = {}
_FILESYSTEMS_LOCK = threading.Lock()


def open_fs(url: str, options: Mapping[str, Any], where: str) -> tuple[Any, str]:
    """(filesystem, path inside it) for an fsspec URL; SourceError when it cannot be opened."""
    try:
        import fsspec
    except ImportError:  # pragma: no cover - fsspec comes with torch and with the extras
        raise SourceError(
            f"{where}: fsspec is not installed; pip install 'persistence-monitor[s3]'"
        ) from None
    try:
        plain = reveal_options(options)
    except ValueError as exc:
        raise SourceError(f"{where}: {exc}; check storage_options") from None
    try:
        fs, path = _filesystem(fsspec, url, plain)
    except ImportError as exc:
        raise SourceError(
            f"{where}: the backend for {shown_text(url.split(':', 1)[0])}:// is not installed "
            f"({scrubbed(exc, options)}); install the extra, e.g. pip install 'persistence-monitor[s3]'"
        ) from None
    except Exception as exc:  # bad option names and values: the backend's constructor says which
        raise SourceError(
            f"{where}: cannot open {redact_url(url)}: {scrubbed(exc, options)}; check storage_options"
        ) from None
    return fs, path


def _filesystem(fsspec: Any, url: str, plain: dict[str, Any]) -> tuple[Any, str]:
    """fsspec's filesystem for `url`, reused while its options and credential environment hold.

    fsspec's own instance cache keys on the options only, so it would keep the credentials (and
    the endpoint) that the first call found after an `AWS_*` variable changed: ours also keys on
    that environment, and on age.
    """
    protocol = url.split("://", 1)[0].lower()
    environment = sorted((k, v) for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES))
    # What the URL itself configures (ftp/sftp host and user, an abfs account) is part of the key.
    from_url = fsspec.get_filesystem_class(protocol)._get_kwargs_from_urls(url)
    key = hashlib.sha256(
        json.dumps([protocol, plain, from_url, environment], sort_keys=True, default=repr).encode()
    ).hexdigest()
    now = time.monotonic()
    with _FILESYSTEMS_LOCK:
        cached = _FILESYSTEMS.get(key)
        if cached is not None and now - cached[0] < _REUSE_SECONDS:
            fs = cached[1]
            return fs, fs._strip_protocol(url)
    fs, path = fsspec.core.url_to_fs(url, skip_instance_cache=True, **plain)
    with _FILESYSTEMS_LOCK:
        for stale in [k for k, (born, _) in _FILESYSTEMS.items() if now - born >= _REUSE_SECONDS]:
            del _FILESYSTEMS[stale]
        _FILESYSTEMS[key] = (now, fs)
    return fs, path


def scrubbed(exc: BaseException, *secret_sources: Mapping[str, Any], also: Iterable[str] = ()) -> str:
    """`Type: first line of the message`, bounded, with every configured secret blanked out
    (`secret_sources`: options or headers as configured; `also`: secrets already revealed)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    for secret in sorted(
        {*secret_values(*secret_sources), *(s for s in also if len(s) >= 4)}, key=len, reverse=True
    ):
        text = text.replace(secret, "***")
    text = shown_text(text)[:300]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def identity(info: Mapping[str, Any], *, with_time: bool = False) -> str:
    """A string that changes whenever the object's content may have: content hashes, version, size.

    When the backend gives no content hash, the modification time stands in for it; `with_time`
    adds it anyway (a ready marker is usually empty: its ETag is the same every time it is
    written, its time is not).
    """
    picked = {k: str(info[k]) for k in _IDENTITY_FIELDS if info.get(k) not in (None, "")}
    if not picked or with_time:
        picked["time"] = str(mtime(info))
    picked["size"] = str(info.get("size"))
    return json.dumps(picked, sort_keys=True)


def mtime(info: Mapping[str, Any]) -> float:
    """The object's modification time in seconds since the epoch (0.0 when the backend has none)."""
    for key in _TIME_FIELDS:
        value = info.get(key)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return 0.0


def copy_object(
    fs: Any,
    path: str,
    target: Path,
    *,
    expected_size: int | None,
    max_bytes: int,
    label: str,
    url: str,
    options: Mapping[str, Any],
) -> str:
    """Stream one object into `target` (size-capped); return its sha256.

    A size other than the listed one (the object was truncated, or replaced while we read) is a
    SourceError: nothing is kept, and the next poll lists it again. Too large is SnapshotRejected.
    """
    where = redact_url(url)
    if expected_size is not None and expected_size > max_bytes:
        raise _too_large(label, where, max_bytes)
    digest = hashlib.sha256()
    size = 0
    try:
        with fs.open(path, "rb") as source, open(target, "wb") as out:
            while chunk := source.read(_CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise _too_large(label, where, max_bytes)
                digest.update(chunk)
                out.write(chunk)
    except (SnapshotRejected, SourceError):
        target.unlink(missing_ok=True)
        raise
    except FileNotFoundError:
        target.unlink(missing_ok=True)
        raise SourceError(
            f"{label}: {where} is gone (removed since it was listed); it will be listed again"
        ) from None
    except OSError as exc:
        target.unlink(missing_ok=True)
        if type(exc).__name__ == "FileExpired":  # fsspec: its ETag changed since it was listed
            raise SourceError(
                f"{label}: {where} changed while it was read (truncated, or replaced since it was listed); "
                "nothing was kept, it is fetched again on the next poll"
            ) from None
        if exc.filename and os.fspath(exc.filename) == os.fspath(target):
            raise SourceError(
                f"{label}: cannot write {target}: {exc.strerror or exc}; check free space and permissions of state_dir"
            ) from None
        raise SourceError(
            f"{label}: cannot read {where}: {scrubbed(exc, options)}; it will be retried"
        ) from None
    except Exception as exc:  # the backends raise their own kinds (botocore, aiohttp, …)
        target.unlink(missing_ok=True)
        raise SourceError(
            f"{label}: cannot read {where}: {scrubbed(exc, options)}; it will be retried"
        ) from None
    if expected_size is not None and size != expected_size:
        target.unlink(missing_ok=True)
        raise SourceError(
            f"{label}: {where} was listed with {expected_size} bytes but {size} arrived (truncated, or "
            f"replaced while it was read); nothing was kept, it is fetched again on the next poll"
        )
    return digest.hexdigest()


def _too_large(label: str, where: str, max_bytes: int) -> SnapshotRejected:
    return SnapshotRejected(
        "too_large",
        f"{label} at {where} is larger than the download limit of {max_bytes} bytes "
        f"(limits.max_download_bytes); publish a smaller one",
    )
