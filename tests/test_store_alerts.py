"""Alert states and the notification outbox of the result store, on SQLite and PostgreSQL.

The backends (the `url` and `store` fixtures) and the helpers are those of tests/_store.py.
"""

from __future__ import annotations

import math
import threading
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select, update
from sqlalchemy.orm import Session

from monitor.store import AlertState, Base, OutboxItem, Store, new_run_id
from monitor.store._engine import connect_engine, parse_url
from monitor.store._migrate import alembic_config, head_revision
from monitor.store._schema import OutboxRow, utcnow
from tests._store import T0, cell, model_score, new_run_id_begun, plain_engine

EVENT = {
    "type": "firing",
    "alert": "PersistenceLow",
    "model": "r18",
    "value": 0.71,
    "baseline": None,
    "cells": [["defects", "line-b", "full", -0.12]],
    "note": "P(M) fell – below 0.8",
    "signed": True,
}


def state(model: str = "r18", rule: str = "PersistenceLow", **fields: Any) -> AlertState:
    values: dict[str, Any] = {
        "model": model,
        "rule": rule,
        "state": "firing",
        "severity": "critical",
        "since": T0,
        "consecutive": 2,
        "value": 0.71,
        "baseline": 0.85,
        "summary": "P(M) of r18 is 0.71, below 0.8 for 2 runs",
        "details": {"threshold": 0.8, "cells": [["defects", "line-b", "full"]]},
        "episode": "e" * 32,
        "last_run_id": None,
    }
    values.update(fields)
    return AlertState(**values)


def delivery(notifier: str = "oncall", **event: Any) -> tuple[str, str, dict[str, Any]]:
    return (uuid.uuid4().hex, notifier, {**EVENT, **event})


def enqueue(store: Store, *deliveries: tuple[str, str, dict[str, Any]]) -> list[str]:
    store.write_alerts([], list(deliveries))
    return [d[0] for d in deliveries]


def set_times(store: Store, item_id: str, **times: datetime) -> None:
    """Move an item's created_at / next_attempt_at, as if it had been written at another time."""
    with store._writing("test") as session:
        session.execute(update(OutboxRow).where(OutboxRow.id == item_id).values(**times))


def item(store: Store, item_id: str) -> OutboxItem:
    (found,) = [i for i in store.outbox_items(limit=1000) if i.id == item_id]
    return found


def without_updated_at(states: list[AlertState]) -> list[AlertState]:
    return [replace(s, updated_at=None) for s in states]


# -- migration -----------------------------------------------------------------------------------


def test_revision_0003_creates_the_alert_tables_and_matches_the_models(store: Store, url: str) -> None:
    engine = plain_engine(url)
    try:
        with engine.connect() as connection:
            assert MigrationContext.configure(connection).get_current_revision() == head_revision()
            inspector = inspect(connection)
            assert {"alert_states", "outbox", "notification_counts"} <= set(inspector.get_table_names())
            assert inspector.get_pk_constraint("alert_states")["constrained_columns"] == ["model", "rule"]
            assert inspector.get_pk_constraint("notification_counts")["constrained_columns"] == [
                "notifier",
                "outcome",
            ]
            indexes = {i["name"]: i["column_names"] for i in inspector.get_indexes("outbox")}
            assert indexes["ix_outbox_status_next_attempt_at"] == ["status", "next_attempt_at"]
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def test_revision_0003_downgrades_and_upgrades_again(url: str) -> None:
    with Store.open(url) as opened:
        enqueue(opened, delivery())
    engine = connect_engine(parse_url(url))
    try:
        with engine.begin() as connection:
            command.downgrade(alembic_config(connection), "0002")
            tables = set(inspect(connection).get_table_names())
            assert {"alert_states", "outbox", "notification_counts"}.isdisjoint(tables)
            assert "runs" in tables
    finally:
        engine.dispose()
    with Store.open(url) as reopened:
        assert reopened.outbox_pending() == 0
        enqueue(reopened, delivery())
        assert reopened.outbox_pending() == 1


