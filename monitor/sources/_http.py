"""The HTTP client the sources use when the caller does not inject one."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx

__all__ = ["TIMEOUT", "http_client"]

# Connect fails fast (a dead host should not stall a poll); read is per chunk, so a slow but
# steady multi-GiB download is fine while a stalled one is abandoned.
TIMEOUT = httpx.Timeout(30.0, connect=10.0)


@contextmanager
def http_client(client: httpx.Client | None) -> Iterator[httpx.Client]:
    """Yield the injected client as is, or a fresh one that is closed afterwards."""
    if client is not None:
        yield client
        return
    with httpx.Client(timeout=TIMEOUT, follow_redirects=True) as own:
        yield own
