"""Where models and snapshots live, and the secrets that open them.

A location is a local path (or `file://`), an `http(s)://` URL, any other fsspec URL (`s3://`,
`gs://`, `az://`, `abfs://`, …), an MLflow registry URI (`models:/name@alias`) or, for weights
only, a torchvision weights enum (`torchvision:ResNet50_Weights.IMAGENET1K_V2`).

Secrets: every string in `storage_options` and every header value is a `SecretStr` from the
moment the config is read; `reveal_options` / `reveal_headers` turn them back into plain values
only where a library needs them. A key ending in `_file` names a file whose content is the
value (a mounted Kubernetes Secret); it is read at each use, so a rotated secret is picked up.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, SecretStr

__all__ = [
    "Headers",
    "SourceKind",
    "StorageOptions",
    "WeightsKind",
    "WeightsLocation",
    "is_local",
    "local_path",
    "reveal_headers",
    "reveal_options",
    "secret_values",
    "source_kind",
    "weights_kind",
]

WeightsKind = Literal["file", "http", "fsspec", "mlflow", "torchvision"]
SourceKind = Literal["local", "http", "fsspec"]

_FILE_SUFFIX = "_file"
# RFC 9110 token characters: what a header name may hold.
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def is_local(location: str) -> bool:
    """A local path or `file://` URL ("C:" style drive letters count as local)."""
    scheme = urlsplit(location).scheme
    return scheme in ("", "file") or len(scheme) == 1


def local_path(location: str) -> Path:
    return Path(urlsplit(location).path) if location.startswith("file://") else Path(location)


def weights_kind(location: str) -> WeightsKind:
    if location.startswith("models:/"):
        return "mlflow"
    if location.startswith("torchvision:"):
        return "torchvision"
    if is_local(location):
        return "file"
    return "http" if urlsplit(location).scheme.lower() in ("http", "https") else "fsspec"


def source_kind(location: str) -> SourceKind:
    if is_local(location):
        return "local"
    return "http" if urlsplit(location).scheme.lower() in ("http", "https") else "fsspec"


def _path_to_str(value: object) -> object:
    # A Path given in code (tests, the demo) is a local file; YAML gives strings.
    return str(value) if isinstance(value, Path) else value


def _non_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


WeightsLocation = Annotated[str, BeforeValidator(_path_to_str), AfterValidator(_non_empty)]


def _wrap(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value
    if isinstance(value, str):
        return SecretStr(value)
    if isinstance(value, Mapping):
        return {str(k): _wrap(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_wrap(v) for v in value]
    return value


def _secret_options(value: dict[str, Any]) -> dict[str, Any]:
    return {str(k): _wrap(v) for k, v in value.items()}


def _header_value_problem(value: str) -> str | None:
    """Why `value` cannot be sent as a header (the value itself is never part of the answer)."""
    if any(c in value for c in "\r\n\x00"):
        return "its value holds a line break or NUL (a YAML block scalar keeps its trailing newline: use a plain string)"
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return "its value holds characters HTTP headers cannot carry (only Latin-1)"
    return None


def _secret_headers(value: dict[str, SecretStr]) -> dict[str, SecretStr]:
    for name, secret in value.items():
        bare = name.removesuffix(_FILE_SUFFIX) if name.endswith(_FILE_SUFFIX) else name
        if not _HEADER_NAME.match(bare):
            raise ValueError(f"{name!r} is not a valid HTTP header name")
        if not name.endswith(_FILE_SUFFIX) and (problem := _header_value_problem(secret.get_secret_value())):
            raise ValueError(f"header {name!r}: {problem}")
    return value


# Every string is secret: an endpoint is harmless to hide, a key is not harmless to show.
StorageOptions = Annotated[dict[str, Any], AfterValidator(_secret_options)]
Headers = Annotated[dict[str, SecretStr], AfterValidator(_secret_headers)]


def _read_secret_file(path: str, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise ValueError(f"cannot read {what} from {path}: {reason}") from None


def _plain(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def reveal_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Plain keyword arguments for an fsspec filesystem; `x_file: path` becomes `x: <file content>`.

    Raises ValueError (naming the key and the path, never the content) for an unreadable file.
    """
    plain: dict[str, Any] = {}
    for key, value in options.items():
        if key.endswith(_FILE_SUFFIX) and key != _FILE_SUFFIX:
            plain[key.removesuffix(_FILE_SUFFIX)] = _read_secret_file(_plain(value), f"storage_options.{key}")
        else:
            plain[key] = _plain(value)
    return plain


def reveal_headers(headers: Mapping[str, SecretStr]) -> dict[str, str]:
    """Plain request headers; `Name_file: path` becomes `Name: <file content>`."""
    plain: dict[str, str] = {}
    for name, value in headers.items():
        if name.endswith(_FILE_SUFFIX):
            text = _read_secret_file(value.get_secret_value(), f"headers.{name}")
            if (problem := _header_value_problem(text)) is not None:
                raise ValueError(f"headers.{name} ({value.get_secret_value()}): {problem}")
            plain[name.removesuffix(_FILE_SUFFIX)] = text
        else:
            plain[name] = value.get_secret_value()
    return plain


def secret_values(*mappings: Mapping[str, Any]) -> list[str]:
    """Every secret string in these options/headers (file contents included, when readable).

    For scrubbing third-party error messages before they are shown: a library may echo what it
    was given.
    """
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif isinstance(value, Mapping):
            for inner in value.values():
                walk(inner)
        elif isinstance(value, list):
            for inner in value:
                walk(inner)

    for mapping in mappings:
        walk(mapping)
        for key, value in mapping.items():
            if key.endswith(_FILE_SUFFIX) and isinstance(value, SecretStr):
                with contextlib.suppress(ValueError):
                    found.append(_read_secret_file(value.get_secret_value(), key))
    return [s for s in found if len(s) >= 4]  # short values ("us", "1") would blank out real words
