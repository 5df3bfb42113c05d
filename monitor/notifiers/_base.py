"""What every notifier is: a name, a severity floor, and `send`, which either delivers or raises.

A notifier renders one event document (`monitor.alerts.event_document`) for one destination and
sends it once. It never retries and never sleeps: the dispatcher owns retries, backoff and
giving up, so that those survive restarts through the outbox.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from ..errors import MonitorError

__all__ = ["SEVERITIES", "DeliveryError", "Notifier", "NotifierBase", "severity_rank"]

SEVERITIES = ("info", "warning", "critical")
_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}


def severity_rank(severity: str) -> int:
    """0 for info, 1 for warning, 2 for critical; an unknown severity ranks highest.

    Failing open: an event whose severity we do not recognise still reaches every notifier
    rather than being filtered out silently.
    """
    return _RANK.get(severity, len(SEVERITIES))


class DeliveryError(MonitorError):
    """One attempt to deliver a notification failed.

    `retryable` says whether the same request may succeed later (timeouts, connection errors,
    408, 429, 5xx); `retry_after` is the receiver's own wish in seconds (`Retry-After`), if any;
    `status` is the HTTP status when there was a response. The message is safe to log and to
    store: it names the destination by a redacted URL and never contains a secret.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status


@runtime_checkable
class Notifier(Protocol):
    """A destination for alert events. `send` raises `DeliveryError` when it did not deliver."""

    name: str
    kind: str
    min_severity: str
    max_age: float  # seconds after which an undelivered event is dropped
    timeout: float  # seconds one attempt may take at most

    def wants(self, event: dict[str, Any]) -> bool: ...

    def send(self, event: dict[str, Any], *, delivery_id: str) -> None: ...


class NotifierBase:
    """The settings every notifier shares, and the severity filter."""

    kind: str  # set by each implementation: "webhook", "slack", …

    def __init__(
        self, *, name: str, min_severity: str = "info", max_age: float = 86400.0, timeout: float = 10.0
    ) -> None:
        self.name = name
        self.min_severity = min_severity
        self.max_age = max_age
        self.timeout = timeout

    def wants(self, event: dict[str, Any]) -> bool:
        """Whether the event's severity reaches this notifier's `min_severity`."""
        return severity_rank(str(event.get("severity"))) >= severity_rank(self.min_severity)

    def __repr__(self) -> str:  # no settings in it: some of them are secrets
        return f"<{type(self).__name__} {self.name!r}>"
