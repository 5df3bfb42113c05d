"""Notifiers against real HTTP receivers on loopback: payloads, signatures, classification."""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import json
import logging
import os
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

import monitor
from monitor.errors import ConfigError
from monitor.notifiers import (
    AlertmanagerNotifier,
    DeliveryError,
    LogNotifier,
    Notifier,
    PagerDutyNotifier,
    SlackNotifier,
    WebhookNotifier,
    build_notifiers,
    parse_retry_after,
    slack_message,
)
from monitor.settings import AlertsSettings, NotifierSpec
from tests._receivers import Receiver, Reply, alert_event
from tests._services import free_port

WHSEC = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def spec(**fields: Any) -> NotifierSpec:
    return AlertsSettings.model_validate({"notifiers": [fields]}).notifiers[0]


def notifier(client: httpx.Client, **fields: Any) -> Notifier:
    return build_notifiers([spec(name="n", **fields)], client)["n"]


def delivery_id() -> str:
    return uuid.uuid4().hex


# -- webhook --------------------------------------------------------------------------------------


def test_webhook_signature_verifies_with_standard_webhooks(client, receiver):
    standardwebhooks = pytest.importorskip("standardwebhooks")
    hook = notifier(client, kind="webhook", url=f"{receiver.url}/hook?x=1", secret=WHSEC)
    event = alert_event(summary="P(M) fell — ünïcode stays UTF-8")
    did = delivery_id()
    hook.send(event, delivery_id=did)

    (request,) = receiver.requests
    assert request.path == "/hook?x=1"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == f"persistence-monitor/{monitor.__version__}"
    assert request.headers["webhook-id"] == did
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 5
    # The independent implementation: the reference library of the spec.
    assert standardwebhooks.Webhook(WHSEC).verify(request.body, request.headers) == event
    assert b" " not in request.body.split(b'"summary"')[0]  # compact JSON
    assert "ünïcode".encode() in request.body  # UTF-8, not \u escapes


def test_webhook_signature_by_the_spec(client, receiver):
    """The same check written out from the Standard Webhooks spec, without any library."""
    notifier(client, kind="webhook", url=receiver.url, secret=WHSEC).send(
        alert_event(), delivery_id=(did := delivery_id())
    )
    (request,) = receiver.requests
    key = base64.b64decode(WHSEC.split("_", 1)[1])
    signed = did.encode() + b"." + request.headers["webhook-timestamp"].encode() + b"." + request.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    version, signature = request.headers["webhook-signature"].split(",", 1)
    assert version == "v1" and hmac.compare_digest(signature, expected)


def test_webhook_without_secret_is_not_signed(client, receiver):
    notifier(client, kind="webhook", url=receiver.url).send(alert_event(), delivery_id=delivery_id())
    (request,) = receiver.requests
    assert "webhook-signature" not in request.headers
    assert {"webhook-id", "webhook-timestamp"} <= set(request.headers)


def test_webhook_body_has_no_nan(client, receiver):
    notifier(client, kind="webhook", url=receiver.url).send(
        alert_event(value=float("nan")), delivery_id=delivery_id()
    )
    assert receiver.requests[0].json()["value"] is None


# -- classification -------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_retryable_statuses(client, receiver, status):
    receiver.fail_next(1, status)
    with pytest.raises(DeliveryError) as caught:
        notifier(client, kind="webhook", url=f"{receiver.url}/in?token=abc").send(
            alert_event(), delivery_id=delivery_id()
        )
    error = caught.value
    assert error.retryable and error.status == status and error.retry_after is None
    assert f"HTTP {status}" in error.message and "token=abc" not in error.message
    assert f"POST {receiver.url}/in?…" in error.message


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422])
def test_other_4xx_are_not_retried(client, receiver, status):
    receiver.fail_next(1, status, body=b'{"error": "bad request"}')
    with pytest.raises(DeliveryError) as caught:
        notifier(client, kind="webhook", url=receiver.url).send(alert_event(), delivery_id=delivery_id())
    assert not caught.value.retryable and caught.value.status == status
    assert "bad request" in caught.value.message  # the receiver's own reason, shortened


def test_a_redirect_is_not_followed(client, receiver):
    receiver.fail_next(1, 302, headers={"location": "http://127.0.0.1:1/elsewhere"})
    with pytest.raises(DeliveryError) as caught:
        notifier(client, kind="webhook", url=receiver.url).send(alert_event(), delivery_id=delivery_id())
    assert not caught.value.retryable and caught.value.status == 302
    assert len(receiver.requests) == 1


