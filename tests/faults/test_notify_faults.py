"""Notification faults found by a hostile test: a hanging receiver, a slow failing one, an orphan.

Real receivers on loopback and a real SQLite store in `tmp_path`, as in the dispatcher's own tests.
Margins are generous (seconds against tenths): these must hold on a loaded two-core machine.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from monitor.notifiers import Dispatcher
from monitor.store import Store
from tests._outbox import enqueue, item, notifiers
from tests._receivers import Receiver, Recorded, Reply, alert_event
from tests._services import wait_until


@pytest.fixture
def store(tmp_path):
    opened = Store.open(f"sqlite:///{tmp_path}/db.sqlite")
    yield opened
    opened.close()


class _NoJitter(random.Random):
    """Backoff at its ceiling, so that "at least the backoff" is a fixed number of seconds."""

    def uniform(self, a: float, b: float) -> float:
        return b


class _TimedReceiver(Receiver):
    """A receiver that also notes when each request arrived and when its answer went out."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.arrived: list[float] = []
        self.answered: list[float] = []

    def _next_reply(self) -> Reply:
        self.arrived.append(time.monotonic())  # the request's body has been read: it has arrived
        return super()._next_reply()

    def _record(self, entry: Recorded) -> None:
        self.answered.append(time.monotonic())  # after the reply's delay, just before it is sent
        super()._record(entry)


# -- Defect A: one slow receiver held up every other notifier; backoff counted from the start ----


@pytest.mark.slow  # a receiver that hangs for seconds
def test_a_hanging_receiver_does_not_delay_another_notifiers_deliveries_or_retries(store, client):
    hang_timeout = 3.0  # the hanging receiver answers after 6 s; its notifier gives up after 3 s
    with (
        Receiver(default=Reply(200, delay=6.0)) as hanging,
        Receiver() as healthy,
    ):
        healthy.fail_next(1, 503)  # the healthy receiver's first attempt fails: its retry counts too
        hooks = notifiers(
            client,
            {"name": "stuck", "kind": "webhook", "url": hanging.url, "timeout": f"{hang_timeout}s"},
            {"name": "fine", "kind": "webhook", "url": healthy.url, "timeout": "5s"},
        )
        # The hanging notifier's event is older: a serial dispatcher tries it first.
        stuck = enqueue(store, "stuck", alert_event(model="m-stuck"))
        fine = enqueue(store, "fine", alert_event(model="m-fine"))
        dispatcher = Dispatcher(store, hooks, rng=random.Random(5), base_delay=0.01, max_delay=0.05)
        stop = threading.Event()
        started = time.monotonic()
        thread = threading.Thread(target=dispatcher.run, args=(stop,), daemon=True)
        thread.start()
        try:
            wait_until(lambda: healthy.accepted(), timeout=hang_timeout + 5, every=0.02, what="delivery")
            delivered_after = time.monotonic() - started
        finally:
            stop.set()
            thread.join(timeout=hang_timeout + 10)
    assert not thread.is_alive()
    # Both of the healthy receiver's attempts (the 503, then the retry) happened while the hanging
    # one was still being waited for: well before its notifier's timeout ran out.
    assert len(healthy.requests) == 2, healthy.requests
    assert delivered_after < hang_timeout / 2, f"delivered after {delivered_after:.2f}s"
    assert item(store, fine).status == "delivered" and item(store, fine).attempts == 2
    # The hanging one timed out and waits for a retry: nothing was lost.
    waiting = item(store, stuck)
    assert waiting.status == "pending" and waiting.attempts == 1
    assert f"no answer within {hang_timeout:g}s" in waiting.last_error