# -- alert states --------------------------------------------------------------------------------


def test_write_alerts_alone_stores_states_and_pending_items(store: Store) -> None:
    assert (store.alert_states(), store.outbox_items(), store.outbox_pending()) == ([], [], 0)
    before = utcnow()
    item_id, notifier, event = delivery()
    states = [state(last_run_id=new_run_id()), state("vit", "PersistenceDrop", state="ok", episode=None)]

    store.write_alerts(states, [(item_id, notifier, event)])

    after = utcnow()
    stored = store.alert_states()
    assert without_updated_at(stored) == [states[0], states[1]]
    assert all(s.updated_at is not None and before <= s.updated_at <= after for s in stored)
    assert stored[0].since == T0 and stored[0].since.tzinfo is UTC
    (queued,) = store.outbox_items()
    assert (queued.id, queued.notifier, queued.event, queued.status, queued.attempts) == (
        item_id,
        "oncall",
        event,
        "pending",
        0,
    )
    assert before <= queued.created_at == queued.next_attempt_at <= after
    assert (queued.last_error, queued.delivered_at) == (None, None)
    assert store.outbox_pending() == 1
    store.write_alerts([], [])  # nothing to write: fine


def test_write_alerts_in_the_finish_run_hook_commits_with_the_run(store: Store) -> None:
    run_id = new_run_id_begun(store)
    queued = delivery()

    def hook(session: Session) -> None:
        store.write_alerts([state(last_run_id=run_id)], [queued], session=session)

    store.finish_run(
        run_id,
        status="completed",
        seconds=1.0,
        scores=[model_score("r18", 0.71)],
        cells=[cell("r18", "line-b", "full", 0.71)],
        extra=hook,
    )

    assert store.get_run(run_id).status == "completed"  # type: ignore[union-attr]
    assert [(s.model, s.rule, s.last_run_id) for s in store.alert_states()] == [
        ("r18", "PersistenceLow", run_id)
    ]
    assert [i.id for i in store.outbox_items()] == [queued[0]]


@pytest.mark.parametrize("failure", ["hook raises", "bad input"])
def test_a_failing_hook_leaves_no_states_no_items_and_no_run_result(store: Store, failure: str) -> None:
    store.write_alerts([state(consecutive=1, state="pending")], [])  # what was there before the run
    before = store.alert_states()
    run_id = new_run_id_begun(store)

    def hook(session: Session) -> None:
        store.write_alerts(
            [state(consecutive=2), state("vit")], [delivery(), delivery("chat")], session=session
        )
        if failure == "hook raises":
            raise RuntimeError("alert evaluation crashed")
        store.write_alerts([state("vit", details={"loss": math.nan})], [], session=session)

    with pytest.raises(RuntimeError if failure == "hook raises" else ValueError):
        store.finish_run(
            run_id,
            status="completed",
            seconds=1.0,
            scores=[model_score("r18", 0.71)],
            cells=[cell("r18", "line-b", "full", 0.71)],
            extra=hook,
        )

    assert store.alert_states() == before
    assert (store.outbox_items(), store.outbox_pending()) == ([], 0)
    record = store.get_run(run_id)
    assert record is not None and (record.status, record.models, record.cells) == ("running", [], [])


