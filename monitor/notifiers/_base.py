"""What every notifier is: a name, a severity floor, and `send`, which either delivers or raises.

A notifier renders one event document (`monitor.alerts.event_document`) for one destination and
sends it once. It never retries and never sleeps: the dispatcher owns retries, backoff and
giving up, so that those survive restarts through the outbox.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from ..errors import DeliveryError
from ..types import SEVERITIES, severity_rank

__all__ = ["SEVERITIES", "DeliveryError", "Notifier", "NotifierBase", "severity_rank"]


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
