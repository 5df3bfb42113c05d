"""The HTTP client the sources use, and requests that carry credentials only to their own origin."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from urllib.parse import urljoin, urlsplit

import httpx
from pydantic import SecretStr

from ..errors import SourceError
from ..settings import reveal_headers

__all__ = ["MAX_REDIRECTS", "TIMEOUT", "http_client", "request_headers", "same_origin", "stream"]

# Connect fails fast (a dead host should not stall a poll); read is per chunk, so a slow but
# steady multi-GiB download is fine while a stalled one is abandoned.
TIMEOUT = httpx.Timeout(30.0, connect=10.0)
MAX_REDIRECTS = 10


@contextmanager
def http_client(client: httpx.Client | None) -> Iterator[httpx.Client]:
    """Yield the injected client as is, or a fresh one that is closed afterwards."""
    if client is not None:
        yield client
        return
    with httpx.Client(timeout=TIMEOUT, follow_redirects=True) as own:
        yield own


def request_headers(headers: Mapping[str, SecretStr] | None, doing: str, field: str) -> dict[str, str]:
    """The configured headers as sent; an unreadable `Name_file` or a bad value is a SourceError
    (`doing`: what could not be done; `field`: the setting to check). Values are never shown."""
    try:
        return reveal_headers(headers or {})
    except ValueError as exc:
        raise SourceError(f"{doing}: {exc}; check {field}") from None


def same_origin(url: str, other: str) -> bool:
    a, b = urlsplit(url), urlsplit(other)
    return (a.scheme.lower(), a.hostname, a.port) == (b.scheme.lower(), b.hostname, b.port)


@contextmanager
def stream(
    http: httpx.Client, method: str, url: str, headers: Mapping[str, str], **extra: str
) -> Iterator[httpx.Response]:
    """`http.stream(method, url)` following redirects by hand: `headers` (credentials) go only to
    `url`'s own origin, and never again once a redirect has left it.

    httpx itself drops only `Authorization` on a cross-origin redirect; an `X-Api-Key` or
    `PRIVATE-TOKEN` would reach the presigned-URL host a model server redirects to. `extra` are
    headers without secrets (a Range), sent to every hop.
    """
    current, trusted = url, True
    for _ in range(MAX_REDIRECTS + 1):
        trusted = trusted and same_origin(current, url)
        request = http.build_request(method, current, headers={**extra, **(headers if trusted else {})})
        response = http.send(request, stream=True, follow_redirects=False)
        location = response.headers.get("location")
        if response.is_redirect and location:
            response.close()
            current = urljoin(current, location)
            continue
        try:
            yield response
        finally:
            response.close()
        return
    raise httpx.TooManyRedirects(f"more than {MAX_REDIRECTS} redirects", request=request)