def test_states_are_upserted_by_model_and_rule(store: Store) -> None:
    store.write_alerts(
        [state(state="pending", consecutive=1), state(rule="CellDrop"), state("vit", rule="lowRule")], []
    )
    first = {(s.model, s.rule): s for s in store.alert_states()}
    later = T0 + timedelta(hours=6)
    resolved = state(
        state="resolved",
        severity="warning",
        since=later,
        consecutive=0,
        value=None,
        baseline=None,
        summary=None,
        details={},
        last_run_id=new_run_id(),
    )

    store.write_alerts([resolved, state("vit", rule="PersistenceLow")], [])

    stored = store.alert_states()
    # Ordered by model, then rule, by code point on both databases.
    assert [(s.model, s.rule) for s in stored] == [
        ("r18", "CellDrop"),
        ("r18", "PersistenceLow"),
        ("vit", "PersistenceLow"),
        ("vit", "lowRule"),
    ]
    assert without_updated_at([stored[1]]) == [resolved]
    assert stored[1].updated_at >= first[("r18", "PersistenceLow")].updated_at  # type: ignore[operator]
    assert stored[0] == first[("r18", "CellDrop")]  # not written again: untouched
    assert [s.rule for s in store.alert_states(model="vit")] == ["PersistenceLow", "lowRule"]
    assert store.alert_states(model="nobody") == []


def test_an_item_enqueued_twice_is_kept_once(store: Store) -> None:
    item_id, notifier, event = delivery()
    enqueue(store, (item_id, notifier, event))
    store.mark_retry(item_id, attempts=1, next_attempt_at=T0, error="HTTP 503")
    enqueue(store, (item_id, notifier, {"type": "other"}))
    (kept,) = store.outbox_items()
    assert (kept.event, kept.attempts, kept.last_error) == (event, 1, "HTTP 503")


_GOOD_ID = "0" * 32


@pytest.mark.parametrize(
    ("states", "deliveries", "match"),
    [
        ([state(state="bogus")], [], "state must be one of ok, pending, firing, resolved"),
        ([state(severity="page")], [], "severity must be one of info, warning, critical"),
        ([state(since=datetime(2026, 11, 1))], [], "timezone-aware"),
        ([state(since=None)], [], "timezone-aware"),
        ([state(consecutive=-1)], [], "consecutive"),
        ([state(consecutive=1.5)], [], "consecutive"),
        ([state(value=math.nan)], [], "value must be a finite number"),
        ([state(baseline=math.inf)], [], "baseline must be a finite number"),
        ([state(details={"loss": math.nan})], [], "details must be plain JSON"),
        ([state(details={"when": T0})], [], "details must be plain JSON"),
        ([state(details=[1, 2])], [], "details must be a JSON object"),
        ([state(episode="EPISODE-1")], [], "episode must be 32 lowercase hex"),
        ([state(episode="E" * 32)], [], "episode must be 32 lowercase hex"),
        ([state(last_run_id="run-1")], [], "last_run_id must be 32 lowercase hex"),
        ([state(model="")], [], "1 to 128 characters"),
        ([state(rule="R" * 65)], [], "1 to 64 characters"),
        ([state(), state(state="ok")], [], "appears twice"),
        ([], [("abc", "oncall", {})], "32 lowercase hex"),
        ([], [(_GOOD_ID.replace("0", "A"), "oncall", {})], "32 lowercase hex"),
        ([], [(_GOOD_ID, "oncall", {}), (_GOOD_ID, "chat", {})], "appears twice"),
        ([], [(_GOOD_ID, "", {})], "1 to 128 characters"),
        ([], [(_GOOD_ID, "oncall", {"value": math.inf})], "event of delivery .* plain JSON"),
        ([], [(_GOOD_ID, "oncall", ["not", "a", "dict"])], "JSON object"),
        ([], [(_GOOD_ID, "oncall")], "a delivery is a tuple"),
    ],
)
def test_write_alerts_refuses_bad_input_before_writing(
    store: Store, states: list[AlertState], deliveries: list[Any], match: str
) -> None:
    good = [state(rule="Good")]
    with pytest.raises(ValueError, match=match):
        store.write_alerts(good + states, [delivery(), *deliveries])
    assert (store.alert_states(), store.outbox_items()) == ([], [])