def test_retry_after_in_seconds(client, receiver):
    receiver.fail_next(1, 429, headers={"retry-after": "7"})
    with pytest.raises(DeliveryError) as caught:
        notifier(client, kind="webhook", url=receiver.url).send(alert_event(), delivery_id=delivery_id())
    assert caught.value.retryable and caught.value.retry_after == 7.0


def test_retry_after_as_http_date(client, receiver):
    later = email.utils.formatdate(time.time() + 120, usegmt=True)
    receiver.fail_next(1, 503, headers={"retry-after": later})
    with pytest.raises(DeliveryError) as caught:
        notifier(client, kind="webhook", url=receiver.url).send(alert_event(), delivery_id=delivery_id())
    assert caught.value.retry_after is not None and 115 <= caught.value.retry_after <= 121


def test_parse_retry_after():
    assert parse_retry_after("0") == 0.0
    assert parse_retry_after(" 12 ") == 12.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: now
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412460.0) == 20.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("") is None and parse_retry_after(None) is None


def test_a_timeout_is_retryable(client, receiver):
    receiver.fail_next(1, 200, delay=1.0)
    with pytest.raises(DeliveryError) as caught:
        notifier(client, kind="webhook", url=receiver.url, timeout="0.2s").send(
            alert_event(), delivery_id=delivery_id()
        )
    assert caught.value.retryable and caught.value.status is None
    assert "no answer within 0.2s" in caught.value.message


def test_a_closed_port_is_retryable(client):
    with pytest.raises(DeliveryError) as caught:
        notifier(client, kind="webhook", url=f"http://127.0.0.1:{free_port()}/x").send(
            alert_event(), delivery_id=delivery_id()
        )
    assert caught.value.retryable and caught.value.status is None
    assert "connection failed" in caught.value.message


# -- slack ----------------------------------------------------------------------------------------


def test_slack_message_shape(client, receiver):
    slack = notifier(client, kind="slack", url=f"{receiver.url}/services/T0/B0/tok")
    slack.send(alert_event(summary="drop <b>&</b>"), delivery_id=delivery_id())
    slack.send(alert_event("resolved"), delivery_id=delivery_id())
    firing, resolved = (r.json() for r in receiver.requests)
    assert receiver.requests[0].path == "/services/T0/B0/tok"

    assert firing["text"] == "[FIRING] drop <b>&</b>"  # plain text: Slack shows it in notifications
    assert resolved["text"].startswith("[RESOLVED] P(M) of resnet18-prod dropped")
    blocks = firing["blocks"]
    assert 1 <= len(blocks) <= 50
    assert "drop &lt;b&gt;&amp;&lt;/b&gt;" in blocks[0]["text"]["text"]  # mrkdwn-escaped
    fields = [f["text"] for f in blocks[1]["fields"]]
    assert "*P(M)*\n0.810" in fields and "*Baseline*\n0.860" in fields
    contributors = blocks[2]["text"]["text"]
    assert "defect-type / line-a / full" in contributors and "0.910 → 0.800 (-0.0275)" in contributors
    assert contributors.index("line-a") < contributors.index("line-b")  # largest change first
    assert "<http://127.0.0.1:9775/|status page>" in blocks[-1]["elements"][0]["text"]


def test_slack_message_stays_within_limits():
    many = [
        {"task": f"t{i}", "dataset": "d", "strategy": "s", "before": 0.9, "after": 0.1, "contribution": -i}
        for i in range(200)
    ]
    message = slack_message(alert_event(summary="x" * 10_000, contributors=many, value=None))
    assert "\n" not in message["text"] and len(message["text"]) <= 3000
    assert len(message["blocks"]) <= 50
    for block in message["blocks"]:
        if "text" in block:
            assert len(block["text"]["text"]) <= 3000
        for field in block.get("fields", []):
            assert len(field["text"]) <= 2000
    assert "*P(M)*\nn/a" in [f["text"] for f in message["blocks"][1]["fields"]]
    assert message["blocks"][2]["text"]["text"].count("•") == 5


# -- pagerduty ------------------------------------------------------------------------------------