@pytest.mark.slow  # a receiver that answers slowly, real backoffs between its attempts
def test_backoff_is_counted_from_the_end_of_the_failed_attempt(store, client):
    backoff = 0.4  # the jitter-free backoff: each retry waits exactly this long
    answer_after = 0.6  # each failing attempt takes longer than the backoff
    with _TimedReceiver() as slow:
        slow.fail_next(2, 500, delay=answer_after)  # two slow 500s, then a prompt 200
        hooks = notifiers(client, {"name": "hook", "kind": "webhook", "url": slow.url, "timeout": "5s"})
        item_id = enqueue(store, "hook")
        dispatcher = Dispatcher(store, hooks, rng=_NoJitter(), base_delay=backoff, max_delay=backoff)
        assert dispatcher.drain(timeout=20)
        arrived, answered = list(slow.arrived), list(slow.answered)
    assert [r.status for r in slow.requests] == [500, 500, 200]
    assert item(store, item_id).status == "delivered" and item(store, item_id).attempts == 3
    # From the moment the receiver answered one attempt to the arrival of the next: at least the
    # backoff (the dispatcher hears the answer after the receiver sends it, so this is a lower
    # bound of what it waited), less a little for the clocks' granularity.
    gaps = [arrived[i + 1] - answered[i] for i in range(2)]
    assert all(gap >= backoff - 0.05 for gap in gaps), gaps


# -- Defect B: an outbox item for a notifier that is no longer configured ------------------------


def test_an_item_for_a_notifier_no_longer_configured_is_dropped_at_once(store, client, receiver, caplog):
    # Left by an earlier process whose configuration still had these notifiers: one was claimed
    # (leased for an hour) by a process that died, one waits for a retry in an hour, one is due
    # now. The odd name shows that names are quoted in the log line.
    leased = enqueue(store, "old-pager", alert_event(model="m1"))
    assert [i.id for i in store.claim_due(limit=10, lease_seconds=3600.0)] == [leased]
    retried = enqueue(store, "old-pager", alert_event(model="m2"))
    store.mark_retry(
        retried,
        attempts=1,
        next_attempt_at=datetime.now(UTC) + timedelta(hours=1),
        error="POST http://pager.example/: HTTP 503 Service Unavailable",
    )
    odd = enqueue(store, "chat\nfake line", alert_event(model="m3"))
    kept = enqueue(store, "hook")  # the configured notifier's own item is delivered as usual

    hooks = notifiers(client, {"name": "hook", "kind": "webhook", "url": receiver.url})
    drain_timeout = 10.0
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="monitor.notifiers"):
        done = Dispatcher(store, hooks).drain(drain_timeout)
    took = time.monotonic() - started

    assert done and took < drain_timeout / 4, f"drain took {took:.2f}s"
    assert store.outbox_pending() == 0
    for orphan in (retried, leased, odd):
        assert item(store, orphan).status == "dropped"
        assert "is no longer configured" in item(store, orphan).last_error
    assert item(store, kept).status == "delivered" and len(receiver.requests) == 1
    counts = store.notification_counts()
    assert counts[("old-pager", "dropped")] == 2 and counts[("chat\nfake line", "dropped")] == 1
    lines = [r.getMessage() for r in caplog.records if "no longer configured" in r.getMessage()]
    # One line per notifier (not one per item), on one line, naming it in quotes, saying what to do.
    assert len(lines) == 2, lines
    assert all("\n" not in line for line in lines)
    pager = next(line for line in lines if "'old-pager'" in line)
    assert "2 notification(s)" in pager and "alerts.notifiers" in pager
    assert any(repr("chat\nfake line") in line for line in lines)


def test_drops_for_a_notifier_no_longer_configured_are_on_metrics(tmp_path, store, client):
    from prometheus_client import CollectorRegistry

    from monitor.metrics import StoreCollector
    from tests._api import settings_for

    enqueue(store, "old-pager")
    assert Dispatcher(store, {}).drain(5.0)  # no notifier configured at all: still dropped
    registry = CollectorRegistry()
    registry.register(StoreCollector(store, settings_for(tmp_path)))
    dropped = {"notifier": "old-pager", "outcome": "dropped"}
    assert registry.get_sample_value("persistence_notifications_total", dropped) == 1.0