def test_delete_alert_states_keeps_the_configured_pairs(store: Store) -> None:
    store.write_alerts([state(), state(rule="CellDrop"), state("vit"), state("gone", rule="Old")], [])

    assert store.delete_alert_states({("r18", "PersistenceLow"), ("vit", "PersistenceLow"), ("x", "Y")}) == 2

    assert [(s.model, s.rule) for s in store.alert_states()] == [
        ("r18", "PersistenceLow"),
        ("vit", "PersistenceLow"),
    ]
    assert store.delete_alert_states([("r18", "PersistenceLow"), ("vit", "PersistenceLow")]) == 0
    assert store.delete_alert_states(set()) == 2
    assert store.alert_states() == []


def test_delete_alert_states_in_chunks(store: Store) -> None:
    store.write_alerts([state(f"m{i:04d}", details={}) for i in range(1200)], [])
    assert store.delete_alert_states({("m0600", "PersistenceLow")}) == 1199
    assert [s.model for s in store.alert_states()] == ["m0600"]


# -- the outbox ----------------------------------------------------------------------------------


def test_claim_due_takes_the_oldest_due_items_and_leases_them(store: Store) -> None:
    ids = enqueue(store, *(delivery(n=i) for i in range(5)))
    now = utcnow() + timedelta(hours=1)
    # Written in this order: 3, 1, 4, 0 (created_at); item 2 is not due before now + 1 hour.
    for position, index in enumerate([3, 1, 4, 0]):
        set_times(store, ids[index], created_at=T0 + timedelta(minutes=position), next_attempt_at=T0)
    set_times(store, ids[2], created_at=T0 - timedelta(days=1), next_attempt_at=now + timedelta(hours=1))

    claimed = store.claim_due(limit=3, lease_seconds=60, now=now)

    assert [i.id for i in claimed] == [ids[3], ids[1], ids[4]]
    assert all(i.next_attempt_at == now + timedelta(seconds=60) for i in claimed)
    assert all((i.status, i.attempts) == ("pending", 0) for i in claimed)
    assert item(store, ids[3]).next_attempt_at == now + timedelta(seconds=60)
    assert [i.id for i in store.claim_due(now=now)] == [ids[0]]  # the rest of what is due
    assert store.claim_due(now=now) == []  # a second claim right after: everything is leased
    assert store.claim_due(now=now + timedelta(seconds=59)) == []
    again = store.claim_due(limit=10, now=now + timedelta(seconds=60))  # the leases ran out
    assert [i.id for i in again] == [ids[3], ids[1], ids[4], ids[0]]
    assert store.outbox_pending() == 5


def test_claim_due_refuses_bad_arguments(store: Store) -> None:
    with pytest.raises(ValueError, match="limit"):
        store.claim_due(limit=0)
    with pytest.raises(ValueError, match="lease_seconds"):
        store.claim_due(lease_seconds=0)
    with pytest.raises(ValueError, match="lease_seconds"):
        store.claim_due(lease_seconds=math.nan)
    with pytest.raises(ValueError, match="timezone-aware"):
        store.claim_due(now=datetime(2026, 11, 1))
    with pytest.raises(ValueError, match="notifier must be a string of 1 to 128 characters"):
        store.claim_due(notifier="")


