"""Alerts end to end: `run-once` fires and resolves through a signed webhook and a real Alertmanager.

The `alertmanager` fixture is tests/_alertmanager.py's.
"""

from __future__ import annotations

import base64
import json

import httpx
import pytest
from standardwebhooks import Webhook

from tests._cli import cli
from tests._receivers import Receiver
from tests._workspace import basic_config, write_config, write_snapshot, write_tiny_cnn

pytestmark = pytest.mark.slow  # trains a grid twice through the CLI, and a real Alertmanager

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def active_alerts(url: str) -> list[dict]:
    alerts = httpx.get(f"{url}/api/v2/alerts", params={"active": "true"}, timeout=5).json()
    return [a for a in alerts if a["labels"].get("service") == "persistence-monitor"]


def test_run_once_fires_and_resolves_through_webhook_and_alertmanager(tmp_path, alertmanager):
    write_tiny_cnn(tmp_path, name="e2e_cnn")
    for dataset, offset in (("a", 0), ("b", 40)):
        write_snapshot(tmp_path / "data" / dataset / "2026-01-01T00", (5, 6, 7), per_class=12, offset=offset)
    (tmp_path / "data" / "c").mkdir()  # a dataset whose first snapshot has not arrived yet
    with Receiver().fail_next(2) as hook:  # the receiver is down for the first two attempts
        config = basic_config(
            [{"name": "cnn", "architecture": "python:e2e_cnn:build"}],
            {"digits": [("a", "data/a"), ("b", "data/b"), ("c", "data/c")]},
            strategies=[{"name": "lin", "mode": "linear", "lr": 0.1, "epochs": 2, "batch_size": 16}],
            seeds=[0],
        )
        config["alerts"] = {
            "rules": [
                {"name": "GridIncomplete", "kind": "incomplete", "min_coverage": 1.0, "severity": "warning"}
            ],
            "notifiers": [
                {"name": "oncall", "kind": "webhook", "url": f"{hook.url}/pm", "secret": SECRET},
                {"name": "am", "kind": "alertmanager", "url": alertmanager},
            ],
        }
        path = write_config(tmp_path / "persistence-monitor.yaml", config)

        first = cli("run-once", "--json", "--config", str(path))
        assert first.returncode == 1, first.stderr  # partial: dataset c has no snapshot
        (event,) = json.loads(first.stdout)["alerts"]
        assert event["kind"] == "firing" and event["alert"] == "GridIncomplete"
        (delivered,) = hook.accepted()  # exactly one accepted delivery after the retries
        assert len(hook.requests) == 3
        assert len({r.headers["webhook-id"] for r in hook.requests}) == 1  # the same id on every attempt
        verified = Webhook(SECRET).verify(delivered.body, delivered.headers)
        assert verified["id"] == event["id"] and verified["episode"] == event["episode"]
        (active,) = active_alerts(alertmanager)
        assert active["labels"]["alertname"] == "GridIncomplete" and active["labels"]["model"] == "cnn"

        write_snapshot(tmp_path / "data" / "c" / "2026-01-01T00", (5, 6, 7), per_class=12, offset=80)
        second = cli("run-once", "--json", "--config", str(path))
        assert second.returncode == 0, second.stderr
        (resolved,) = json.loads(second.stdout)["alerts"]
        assert resolved["kind"] == "resolved" and resolved["episode"] == event["episode"]
        assert [Webhook(SECRET).verify(r.body, r.headers)["kind"] for r in hook.accepted()] == [
            "firing",
            "resolved",
        ]
        assert active_alerts(alertmanager) == []