def test_pagerduty_trigger_then_resolve(client):
    accepted = Reply(202, {"content-type": "application/json"}, b'{"status":"success"}')
    with Receiver(default=accepted) as pagerduty:
        pager = notifier(client, kind="pagerduty", routing_key="R" * 32, url=f"{pagerduty.url}/v2/enqueue")
        pager.send(alert_event(summary="s" * 2000), delivery_id=delivery_id())
        pager.send(alert_event(), delivery_id=delivery_id())  # the same episode fires again
        pager.send(alert_event("resolved"), delivery_id=delivery_id())
    trigger, again, resolve = (r.json() for r in pagerduty.requests)
    assert {r.path for r in pagerduty.requests} == {"/v2/enqueue"}

    assert trigger["routing_key"] == "R" * 32 and trigger["event_action"] == "trigger"
    assert trigger["dedup_key"] == "persistence-monitor/resnet18-prod/PersistenceDrop"
    assert again["dedup_key"] == resolve["dedup_key"] == trigger["dedup_key"]
    payload = trigger["payload"]
    assert len(payload["summary"]) <= 1024 and payload["summary"].startswith("sss")
    assert payload["source"] == "persistence-monitor" and payload["severity"] == "warning"
    assert payload["component"] == "resnet18-prod" and payload["class"] == "drop"
    details = payload["custom_details"]
    assert details["value"] == 0.81 and details["baseline"] == 0.86
    assert details["model_version"] == "3f0c1a2b4d5e" and len(details["contributors"]) == 2
    assert resolve == {
        "routing_key": "R" * 32,
        "event_action": "resolve",
        "dedup_key": "persistence-monitor/resnet18-prod/PersistenceDrop",
    }


def test_pagerduty_rejection_is_not_retried(client):
    body = b'{"status":"invalid event","message":"Event object is invalid"}'
    with Receiver(default=Reply(400, body=body)) as pagerduty:
        pager = notifier(client, kind="pagerduty", routing_key="R" * 32, url=pagerduty.url)
        with pytest.raises(DeliveryError) as caught:
            pager.send(alert_event(), delivery_id=delivery_id())
    assert not caught.value.retryable and "Event object is invalid" in caught.value.message


# -- alertmanager (payload; the real Alertmanager is in test_notifiers_alertmanager.py) -----------


def test_alertmanager_payload(client, receiver):
    am = notifier(client, kind="alertmanager", url=f"{receiver.url}/prefix/")
    assert isinstance(am, AlertmanagerNotifier)
    am.send(alert_event(), delivery_id=delivery_id())
    am.send(alert_event("resolved"), delivery_id=delivery_id())
    firing, resolved = receiver.requests
    assert firing.path == resolved.path == "/prefix/api/v2/alerts"
    (alert,) = firing.json()
    assert alert["labels"] == {
        "alertname": "PersistenceDrop",
        "model": "resnet18-prod",
        "severity": "warning",
        "service": "persistence-monitor",
    }
    assert alert["annotations"]["summary"].startswith("P(M) of resnet18-prod")
    assert alert["startsAt"] == "2026-11-29T06:00:00+00:00"
    assert alert["generatorURL"] == "http://127.0.0.1:9775/"
    # Firing: alive for the TTL (15 minutes) unless refreshed; RFC 3339 in UTC.
    ends_in = datetime.fromisoformat(alert["endsAt"]) - datetime.now(UTC)
    assert alert["endsAt"].endswith("Z") and 14 * 60 < ends_in.total_seconds() <= 15 * 60
    assert resolved.json()[0]["endsAt"] == "2026-11-29T06:10:00+00:00"
    assert resolved.json()[0]["labels"] == alert["labels"]


def test_alertmanager_refresh_is_best_effort(client, receiver, caplog):
    am = notifier(client, kind="alertmanager", url=receiver.url)
    assert isinstance(am, AlertmanagerNotifier)
    events = [alert_event(model="a"), alert_event(model="b"), alert_event("resolved", model="c")]
    am.refresh(events)
    (request,) = receiver.requests
    assert [a["labels"]["model"] for a in request.json()] == ["a", "b"]  # one request, firing only
    am.min_severity = "critical"
    am.refresh([alert_event(model="a", severity="critical"), alert_event(model="b", severity="info")])
    assert [a["labels"]["model"] for a in receiver.requests[1].json()] == ["a"]
    del receiver.requests[1]
    am.refresh([])
    assert len(receiver.requests) == 1

    down = notifier(client, kind="alertmanager", url=f"http://127.0.0.1:{free_port()}")
    assert isinstance(down, AlertmanagerNotifier)
    with caplog.at_level(logging.WARNING):
        down.refresh(events)  # does not raise
    assert "refreshing 2 firing alert(s) in n failed" in caplog.text