def test_claim_due_for_one_notifier_leaves_the_other_notifiers_items(store: Store) -> None:
    a0, a1, a2, c0, c1 = enqueue(
        store, delivery(n=0), delivery(n=1), delivery(n=2), delivery("chat", n=0), delivery("chat", n=1)
    )
    now = utcnow() + timedelta(hours=1)
    # Oldest first across notifiers: c0, a0, c1, a1; a2 waits for a retry, not due before now + 1 hour.
    for position, item_id in enumerate([c0, a0, c1, a1]):
        set_times(store, item_id, created_at=T0 + timedelta(minutes=position), next_attempt_at=T0)
    set_times(store, a2, created_at=T0 - timedelta(days=1), next_attempt_at=now + timedelta(hours=1))
    before = {i.id: i for i in store.outbox_items()}

    claimed = store.claim_due(limit=10, lease_seconds=60, now=now, notifier="oncall")

    assert [i.id for i in claimed] == [a0, a1]  # not a2: its retry is not due
    assert all(i.next_attempt_at == now + timedelta(seconds=60) for i in claimed)
    assert [item(store, i) for i in (c0, c1, a2)] == [before[c0], before[c1], before[a2]]  # untouched
    assert store.claim_due(now=now, notifier="oncall") == []  # leased
    assert store.claim_due(now=now, notifier="nobody") == []
    assert [i.id for i in store.claim_due(limit=1, now=now, notifier="chat")] == [c0]
    # Unfiltered, a claim takes every notifier's due items, and still not the leased ones.
    assert [i.id for i in store.claim_due(now=now)] == [c1]
    assert store.claim_due(now=now + timedelta(seconds=59)) == []
    again = store.claim_due(now=now + timedelta(seconds=60))  # the leases ran out
    assert [i.id for i in again] == [c0, a0, c1, a1]
    assert store.outbox_pending() == 5


def _together(*actions: Callable[[], None]) -> None:
    """Run the actions in threads that start at the same moment; re-raise the first error."""
    barrier = threading.Barrier(len(actions))
    errors: list[BaseException] = []

    def run(action: Callable[[], None]) -> None:
        try:
            barrier.wait(timeout=30)
            action()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(action,)) for action in actions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    if errors:
        raise errors[0]


def test_two_dispatchers_never_claim_the_same_item(url: str) -> None:
    first, second = Store.open(url), Store.open(url)
    try:
        ids = enqueue(first, *(delivery(n=i) for i in range(60)))
        claims: dict[str, list[str]] = {"first": [], "second": []}

        def dispatch(name: str, dispatcher: Store) -> Callable[[], None]:
            def loop() -> None:
                while batch := dispatcher.claim_due(limit=3, lease_seconds=600):
                    claims[name] += [i.id for i in batch]

            return loop

        _together(dispatch("first", first), dispatch("second", second))

        assert set(claims["first"]).isdisjoint(claims["second"])
        assert sorted(claims["first"] + claims["second"]) == sorted(ids)
    finally:
        first.close()
        second.close()


@pytest.mark.postgres
@pytest.mark.slow
def test_a_claim_skips_rows_another_claim_holds_on_postgresql(postgres_fresh_url: str) -> None:
    with Store.open(postgres_fresh_url) as store:
        ids = enqueue(store, delivery(n=0), delivery(n=1))
        now = utcnow() + timedelta(hours=1)
        set_times(store, ids[0], created_at=T0)
        set_times(store, ids[1], created_at=T0 + timedelta(seconds=1))
        with store._writing("hold a row as a claim in flight does") as session:
            session.execute(select(OutboxRow).where(OutboxRow.id == ids[0]).with_for_update())
            # Another connection: it must neither wait for the lock nor take the locked row.
            assert [i.id for i in store.claim_due(now=now)] == [ids[1]]
        assert [i.id for i in store.claim_due(now=now)] == [ids[0]]


def test_marks_move_pending_items_and_count_outcomes(store: Store) -> None:
    a, b, c = enqueue(store, delivery(), delivery(), delivery("chat"))
    retry_at = utcnow() + timedelta(minutes=5)
    assert store.notification_counts() == {}

    store.mark_retry(a, attempts=1, next_attempt_at=retry_at, error="HTTP 503 Service Unavailable")
    retried = item(store, a)
    assert (retried.status, retried.attempts, retried.next_attempt_at, retried.last_error) == (
        "pending",
        1,
        retry_at,
        "HTTP 503 Service Unavailable",
    )
    store.mark_retry(b, attempts=1, next_attempt_at=retry_at, error="timed out after 10 s")
    before = utcnow()
    store.mark_delivered(a, attempts=2)
    delivered = item(store, a)
    assert (delivered.status, delivered.attempts, delivered.last_error) == (
        "delivered",
        2,
        "HTTP 503 Service Unavailable",
    )
    assert delivered.delivered_at is not None and before <= delivered.delivered_at <= utcnow()
    store.mark_dropped(c, attempts=1, error="HTTP 400 Bad Request: not retried")
    dropped = item(store, c)
    assert (dropped.status, dropped.attempts, dropped.last_error, dropped.delivered_at) == (
        "dropped",
        1,
        "HTTP 400 Bad Request: not retried",
        None,
    )

    assert store.notification_counts() == {
        ("oncall", "retried"): 2,
        ("oncall", "delivered"): 1,
        ("chat", "dropped"): 1,
    }
    assert [i.id for i in store.outbox_items(status="pending")] == [b]
    assert store.outbox_pending() == 1


