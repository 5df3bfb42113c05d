"""Weights behind an http(s) or fsspec URL, fetched by content into `state_dir/weights/<sha256>/`.

A poll costs one metadata request (`HEAD`, or the object store's `info`): the object's identity
(ETag, version id, size; Last-Modified when there is nothing better) is memoised with the sha256
of the bytes it had, so unchanged weights are never downloaded again. A changed identity is a
download, and the version is the sha256 of what arrived — equal to the same file's on local
disk. HTTP weights pinned with `weights_sha256` are checked against it and never polled at all.

The cache itself (publish, mark used, prune) is `_weights_cache`, shared with the MLflow registry.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from ..errors import SnapshotRejected, SourceError
from ..settings import ModelSpec, redact_url
from ._fs import sweep_stale
from ._http import http_client, request_headers, stream
from ._memo import DigestMemo
from ._objects import copy_object, identity, open_fs, scrubbed
from ._weights_cache import cached, prune, publish

__all__ = ["MAX_WEIGHTS_BYTES", "remote_weights"]

# Checkpoints of deployed vision models run to a few GB (ViT-H is 2.5 GB in fp32); the cap only
# stops a wrong URL (a dataset, a disk image) from filling the state dir.
MAX_WEIGHTS_BYTES = 32 * 2**30


def remote_weights(
    spec: ModelSpec, *, state_dir: Path, client: httpx.Client | None = None
) -> tuple[Path, str]:
    """(local file, sha256) of the model's remote weights, downloading only what is new."""
    assert spec.weights is not None
    weights_dir = Path(state_dir) / "weights"
    memo = DigestMemo(Path(state_dir), name="remote-weights.json", local_keys=False)
    name = _file_name(spec.weights)
    key = "weights:" + hashlib.sha256(spec.weights.encode()).hexdigest()  # the URL may hold a token
    what = f"weights {redact_url(spec.weights)} of model {spec.name}"
    if spec.weights_kind == "http":
        if spec.weights_sha256 is not None:
            found = cached(weights_dir, spec.weights_sha256, name)
            if found is not None:
                return found, spec.weights_sha256
            return _pinned_download(spec, memo, key, weights_dir, name, what, client)
        signature = _http_identity(spec, what, client)
        fetch: Any = lambda: _download_http(spec, weights_dir, name, what, client)  # noqa: E731
    else:
        fs, path_in_fs = open_fs(spec.weights, spec.storage_options, f"model {spec.name}")
        signature, size = _object_identity(fs, path_in_fs, spec, what)
        fetch = lambda: _download_object(fs, path_in_fs, size, spec, weights_dir, name, what)  # noqa: E731
    known = memo.get(key, signature)
    if known is not None:
        found = cached(weights_dir, known, name)
        if found is not None:
            return found, known
    path, digest = fetch()
    memo.put(key, signature, digest)
    prune(weights_dir, keep=digest)
    return path, digest


# A pinned file that did not match is not fetched again for this long (each try is a whole download).
_MISMATCH_BACKOFF_SECONDS = 3600.0


def _pinned_download(
    spec: ModelSpec,
    memo: DigestMemo,
    key: str,
    weights_dir: Path,
    name: str,
    what: str,
    client: httpx.Client | None,
) -> tuple[Path, str]:
    assert spec.weights_sha256 is not None
    seen = memo.get("mismatch:" + key, spec.weights_sha256)
    if seen is not None:
        actual, _, when = seen.partition("@")
        if time.time() - float(when or 0) < _MISMATCH_BACKOFF_SECONDS:
            raise _mismatch(what, actual, spec.weights_sha256, again=True)
    try:
        return _download_http(spec, weights_dir, name, what, client)
    except _Mismatch as exc:
        memo.put("mismatch:" + key, spec.weights_sha256, f"{exc.actual}@{time.time()}")
        raise _mismatch(what, exc.actual, spec.weights_sha256, again=False) from None


class _Mismatch(Exception):
    def __init__(self, actual: str) -> None:
        self.actual = actual


def _mismatch(what: str, actual: str, pinned: str, *, again: bool) -> SourceError:
    when = " (fetched again an hour after the last try)" if again else ""
    return SourceError(
        f"{what} have sha256 {actual}, but models[].weights_sha256 says {pinned}: the file was replaced or "
        f"truncated; publish the right file or update weights_sha256{when}"
    )


def _file_name(url: str) -> str:
    name = urlsplit(url).path.rsplit("/", 1)[-1]
    # The suffix tells the loader the format (.safetensors or a torch pickle); the name is ours.
    return name if name and not name.startswith(".") else "weights.pt"