# -- log, severity, build -------------------------------------------------------------------------


def test_log_notifier(caplog):
    log = notifier(httpx.Client(), kind="log")
    assert isinstance(log, LogNotifier)
    with caplog.at_level(logging.INFO, logger="monitor.alerts"):
        log.send(alert_event(), delivery_id="a" * 32)
        log.send(alert_event("resolved"), delivery_id="b" * 32)
    firing, resolved = caplog.records
    assert firing.levelno == logging.WARNING and firing.getMessage().startswith("[FIRING] P(M)")
    assert resolved.levelno == logging.INFO and resolved.getMessage().startswith("[RESOLVED]")
    assert "P(M) 0.810, baseline 0.860" in firing.getMessage()
    assert firing.alert_event["model"] == "resnet18-prod"


@pytest.mark.parametrize(
    ("floor", "wanted"),
    [
        ("info", {"info", "warning", "critical"}),
        ("warning", {"warning", "critical"}),
        ("critical", {"critical"}),
    ],
)
def test_min_severity(floor, wanted):
    log = notifier(httpx.Client(), kind="log", min_severity=floor)
    assert {s for s in ("info", "warning", "critical") if log.wants(alert_event(severity=s))} == wanted
    assert log.wants(alert_event(severity="unheard-of"))  # fails open: never silently filtered


def test_build_notifiers(client):
    specs = AlertsSettings.model_validate(
        {
            "notifiers": [
                {"name": "hook", "kind": "webhook", "url": "https://h.example/pm", "secret": WHSEC},
                {"name": "chat", "kind": "slack", "url": "https://hooks.slack.com/services/T/B/x"},
                {"name": "pager", "kind": "pagerduty", "routing_key": "k" * 32, "min_severity": "critical"},
                {"name": "am", "kind": "alertmanager", "url": "http://am:9093", "timeout": "3s"},
                {"name": "log", "kind": "log", "max_age": "1h"},
            ]
        }
    ).notifiers
    built = build_notifiers(specs, client)
    assert {name: type(n) for name, n in built.items()} == {
        "hook": WebhookNotifier,
        "chat": SlackNotifier,
        "pager": PagerDutyNotifier,
        "am": AlertmanagerNotifier,
        "log": LogNotifier,
    }
    assert all(isinstance(n, Notifier) for n in built.values())
    assert built["pager"].min_severity == "critical" and built["am"].timeout == 3.0
    assert built["log"].max_age == 3600.0 and built["hook"].kind == "webhook"
    assert "x" not in repr(built["chat"]).replace("Notifier", "")


def test_the_schema_refuses_bad_receivers_naming_the_field_not_the_secret(tmp_path):
    from monitor.settings import settings_from_mapping

    bad = [
        {"name": "a", "kind": "webhook", "url": "https://h.example", "secret": "whsec_not*base64!SECRET"},
        {"name": "b", "kind": "slack", "url": "ftp://hooks.example/SLACKSECRET"},
        {"name": "c", "kind": "alertmanager", "url": "not a url"},
        {"name": "d", "kind": "pagerduty", "routing_key": "k" * 32, "url": "https://:80/SECRET"},
        {"name": "e", "kind": "webhook", "url": "http://h.example:99999/SECRET"},
    ]
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping({"alerts": {"notifiers": bad}}, base_dir=tmp_path)
    found = dict(caught.value.problems)
    assert found["alerts.notifiers[0].secret"] == "the webhook secret is not 'whsec_' followed by base64"
    assert found["alerts.notifiers[1].url"] == "expected an http:// or https:// URL"
    assert found["alerts.notifiers[2].url"] == "expected an http:// or https:// URL"
    assert found["alerts.notifiers[3].url"] == "the URL has no host"
    assert found["alerts.notifiers[4].url"] == "not a valid URL"
    assert "SECRET" not in str(caught.value)


def test_the_notifiers_do_not_import_torch():
    import subprocess
    import sys

    code = "import sys, monitor.notifiers; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ)
    assert result.stdout.strip() == "False", result.stderr


def test_json_body_is_compact():
    from monitor.notifiers._render import json_body

    assert json_body({"a": [1, 2.5, float("inf")], "b": "é"}) == '{"a":[1,2.5,null],"b":"é"}'.encode()
    event = alert_event()
    assert json.loads(json_body(event)) == event
