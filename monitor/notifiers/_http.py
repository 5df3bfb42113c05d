"""One POST to a receiver, with the outcome classified for the dispatcher, and nothing secret shown.

Classification (DESIGN.md §3.6): 2xx delivered; 408, 429, 5xx, connection errors and timeouts
may succeed later (retryable, honouring `Retry-After`); any other status will not (a 4xx means
the request itself is wrong: retrying it only repeats the mistake).
"""

from __future__ import annotations

import email.utils
import logging
import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC
from urllib.parse import urlsplit

import httpx

from .. import __version__
from ..settings import redact_url
from ._base import DeliveryError

__all__ = [
    "USER_AGENT",
    "HttpTarget",
    "new_http_client",
    "parse_retry_after",
    "post",
]

USER_AGENT = f"persistence-monitor/{__version__}"

_RETRYABLE_STATUSES = frozenset({408, 429})
# Enough of a response body to show a receiver's own reason ("invalid_payload", PagerDuty's
# "Event object is invalid"); a receiver cannot make us buffer more than this.
_BODY_HEAD_BYTES = 2048
_REASON_CHARS = 160


def new_http_client() -> httpx.Client:
    """A client for every notifier to share (one connection pool).

    Redirects are not followed: a webhook that answers 3xx is misconfigured, and following it
    would re-send a signed body (or a PagerDuty routing key) to wherever the redirect points.
    Each request sets its own timeout from its notifier's `timeout`.
    """
    return httpx.Client(follow_redirects=False, headers={"user-agent": USER_AGENT})


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """`Retry-After` in seconds from now: delta-seconds or an HTTP-date; None when absent or bad."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True)
class HttpTarget:
    """Where a notifier posts, how it may be shown, and the strings that must never be shown.

    `display` is what appears in messages (a redacted URL); `secrets` are scrubbed from anything
    a receiver or a library says back before it becomes part of a message.
    """

    url: str
    display: str
    timeout: float
    secrets: tuple[str, ...] = ()

    @classmethod
    def for_url(
        cls, url: str, *, timeout: float, secret_path: bool = False, secrets: Iterable[str] = ()
    ) -> HttpTarget:
        """A target for `url`; `secret_path` hides the path too (a Slack webhook URL *is* a key)."""
        display = _host_only(url) if secret_path else redact_url(url)
        hidden = [*secrets, *_url_credentials(url)]
        if secret_path:
            path = urlsplit(url).path
            # The whole URL, its path, and each long segment (the token alone may be echoed).
            hidden += [url, path, *(part for part in path.split("/") if len(part) >= 16)]
        # Longest first, so that a secret containing another is replaced whole.
        ordered = sorted({s for s in hidden if len(s) >= 4}, key=len, reverse=True)
        _LOG_REDACTOR.register(url, display)
        return cls(url=url, display=display, timeout=timeout, secrets=tuple(ordered))

    def scrub(self, text: str) -> str:
        """`text` without any of the target's secrets, on one line, cut to a readable length."""
        for secret in self.secrets:
            text = text.replace(secret, "…")
        text = re.sub(r"[\x00-\x1f\x7f\s]+", " ", text).strip()
        return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 1] + "…"


def post(
    client: httpx.Client,
    target: HttpTarget,
    body: bytes,
    *,
    headers: Mapping[str, str],
) -> int:
    """POST `body` to the target; the status when it is 2xx.

    Raises `DeliveryError` otherwise, with a message built only from the target's display, the
    status and a scrubbed reason.
    """
    where = f"POST {target.display}"
    all_headers = {"user-agent": USER_AGENT, **headers}
    try:
        request = client.build_request(
            "POST",
            target.url,
            content=body,
            headers=all_headers,
            timeout=httpx.Timeout(target.timeout),
        )
        response = client.send(request, stream=True, follow_redirects=False)
        try:
            head = _read_head(response)
        finally:
            response.close()
    except httpx.TimeoutException:
        raise DeliveryError(f"{where}: no answer within {target.timeout:g}s", retryable=True) from None
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        # A configuration problem, not a passing one: retrying cannot help.
        reason = target.scrub(f"{type(exc).__name__}: {exc}")
        raise DeliveryError(f"{where}: cannot send ({reason})", retryable=False) from None
    except httpx.TransportError as exc:
        reason = target.scrub(f"{type(exc).__name__}: {exc}")
        raise DeliveryError(f"{where}: connection failed ({reason})", retryable=True) from None
    status = response.status_code
    if 200 <= status < 300:
        return status
    retryable = status in _RETRYABLE_STATUSES or status >= 500
    retry_after = parse_retry_after(response.headers.get("retry-after")) if retryable else None
    detail = target.scrub(head.decode("utf-8", "replace"))
    message = f"{where}: HTTP {status} {response.reason_phrase}".rstrip()
    if detail:
        message += f" ({detail})"
    if retry_after is not None:
        message += f"; Retry-After {retry_after:.0f}s"
    raise DeliveryError(message, retryable=retryable, retry_after=retry_after, status=status) from None


def _read_head(response: httpx.Response) -> bytes:
    """The start of the response body (for a reason to show); empty when it cannot be decoded."""
    head = b""
    try:
        for chunk in response.iter_bytes():
            head += chunk
            if len(head) >= _BODY_HEAD_BYTES:
                break
    except httpx.DecodingError:  # a broken gzip body: the status alone has to do
        return b""
    return head[:_BODY_HEAD_BYTES]


def _host_only(url: str) -> str:
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
    except ValueError:
        return "(a URL that does not parse)"
    return f"{parts.scheme}://{host}/…"


def _url_credentials(url: str) -> list[str]:
    """The parts of a URL that may be credentials: user-info and the query string."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    found = [p for p in (parts.username, parts.password, parts.query) if p]
    if "@" in parts.netloc:
        found.append(parts.netloc.rsplit("@", 1)[0])
    return found


class _HttpxLogRedactor(logging.Filter):
    """Rewrites the URL in httpx's own `HTTP Request: POST <url> …` log line.

    httpx logs every request's full URL at INFO, and a Slack webhook URL (or a webhook URL with a
    token in its query) is a credential: registered URLs are shown as their notifier shows them.
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._displays: dict[str, str] = {}

    def register(self, url: str, display: str) -> None:
        with self._lock:
            self._displays[str(httpx.URL(url)) if _parses(url) else url] = display
            self._displays[url] = display
            if self not in _HTTPX_LOGGER.filters:
                _HTTPX_LOGGER.addFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, httpx.URL) for a in record.args):
            record.args = tuple(self._show(a) if isinstance(a, httpx.URL) else a for a in record.args)
        return True

    def _show(self, url: httpx.URL) -> str:
        text = str(url)
        with self._lock:
            known = self._displays.get(text)
        return known if known is not None else redact_url(text)


def _parses(url: str) -> bool:
    try:
        httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return False
    return True


_HTTPX_LOGGER = logging.getLogger("httpx")
_LOG_REDACTOR = _HttpxLogRedactor()