def _http_identity(spec: ModelSpec, what: str, client: httpx.Client | None) -> str:
    """What says whether the file changed: its ETag or Last-Modified (and length), from a HEAD.

    A server that refuses HEAD (a presigned S3 URL is signed for GET only: 403; some answer 405)
    is asked with a one-byte ranged GET instead. A server that gives no validator at all cannot
    be polled cheaply: then the file must be pinned with `weights_sha256`.
    """
    assert spec.weights is not None
    headers = request_headers(spec.headers, f"cannot fetch {what}", "models[].headers")
    try:
        with http_client(client) as http:
            with stream(http, "HEAD", spec.weights, headers) as response:
                status, found = response.status_code, response.headers
            if status in (403, 405):
                with stream(http, "GET", spec.weights, headers, Range="bytes=0-0") as response:
                    status, found = response.status_code, response.headers
                    status = 200 if status == 206 else status
    except httpx.HTTPError as exc:
        raise SourceError(
            f"cannot check {what}: {scrubbed(exc, also=headers.values())}; check the URL and the network (it is "
            "retried on the next poll)"
        ) from None
    if status != 200:
        raise SourceError(f"cannot check {what}: HTTP {status}; {_http_advice(status)}")
    validator = found.get("etag") or found.get("last-modified")
    if not validator:
        raise SourceError(
            f"cannot poll {what}: the server sends neither an ETag nor a Last-Modified header, so nothing says "
            "whether the file changed; pin it with models[].weights_sha256 (its sha256sum) to fetch it once"
        )
    length = found.get("content-range", "").rpartition("/")[2] or found.get("content-length") or ""
    return f"{validator}|{length}"


def _http_advice(status: int) -> str:
    if status in (401, 403):
        return "check the credentials in models[].headers (e.g. Authorization)"
    if status == 404:
        return "check the URL: nothing is published there"
    return "check the server; it is retried on the next poll"


def _download_http(
    spec: ModelSpec, weights_dir: Path, name: str, what: str, client: httpx.Client | None
) -> tuple[Path, str]:
    assert spec.weights is not None
    headers = request_headers(spec.headers, f"cannot fetch {what}", "models[].headers")
    tmp = _temp_file(weights_dir, what)
    digest = hashlib.sha256()
    size = 0
    try:
        with (
            open(tmp, "wb") as out,
            http_client(client) as http,
            stream(http, "GET", spec.weights, headers) as response,
        ):
            if response.status_code != 200:
                raise SourceError(
                    f"cannot download {what}: HTTP {response.status_code}; {_http_advice(response.status_code)}"
                )
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > MAX_WEIGHTS_BYTES:
                    raise SourceError(f"{what} is larger than {MAX_WEIGHTS_BYTES} bytes: is the URL right?")
                digest.update(chunk)
                out.write(chunk)
    except httpx.HTTPError as exc:
        tmp.unlink(missing_ok=True)
        raise SourceError(
            f"cannot download {what}: {scrubbed(exc, also=headers.values())}; it is retried on the next poll"
        ) from None
    except OSError as exc:  # writing the file: a full disk, a read-only state_dir
        tmp.unlink(missing_ok=True)
        raise _disk_error(what, weights_dir, exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    actual = digest.hexdigest()
    if spec.weights_sha256 is not None and actual != spec.weights_sha256:
        tmp.unlink(missing_ok=True)
        raise _Mismatch(actual)
    return _publish(tmp, weights_dir, actual, name, what), actual


def _object_identity(fs: Any, path: str, spec: ModelSpec, what: str) -> tuple[str, int | None]:
    with contextlib.suppress(Exception):
        fs.invalidate_cache(path)  # a poll must see the object as it is now, not a listing cache
    try:
        info = fs.info(path)
    except FileNotFoundError:
        raise SourceError(f"cannot find {what}: no such object; check models[].weights") from None
    except Exception as exc:
        raise SourceError(
            f"cannot check {what}: {scrubbed(exc, spec.storage_options)}; check the credentials, the endpoint "
            "(AWS_ENDPOINT_URL or storage_options.endpoint_url) and the network"
        ) from None
    if info.get("type") == "directory":
        raise SourceError(f"{what} is a folder, not a weights file; point models[].weights at the file")
    size = info.get("size")
    return identity(info), size if isinstance(size, int) else None


def _download_object(
    fs: Any, path: str, size: int | None, spec: ModelSpec, weights_dir: Path, name: str, what: str
) -> tuple[Path, str]:
    assert spec.weights is not None
    tmp = _temp_file(weights_dir, what)
    try:
        digest = copy_object(
            fs,
            path,
            tmp,
            expected_size=size,
            max_bytes=MAX_WEIGHTS_BYTES,
            label=f"model {spec.name}",
            url=spec.weights,
            options=spec.storage_options,
        )
    except SnapshotRejected as exc:
        raise SourceError(str(exc)) from None
    return _publish(tmp, weights_dir, digest, name, what), digest


def _temp_file(weights_dir: Path, what: str) -> Path:
    try:
        weights_dir.mkdir(parents=True, exist_ok=True)
        sweep_stale(weights_dir)
        fd, name = tempfile.mkstemp(prefix=".tmp-", suffix=".part", dir=weights_dir)
    except OSError as exc:
        raise _disk_error(what, weights_dir, exc) from None
    os.close(fd)
    return Path(name)


def _publish(tmp: Path, weights_dir: Path, digest: str, name: str, what: str) -> Path:
    try:
        return publish(tmp, weights_dir, digest, name)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _disk_error(what, weights_dir, exc) from None


def _disk_error(what: str, weights_dir: Path, exc: OSError) -> SourceError:
    return SourceError(
        f"cannot store {what} under {weights_dir}: {exc.strerror or exc}; check free space and permissions "
        "of state_dir (it is retried on the next poll)"
    )