def test_marking_an_item_that_is_no_longer_pending_changes_and_counts_nothing(store: Store) -> None:
    a, c = enqueue(store, delivery(), delivery("chat"))
    store.mark_delivered(a, attempts=1)
    store.mark_dropped(c, attempts=3, error="too old")
    items, counts = store.outbox_items(), store.notification_counts()

    store.mark_delivered(a, attempts=2)  # a late duplicate dispatcher
    store.mark_retry(a, attempts=2, next_attempt_at=utcnow(), error="HTTP 500")
    store.mark_dropped(a, attempts=2, error="gave up")
    store.mark_delivered(c, attempts=4)
    store.mark_retry(c, attempts=4, next_attempt_at=utcnow(), error="HTTP 500")
    store.mark_delivered(uuid.uuid4().hex, attempts=1)  # unknown (pruned): quietly nothing

    assert (store.outbox_items(), store.notification_counts()) == (items, counts)


def test_concurrent_duplicate_marks_count_once(url: str) -> None:
    first, second = Store.open(url), Store.open(url)
    try:
        ids = enqueue(first, *(delivery() for _ in range(10)))

        def deliver(dispatcher: Store) -> Callable[[], None]:
            def loop() -> None:
                for item_id in ids:
                    dispatcher.mark_delivered(item_id, attempts=1)

            return loop

        _together(deliver(first), deliver(second))

        assert first.notification_counts() == {("oncall", "delivered"): 10}
        assert first.outbox_pending() == 0
    finally:
        first.close()
        second.close()


def test_marks_refuse_bad_arguments(store: Store) -> None:
    (a,) = enqueue(store, delivery())
    with pytest.raises(ValueError, match="32 lowercase hex"):
        store.mark_delivered("item-1", attempts=1)
    with pytest.raises(ValueError, match="attempts"):
        store.mark_delivered(a, attempts=-1)
    with pytest.raises(ValueError, match="timezone-aware"):
        store.mark_retry(a, attempts=1, next_attempt_at=datetime(2026, 11, 1), error="HTTP 503")
    with pytest.raises(ValueError, match="text"):
        store.mark_dropped(a, attempts=1, error=None)  # type: ignore[arg-type]
    assert (item(store, a).status, store.notification_counts()) == ("pending", {})


def test_a_long_error_is_cut(store: Store) -> None:
    (a,) = enqueue(store, delivery())
    store.mark_retry(a, attempts=1, next_attempt_at=T0, error="x" * 5000)
    error = item(store, a).last_error
    assert error is not None and len(error) == 2000 and error.endswith("…")


