"""The Alertmanager notifier against a real Alertmanager (Debian's `prometheus-alertmanager`).

The `alertmanager` fixture is tests/_alertmanager.py's: skipped when the binary is missing, unless
PM_TEST_ALERTMANAGER=require (CI sets it: there a missing binary is a broken image, not a reason
to skip).
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from monitor.notifiers import AlertmanagerNotifier, build_notifiers
from monitor.settings import AlertsSettings
from tests._receivers import alert_event
from tests._services import wait_until

pytestmark = pytest.mark.slow  # a real Alertmanager


def notifier(client: httpx.Client, url: str, **options: Any) -> AlertmanagerNotifier:
    spec = AlertsSettings.model_validate({"notifiers": [{"name": "am", "kind": "alertmanager", "url": url}]})
    built = build_notifiers(spec.notifiers, client)["am"]
    assert isinstance(built, AlertmanagerNotifier)
    for name, value in options.items():
        setattr(built, name, value)
    return built


def active(url: str, model: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{url}/api/v2/alerts",
        params={"filter": f'model="{model}"', "active": "true", "silenced": "false", "inhibited": "false"},
        timeout=5,
    )
    response.raise_for_status()
    return [a for a in response.json() if a["status"]["state"] == "active"]


def event(kind: str, model: str, **overrides: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    return alert_event(
        kind,
        model=model,
        started_at=(now - timedelta(minutes=10)).isoformat(),
        at=now.isoformat(),
        ends_at=now.isoformat() if kind == "resolved" else None,
        **overrides,
    )


def test_firing_then_resolved(alertmanager, client):
    model = f"m-{uuid.uuid4().hex[:8]}"
    am = notifier(client, alertmanager)
    am.send(event("firing", model), delivery_id=uuid.uuid4().hex)

    (alert,) = active(alertmanager, model)
    assert alert["labels"] == {
        "alertname": "PersistenceDrop",
        "model": model,
        "severity": "warning",
        "service": "persistence-monitor",
    }
    assert alert["annotations"]["summary"].startswith("P(M) of resnet18-prod dropped")
    assert alert["annotations"]["value"] == "0.810" and alert["generatorURL"] == "http://127.0.0.1:9775/"
    ends = datetime.fromisoformat(alert["endsAt"].replace("Z", "+00:00"))
    assert timedelta(minutes=14) < ends - datetime.now(UTC) <= timedelta(minutes=15)

    am.send(event("resolved", model), delivery_id=uuid.uuid4().hex)
    assert active(alertmanager, model) == []


def test_refresh_keeps_a_firing_alert_alive_and_the_ttl_ends_it(alertmanager, client):
    model = f"m-{uuid.uuid4().hex[:8]}"
    am = notifier(client, alertmanager, ttl=1.0)  # short-lived: a missed refresh shows quickly
    firing = event("firing", model)
    am.send(firing, delivery_id=uuid.uuid4().hex)
    first_end = active(alertmanager, model)[0]["endsAt"]

    deadline = time.monotonic() + 1.6  # longer than the TTL: only the refreshes keep it active
    while time.monotonic() < deadline:
        am.refresh([firing, event("resolved", f"{model}-other")])
        assert len(active(alertmanager, model)) == 1
        time.sleep(0.3)
    (alert,) = active(alertmanager, model)
    assert alert["endsAt"] > first_end  # each refresh moved endsAt forward
    assert active(alertmanager, f"{model}-other") == []  # refresh sends firing alerts only

    # No more refreshes (we crashed, say): Alertmanager lets it go by itself.
    wait_until(lambda: active(alertmanager, model) == [], timeout=5, every=0.1, what="the alert to expire")


def test_refresh_posts_every_firing_alert_in_one_request(alertmanager, client):
    models = [f"m-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    notifier(client, alertmanager).refresh([event("firing", m) for m in models])
    assert all(len(active(alertmanager, m)) == 1 for m in models)
