"""The log notifier: every event as one log line (WARNING while firing, INFO when resolved).

Useful on its own (a journal that is scraped anyway) and as the notifier of the demo: it needs
nothing, sends nothing over the network, and so never fails.
"""

from __future__ import annotations

import logging
from typing import Any

from ..settings import LogSpec
from ._base import NotifierBase
from ._render import fmt_number, headline

__all__ = ["LogNotifier"]

log = logging.getLogger("monitor.alerts")


class LogNotifier(NotifierBase):
    """Writes each event to the `monitor.alerts` logger; the whole event rides along as `extra`."""

    kind = "log"

    def __init__(self, spec: LogSpec, logger: logging.Logger | None = None) -> None:
        super().__init__(
            name=spec.name, min_severity=spec.min_severity, max_age=spec.max_age, timeout=spec.timeout
        )
        self._log = logger or log

    def send(self, event: dict[str, Any], *, delivery_id: str) -> None:
        """Log the event; never raises."""
        level = logging.INFO if event.get("kind") == "resolved" else logging.WARNING
        self._log.log(
            level,
            "%s (alert %s, model %s, severity %s, P(M) %s, baseline %s, delivery %s)",
            headline(event),
            event.get("alert"),
            event.get("model"),
            event.get("severity"),
            fmt_number(event.get("value")),
            fmt_number(event.get("baseline")),
            delivery_id,
            extra={"alert_event": event, "delivery_id": delivery_id},
        )