def test_drop_pending_gives_up_every_pending_item_of_one_notifier(store: Store) -> None:
    fresh, leased, retrying, delivered, dropped, chat_fresh, chat_retrying = enqueue(
        store, delivery(), delivery(), delivery(), delivery(), delivery(), delivery("chat"), delivery("chat")
    )
    later = utcnow() + timedelta(days=1)
    store.mark_retry(retrying, attempts=2, next_attempt_at=later, error="HTTP 503")
    store.mark_retry(chat_retrying, attempts=1, next_attempt_at=later, error="HTTP 503")
    store.mark_delivered(delivered, attempts=1)
    store.mark_dropped(dropped, attempts=3, error="HTTP 400 Bad Request")
    set_times(store, leased, created_at=T0)  # the oldest: the one claimed
    now = utcnow() + timedelta(hours=1)
    assert [i.id for i in store.claim_due(limit=1, now=now, notifier="oncall")] == [leased]
    before = {i.id: i for i in store.outbox_items()}
    assert store.notification_counts() == {
        ("oncall", "retried"): 1,
        ("chat", "retried"): 1,
        ("oncall", "delivered"): 1,
        ("oncall", "dropped"): 1,
    }

    error = "notifier 'oncall' is no longer configured"
    assert store.drop_pending("oncall", error=error) == 3

    for item_id in (fresh, leased, retrying):
        # Dropped with the error; the rest (attempts: 0, 0 and 2) stays as it was.
        assert item(store, item_id) == replace(before[item_id], status="dropped", last_error=error)
    for item_id in (delivered, dropped, chat_fresh, chat_retrying):  # finished, or another notifier's
        assert item(store, item_id) == before[item_id]
    counts = store.notification_counts()
    assert counts == {
        ("oncall", "retried"): 1,
        ("chat", "retried"): 1,
        ("oncall", "delivered"): 1,
        ("oncall", "dropped"): 4,
    }
    assert store.outbox_pending() == 2
    assert set(store.next_attempt_times()) == {"chat"}
    # Nothing of "oncall" is claimed again, not even once its lease has run out.
    assert sorted(i.id for i in store.claim_due(now=later)) == sorted([chat_fresh, chat_retrying])
    # A dispatcher that still holds the leased item marks it too late: nothing changes or counts.
    store.mark_delivered(leased, attempts=1)
    assert item(store, leased).status == "dropped"

    assert store.drop_pending("oncall", error=error) == 0
    assert store.drop_pending("nobody", error=error) == 0  # and no ("nobody", "dropped") count
    assert store.notification_counts() == counts


def test_drop_pending_refuses_bad_arguments_and_cuts_a_long_error(store: Store) -> None:
    (a,) = enqueue(store, delivery())
    with pytest.raises(ValueError, match="notifier must be a string of 1 to 128 characters"):
        store.drop_pending("", error="gone")
    with pytest.raises(ValueError, match="error must be text"):
        store.drop_pending("oncall", error=None)  # type: ignore[arg-type]
    assert (item(store, a).status, store.notification_counts()) == ("pending", {})

    assert store.drop_pending("oncall", error="x" * 5000) == 1
    error = item(store, a).last_error
    assert error is not None and len(error) == 2000 and error.endswith("…")


def test_outbox_pending_and_next_attempt_time(store: Store) -> None:
    assert (store.outbox_pending(), store.next_attempt_time()) == (0, None)
    a, b, c = enqueue(store, delivery(), delivery(), delivery())
    store.mark_retry(a, attempts=1, next_attempt_at=T0 + timedelta(minutes=5), error="HTTP 503")
    store.mark_retry(b, attempts=1, next_attempt_at=T0 + timedelta(minutes=2), error="HTTP 503")
    store.mark_delivered(c, attempts=1)

    assert store.outbox_pending() == 2
    earliest = store.next_attempt_time()
    assert earliest == T0 + timedelta(minutes=2) and earliest.tzinfo is UTC
    store.mark_dropped(b, attempts=2, error="HTTP 404 Not Found")
    assert (store.outbox_pending(), store.next_attempt_time()) == (1, T0 + timedelta(minutes=5))
    store.mark_delivered(a, attempts=2)
    assert (store.outbox_pending(), store.next_attempt_time()) == (0, None)


