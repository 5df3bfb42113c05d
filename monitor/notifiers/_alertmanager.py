"""Prometheus Alertmanager: `POST {url}/api/v2/alerts`, the way Prometheus itself sends alerts.

Alertmanager keeps an alert active only until its `endsAt`. A firing alert is therefore sent
with `endsAt` = now + `ttl` and must be re-sent (`refresh`) well within that time for as long as
it fires, exactly like Prometheus re-sends every firing alert each evaluation. If we stop (a
crash, an outage), the alert resolves itself after `ttl` instead of firing forever. A resolved
event sends `endsAt` = when it resolved, which ends the alert at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from ..settings import AlertmanagerSpec
from ._base import DeliveryError, NotifierBase
from ._http import HttpTarget, post
from ._render import fmt_number, json_body

__all__ = ["AlertmanagerNotifier"]

log = logging.getLogger(__name__)

SERVICE = "persistence-monitor"
# Prometheus uses 4 × max(evaluation interval, resend delay); we re-send every minute, so an
# alert survives a dozen missed refreshes (a slow database, a restart) but not a dead service.
DEFAULT_TTL = 15 * 60.0
RESEND_INTERVAL = 60.0


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class AlertmanagerNotifier(NotifierBase):
    """Posts alerts to Alertmanager's v2 API; `refresh` keeps firing ones alive."""

    kind = "alertmanager"

    def __init__(
        self,
        spec: AlertmanagerSpec,
        client: httpx.Client,
        *,
        ttl: float = DEFAULT_TTL,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        super().__init__(
            name=spec.name, min_severity=spec.min_severity, max_age=spec.max_age, timeout=spec.timeout
        )
        self.ttl = ttl
        self.resend_interval = RESEND_INTERVAL  # how often the caller should `refresh`
        base = spec.url.rstrip("/")
        self._target = HttpTarget.for_url(f"{base}/api/v2/alerts", timeout=spec.timeout)
        self._client = client
        self._clock = clock

    def alert(self, event: dict[str, Any], *, now: datetime | None = None) -> dict[str, Any]:
        """One postable alert for the event (labels identify it: they are the same every time)."""
        labels = {
            "alertname": str(event.get("alert")),
            "model": str(event.get("model")),
            "severity": str(event.get("severity")),
            "service": SERVICE,
        }
        annotations = {
            "summary": str(event.get("summary") or ""),
            "description": str(event.get("description") or ""),
            "value": fmt_number(event.get("value")),
            "baseline": fmt_number(event.get("baseline")),
        }
        for key in ("model_version", "run_id", "rule_kind"):
            if event.get(key):
                annotations[key] = str(event[key])
        document: dict[str, Any] = {"labels": labels, "annotations": annotations}
        if event.get("started_at"):
            document["startsAt"] = event["started_at"]
        if event.get("kind") == "resolved":
            document["endsAt"] = event.get("ends_at") or event.get("at") or _utc(now or self._clock())
        else:
            document["endsAt"] = _utc((now or self._clock()) + timedelta(seconds=self.ttl))
        if event.get("status_url"):
            document["generatorURL"] = event["status_url"]
        return document

    def send(self, event: dict[str, Any], *, delivery_id: str) -> None:
        """POST the one alert; raises `DeliveryError` unless Alertmanager answers 2xx."""
        self._post([self.alert(event)])

    def refresh(self, firing_events: list[dict[str, Any]]) -> None:
        """Re-send every alert that still fires, in one request. Best effort: logs, never raises.

        Events this notifier does not want (below `min_severity`) and resolved ones are skipped.
        """
        now = self._clock()
        alerts = [
            self.alert(e, now=now) for e in firing_events if e.get("kind") != "resolved" and self.wants(e)
        ]
        if not alerts:
            return
        try:
            self._post(alerts)
        except DeliveryError as exc:
            log.warning("refreshing %d firing alert(s) in %s failed: %s", len(alerts), self.name, exc)
        except Exception:  # a refresh must never take its caller (the scheduler) down
            log.exception("refreshing firing alerts in %s failed unexpectedly", self.name)

    def _post(self, alerts: list[dict[str, Any]]) -> None:
        post(self._client, self._target, json_body(alerts), headers={"content-type": "application/json"})
