"""The dispatcher over a real SQLite store and real receivers: retries, backoff, restarts, secrets."""

from __future__ import annotations

import base64
import logging
import random
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from monitor.notifiers import Dispatcher, Notifier, new_http_client
from monitor.store import Store
from tests._outbox import enqueue, item, notifiers
from tests._receivers import Receiver, Reply, alert_event
from tests._services import free_port, wait_until

WHSEC = "whsec_" + base64.b64encode(b"a-signing-key-of-32-bytes-length").decode()


@pytest.fixture
def store(tmp_path):
    opened = Store.open(f"sqlite:///{tmp_path}/db.sqlite")
    yield opened
    opened.close()


def fast(store: Store, hooks: dict[str, Notifier], **kwargs: Any) -> Dispatcher:
    """A dispatcher whose backoff is milliseconds, so that retries happen within a test."""
    return Dispatcher(store, hooks, rng=random.Random(7), base_delay=0.01, max_delay=0.05, **kwargs)


def test_failing_receiver_ends_with_exactly_one_delivery_per_id(store, client, receiver):
    standardwebhooks = pytest.importorskip("standardwebhooks")
    receiver.fail_next(2, 503).fail_next(1, 429).fail_next(1, 500)
    hooks = notifiers(client, {"name": "hook", "kind": "webhook", "url": receiver.url, "secret": WHSEC})
    ids = [enqueue(store, "hook", alert_event(model=f"m{i}")) for i in range(3)]

    assert fast(store, hooks).drain(timeout=20)

    accepted = [r.headers["webhook-id"] for r in receiver.accepted()]
    assert sorted(accepted) == sorted(ids)  # exactly one accepted delivery per id
    verifier = standardwebhooks.Webhook(WHSEC)
    for request in receiver.requests:  # every attempt is signed afresh with the same id
        assert verifier.verify(request.body, request.headers)["id"]
    attempts = {i: [r for r in receiver.requests if r.headers["webhook-id"] == i] for i in ids}
    assert sum(len(a) for a in attempts.values()) == 7
    assert all(item(store, i).status == "delivered" for i in ids)
    assert sum(item(store, i).attempts for i in ids) == 7
    counts = store.notification_counts()
    assert counts[("hook", "delivered")] == 3 and counts[("hook", "retried")] >= 4
    assert store.outbox_pending() == 0


@pytest.mark.parametrize("status", [400, 401, 404])
def test_a_4xx_is_dropped_after_one_attempt(store, client, receiver, status, caplog):
    receiver.fail_next(1, status)
    hooks = notifiers(client, {"name": "hook", "kind": "webhook", "url": receiver.url})
    item_id = enqueue(store, "hook")
    with caplog.at_level(logging.WARNING):
        assert fast(store, hooks).drain(timeout=5)
    dropped = item(store, item_id)
    assert dropped.status == "dropped" and dropped.attempts == 1 and f"HTTP {status}" in dropped.last_error
    assert len(receiver.requests) == 1
    (line,) = [r for r in caplog.records if r.name == "monitor.notifiers._dispatcher"]
    assert line.levelno == logging.ERROR
    assert f"notifier hook: delivery {item_id} attempt 1 failed, not retried: POST" in line.getMessage()


@pytest.mark.parametrize(("retry_after", "expected"), [("30", 30.0), ("100000", 300.0), (None, None)])
def test_retry_after_is_honoured_and_capped(store, client, receiver, retry_after, expected):
    receiver.fail_next(1, 429, headers={"retry-after": retry_after} if retry_after else {})
    hooks = notifiers(client, {"name": "hook", "kind": "webhook", "url": receiver.url})
    item_id = enqueue(store, "hook")
    now = datetime.now(UTC)
    dispatcher = Dispatcher(store, hooks, rng=random.Random(1), base_delay=2.0, max_delay=300.0)
    started = time.monotonic()
    assert dispatcher.deliver_due(now=now) == 1
    took = time.monotonic() - started  # the delay counts from the end of the attempt, within this
    waiting = item(store, item_id)
    assert waiting.status == "pending" and waiting.attempts == 1
    delay = (waiting.next_attempt_at - now).total_seconds()
    if expected is None:
        assert 0 <= delay <= 2.0 + took  # first retry without Retry-After: uniform(0, base_delay)
    else:
        assert expected - 0.001 <= delay <= expected + took + 0.001
    assert dispatcher.deliver_due(now=now + timedelta(seconds=delay / 2)) == 0  # not due yet


def test_backoff_is_capped_exponential_with_full_jitter(store):
    dispatcher = Dispatcher(store, {}, rng=random.Random(42), base_delay=2.0, max_delay=300.0)
    for attempts in range(1, 16):
        ceiling = min(300.0, 2.0 * 2 ** (attempts - 1))
        samples = [dispatcher.backoff(attempts) for _ in range(400)]
        assert all(0.0 <= s <= ceiling for s in samples)
        # Full jitter: spread over the whole range, not clustered near the ceiling.
        assert min(samples) < 0.1 * ceiling and max(samples) > 0.9 * ceiling
        assert 0.4 * ceiling < sum(samples) / len(samples) < 0.6 * ceiling
    assert dispatcher.backoff(10_000) <= 300.0  # no overflow
    assert dispatcher.backoff(3, retry_after=1000.0) == 300.0
    assert dispatcher.backoff(3, retry_after=12.0) == 12.0
    same = Dispatcher(store, {}, rng=random.Random(42))
    again = Dispatcher(store, {}, rng=random.Random(42))
    assert [same.backoff(a) for a in range(1, 9)] == [again.backoff(a) for a in range(1, 9)]


