"""PagerDuty Events API v2 (https://developer.pagerduty.com/docs/events-api-v2/trigger-events/).

One alert of one model is one PagerDuty alert: the `dedup_key` is built from the model and the
alert name only, so every firing event of an episode folds into the same incident and the
resolved event closes it. The routing key is a credential: it is sent, never shown.
"""

from __future__ import annotations

from typing import Any

import httpx

from ..settings import PagerDutySpec
from ._base import NotifierBase
from ._http import HttpTarget, post
from ._render import headline, json_body, top_contributors, truncate

__all__ = ["PagerDutyNotifier", "dedup_key", "pagerduty_event"]

SOURCE = "persistence-monitor"
_SUMMARY_LIMIT = 1024  # PagerDuty truncates longer summaries; we cut them ourselves
_CONTRIBUTORS = 10
_SEVERITIES = {"critical": "critical", "warning": "warning", "info": "info"}


def dedup_key(event: dict[str, Any]) -> str:
    """`persistence-monitor/<model>/<alert>`: the same for every event of an alert's episodes."""
    return f"{SOURCE}/{event.get('model')}/{event.get('alert')}"


def pagerduty_event(event: dict[str, Any], routing_key: str) -> dict[str, Any]:
    """The Events API v2 body: `trigger` with a payload for firing, a bare `resolve` otherwise."""
    if event.get("kind") == "resolved":
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": dedup_key(event)}
    details = {
        "value": event.get("value"),
        "baseline": event.get("baseline"),
        "threshold": event.get("threshold"),
        "run_id": event.get("run_id"),
        "model_version": event.get("model_version"),
        "episode": event.get("episode"),
        "started_at": event.get("started_at"),
        "description": event.get("description"),
        "contributors": top_contributors(event, _CONTRIBUTORS),
    }
    document: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key(event),
        "payload": {
            "summary": truncate(headline(event).removeprefix("[FIRING] "), _SUMMARY_LIMIT),
            "source": SOURCE,
            # An unknown severity pages: better a loud page than a lost one.
            "severity": _SEVERITIES.get(str(event.get("severity")), "critical"),
            "component": event.get("model"),
            "group": event.get("alert"),
            "class": event.get("rule_kind"),
            "custom_details": {k: v for k, v in details.items() if v is not None},
        },
        "client": SOURCE,
    }
    if event.get("at"):
        document["payload"]["timestamp"] = event["at"]
    url = event.get("status_url")
    if url:
        document["client_url"] = url
        document["links"] = [{"href": url, "text": "persistence-monitor status page"}]
    return document


class PagerDutyNotifier(NotifierBase):
    """Triggers and resolves PagerDuty alerts through the Events API v2 (success is 202)."""

    kind = "pagerduty"

    def __init__(self, spec: PagerDutySpec, client: httpx.Client) -> None:
        super().__init__(
            name=spec.name, min_severity=spec.min_severity, max_age=spec.max_age, timeout=spec.timeout
        )
        self._routing_key = spec.routing_key.get_secret_value()
        self._target = HttpTarget.for_url(spec.url, timeout=spec.timeout, secrets=[self._routing_key])
        self._client = client

    def send(self, event: dict[str, Any], *, delivery_id: str) -> None:
        """Enqueue the trigger or resolve event; raises `DeliveryError` unless PagerDuty takes it."""
        body = json_body(pagerduty_event(event, self._routing_key))
        post(self._client, self._target, body, headers={"content-type": "application/json"})