def test_next_attempt_times_per_notifier(store: Store) -> None:
    assert store.next_attempt_times() == {}
    slow, soon, delivered, leased, dropped, overdue, paged = enqueue(
        store,
        delivery(),
        delivery(),
        delivery(),
        delivery("chat"),
        delivery("chat"),
        delivery("mail"),
        delivery("pager"),
    )
    # Finished items keep the earliest times of all: they must not count.
    for item_id in (delivered, dropped, paged):
        set_times(store, item_id, next_attempt_at=T0 - timedelta(days=30))
    store.mark_delivered(delivered, attempts=1)
    store.mark_dropped(dropped, attempts=1, error="HTTP 400 Bad Request")
    store.mark_delivered(paged, attempts=1)
    store.mark_retry(slow, attempts=1, next_attempt_at=T0 + timedelta(minutes=5), error="HTTP 503")
    store.mark_retry(soon, attempts=1, next_attempt_at=T0 + timedelta(minutes=2), error="HTTP 503")
    now = utcnow() + timedelta(hours=1)
    assert [i.id for i in store.claim_due(lease_seconds=60, now=now, notifier="chat")] == [leased]
    set_times(store, overdue, next_attempt_at=T0 - timedelta(hours=1))

    times = store.next_attempt_times()

    # Per notifier, the earliest next_attempt_at of its pending items: a retrying item's retry
    # time, a leased one's lease end, and a time in the past for one overdue. "pager" has
    # nothing pending: absent.
    assert times == {
        "oncall": T0 + timedelta(minutes=2),
        "chat": now + timedelta(seconds=60),
        "mail": T0 - timedelta(hours=1),
    }
    assert all(due.tzinfo is UTC for due in times.values())
    assert min(times.values()) == store.next_attempt_time()
    store.mark_delivered(soon, attempts=2)
    store.mark_dropped(leased, attempts=1, error="HTTP 404 Not Found")
    assert store.next_attempt_times() == {
        "oncall": T0 + timedelta(minutes=5),
        "mail": T0 - timedelta(hours=1),
    }


def test_outbox_items_newest_first_by_status(store: Store) -> None:
    ids = enqueue(store, *(delivery(n=i) for i in range(4)))
    for i, item_id in enumerate(ids):
        set_times(store, item_id, created_at=T0 + timedelta(minutes=i))
    store.mark_delivered(ids[1], attempts=1)

    assert [i.id for i in store.outbox_items()] == ids[::-1]
    assert [i.id for i in store.outbox_items(limit=2)] == [ids[3], ids[2]]
    assert [i.id for i in store.outbox_items(status="pending")] == [ids[3], ids[2], ids[0]]
    assert [i.id for i in store.outbox_items(status="delivered")] == [ids[1]]
    assert store.outbox_items(status="dropped") == []
    assert all(i.created_at.tzinfo is UTC for i in store.outbox_items())
    with pytest.raises(ValueError, match="one of pending, delivered, dropped"):
        store.outbox_items(status="failed")


def test_prune_deletes_old_finished_items_and_keeps_the_counts(store: Store) -> None:
    delivered, dropped, pending, recent = enqueue(store, delivery(), delivery(), delivery(), delivery())
    for item_id in (delivered, dropped, pending):
        set_times(store, item_id, created_at=T0)
    store.mark_delivered(delivered, attempts=1)
    store.mark_dropped(dropped, attempts=9, error="too old")
    store.mark_delivered(recent, attempts=1)
    counts = store.notification_counts()

    assert store.prune_outbox(older_than=T0) == 0  # strictly before
    assert store.prune_outbox(older_than=T0 + timedelta(seconds=1)) == 2

    assert sorted(i.id for i in store.outbox_items()) == sorted([pending, recent])
    assert store.notification_counts() == counts == {("oncall", "delivered"): 2, ("oncall", "dropped"): 1}
    assert store.prune_outbox(older_than=T0 + timedelta(seconds=1)) == 0
    with pytest.raises(ValueError, match="timezone-aware"):
        store.prune_outbox(older_than=datetime(2026, 11, 1))