def test_an_item_older_than_max_age_is_dropped_unsent(store, client, receiver):
    hooks = notifiers(client, {"name": "hook", "kind": "webhook", "url": receiver.url, "max_age": "1m"})
    item_id = enqueue(store, "hook")
    created = item(store, item_id).created_at
    assert Dispatcher(store, hooks).deliver_due(now=created + timedelta(seconds=61)) == 1
    dropped = item(store, item_id)
    assert dropped.status == "dropped" and "max_age (1m)" in dropped.last_error
    assert receiver.requests == []


def test_min_severity_and_unknown_notifier_are_dropped(store, client, receiver):
    hooks = notifiers(
        client, {"name": "hook", "kind": "webhook", "url": receiver.url, "min_severity": "critical"}
    )
    quiet = enqueue(store, "hook", alert_event(severity="warning"))
    loud = enqueue(store, "hook", alert_event(severity="critical"))
    orphan = enqueue(store, "gone")
    assert Dispatcher(store, hooks).drain(timeout=5)
    assert item(store, quiet).status == "dropped"
    assert "below the notifier's min_severity critical" in item(store, quiet).last_error
    assert item(store, loud).status == "delivered"
    assert item(store, orphan).last_error == "notifier 'gone' is no longer configured: nothing can deliver it"
    assert [r.json()["severity"] for r in receiver.requests] == ["critical"]


def test_a_restarted_dispatcher_delivers_once_the_receiver_is_back(store, client):
    port = free_port()  # nothing listens yet: the receiver is down
    hooks = notifiers(client, {"name": "hook", "kind": "webhook", "url": f"http://127.0.0.1:{port}"})
    item_id = enqueue(store, "hook")
    assert fast(store, hooks).deliver_due() == 1
    down = item(store, item_id)
    assert down.status == "pending" and down.attempts == 1 and "connection failed" in down.last_error

    # A new process: new notifiers, a new dispatcher; only the store carries over.
    with Receiver(port=port) as back, new_http_client() as fresh:
        restarted = fast(store, notifiers(fresh, {"name": "hook", "kind": "webhook", "url": back.url}))
        assert restarted.drain(timeout=10)
    assert [r.headers["webhook-id"] for r in back.requests] == [item_id]
    assert item(store, item_id).status == "delivered" and item(store, item_id).attempts == 2


def test_a_receiver_that_times_out_costs_one_timeout_per_pass(store, client):
    with Receiver(default=Reply(200, delay=0.5)) as slow:
        hooks = notifiers(client, {"name": "hook", "kind": "webhook", "url": slow.url, "timeout": "0.1s"})
        ids = [enqueue(store, "hook", alert_event(model=f"m{i}")) for i in range(4)]
        assert Dispatcher(store, hooks).deliver_due() == 4
        wait_until(lambda: len(slow.requests) == 1, timeout=5, what="the one timed-out request")
    items = [item(store, i) for i in ids]
    assert [i.attempts for i in items] == [1, 0, 0, 0]  # the others were not tried: no attempt spent
    assert all(i.status == "pending" for i in items)
    assert all(i.next_attempt_at == items[0].next_attempt_at for i in items)
    assert "not tried: hook failed just before" in items[1].last_error


def test_a_resolved_event_never_overtakes_its_firing_event(store, client, receiver):
    hooks = notifiers(client, {"name": "pager", "kind": "webhook", "url": receiver.url})
    receiver.fail_next(1, 503)
    firing = enqueue(store, "pager", alert_event())
    now = datetime.now(UTC)
    dispatcher = Dispatcher(store, hooks, base_delay=60.0, max_delay=60.0, rng=random.Random(3))
    dispatcher.deliver_due(now=now)
    retry_at = item(store, firing).next_attempt_at

    resolved = enqueue(store, "pager", alert_event("resolved"))
    other = enqueue(store, "pager", alert_event(model="another-model"))
    later = datetime.now(UTC)
    assert later < retry_at
    # The same after a restart: the new dispatcher learns from the store what waits for a retry.
    for current in (dispatcher, Dispatcher(store, hooks)):
        current.deliver_due(now=later)
        assert item(store, resolved).status == "pending"
        assert item(store, resolved).next_attempt_at == retry_at
        assert f"waiting for the earlier notification {firing}" in item(store, resolved).last_error
    assert item(store, other).status == "delivered"  # other alerts are not held up

    Dispatcher(store, hooks).deliver_due(now=retry_at + timedelta(seconds=1))
    kinds = [(r.json()["model"], r.json()["kind"]) for r in receiver.accepted()]
    assert kinds == [("another-model", "firing"), ("resnet18-prod", "firing"), ("resnet18-prod", "resolved")]


def test_run_delivers_in_the_background_and_survives_store_errors(store, client, receiver, monkeypatch):
    hooks = notifiers(client, {"name": "hook", "kind": "webhook", "url": receiver.url})
    real_claim = store.claim_due
    calls = {"n": 0}

    def flaky_claim(**kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("database is locked")
        return real_claim(**kwargs)

    monkeypatch.setattr(store, "claim_due", flaky_claim)
    stop = threading.Event()
    dispatcher = Dispatcher(store, hooks)
    thread = threading.Thread(target=dispatcher.run, args=(stop,), daemon=True)
    thread.start()
    try:
        item_id = enqueue(store, "hook")
        wait_until(lambda: item(store, item_id).status == "delivered", timeout=10, what="delivery")
    finally:
        stop.set()
        thread.join(timeout=5)
    assert not thread.is_alive() and calls["n"] >= 2
    assert len(receiver.requests) == 1


def test_drain_gives_up_at_its_timeout(store, client, receiver):
    receiver.fail_next(1000, 503)
    hooks = notifiers(client, {"name": "hook", "kind": "webhook", "url": receiver.url})
    enqueue(store, "hook")
    assert not fast(store, hooks).drain(timeout=0.5)
    assert store.outbox_pending() == 1 and len(receiver.requests) >= 2


def test_secrets_never_reach_logs_errors_or_the_outbox(store, client, caplog):
    slack_token = "SLACKTOKENxyz123456"
    routing_key = "ROUTINGKEY0123456789abcdefghijkl"
    key_part = WHSEC.removeprefix("whsec_")
    secrets = [slack_token, routing_key, WHSEC, key_part, "PASSWORD99", "QUERYTOKEN77"]
    # Receivers that echo their notifier's secrets back (the worst case): a 503, then 400s.
    echoes = {
        "chat": f"no such hook /services/T1/B1/{slack_token} (token {slack_token})",
        "pager": f"routing key {routing_key} is unknown",
        "hook": f"bad signature for {WHSEC} ({key_part}) from user:PASSWORD99 token=QUERYTOKEN77",
    }
    with Receiver() as chat, Receiver() as pager, Receiver() as hook:
        for rx, name in ((chat, "chat"), (pager, "pager"), (hook, "hook")):
            rx.fail_next(1, 503, body=echoes[name].encode()).fail_next(10, 400, body=echoes[name].encode())
        hooks = notifiers(
            client,
            {"name": "chat", "kind": "slack", "url": f"{chat.url}/services/T1/B1/{slack_token}"},
            {"name": "pager", "kind": "pagerduty", "routing_key": routing_key, "url": pager.url},
            {
                "name": "hook",
                "kind": "webhook",
                "url": f"http://user:PASSWORD99@127.0.0.1:{hook.port}/h?token=QUERYTOKEN77",
                "secret": WHSEC,
            },
        )
        ids = [enqueue(store, name) for name in ("chat", "pager", "hook")]
        with caplog.at_level(logging.DEBUG):
            assert fast(store, hooks).drain(timeout=10)
    # The receivers did get the secrets (so that the test would notice a leak) ...
    assert chat.requests[0].path.endswith(slack_token)
    assert pager.requests[0].json()["routing_key"] == routing_key
    assert hook.requests[0].path.endswith("QUERYTOKEN77")
    # ... but no log line, stored error or repr shows any of them.
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "HTTP Request: POST" in logged  # httpx's own request line: redacted
    stored = [item(store, i).last_error or "" for i in ids]
    assert all("HTTP 400" in error for error in stored), stored
    assert "no such hook" in stored[0] and "is unknown" in stored[1]  # the receiver's reason stays
    shown = [logged, *stored, *map(repr, hooks.values())]
    for secret in secrets:
        assert not any(secret in text for text in shown), secret


def test_drain_with_a_hanging_receiver_delivers_the_others_and_leaves_nothing_leased(store, client, receiver):
    with Receiver(default=Reply(200, delay=4.0)) as hanging:
        hooks = notifiers(
            client,
            {"name": "stuck", "kind": "webhook", "url": hanging.url, "timeout": "1.5s"},
            {"name": "fine", "kind": "webhook", "url": receiver.url},
        )
        stuck = enqueue(store, "stuck", alert_event(model="m-stuck"))
        fine = [enqueue(store, "fine", alert_event(model=f"m{i}")) for i in range(3)]
        started = time.monotonic()
        assert not fast(store, hooks).drain(timeout=0.5)
        took = time.monotonic() - started
    # run-once's bound, as before: the drain timeout, plus the attempt under way when it ran out.
    assert took < 0.5 + 1.5 + 1.5, took
    assert all(item(store, i).status == "delivered" for i in fine) and len(receiver.requests) == 3
    waiting = item(store, stuck)
    assert (
        waiting.status == "pending"
        and waiting.attempts == 1
        and "no answer within 1.5s" in waiting.last_error
    )
    # Its attempt was finished and recorded, not left under a lease: the next run may retry it now.
    assert waiting.next_attempt_at < datetime.now(UTC) + timedelta(seconds=1)
