"""Two daemons on one store: the leader lease, runs queued through the store, fencing, failover.

The lease is tested on both backends; the failover with two real `serve` processes on a real
PostgreSQL (SIGKILL of the leader), and the single-daemon rule of SQLite with two real ones.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from monitor.errors import RunTakenOver
from monitor.store import Store, new_run_id
from tests._daemon import TOKEN, run_keys, workspace
from tests._receivers import Receiver, Reply
from tests._services import DaemonProcess, free_port, wait_until
from tests._workspace import write_config

AUTH = {"Authorization": f"Bearer {TOKEN}"}


# -- the lease in the store ----------------------------------------------------------------------


def test_the_first_holder_takes_the_lease_and_renews_it(store: Store) -> None:
    first = store.take_lease("leader", "host-a:1", 30)
    assert first.mine and first.holder == "host-a:1" and first.term == 1 and first.previous is None
    again = store.take_lease("leader", "host-a:1", 30)
    assert again.mine and again.term == 1 and again.expires_at >= first.expires_at
    other = store.take_lease("leader", "host-b:2", 30)
    assert not other.mine and other.holder == "host-a:1" and other.term == 1
    assert store.lease("leader").holder == "host-a:1"


def test_a_lapsed_lease_is_taken_over_with_a_higher_term(store: Store) -> None:
    store.take_lease("leader", "host-a:1", 0.5)
    time.sleep(0.7)
    taken = store.take_lease("leader", "host-b:2", 30)
    assert taken.mine and taken.term == 2 and taken.previous == "host-a:1"
    late = store.take_lease("leader", "host-a:1", 30)  # the old holder, back: it stays a standby
    assert not late.mine and late.holder == "host-b:2"


def test_a_released_lease_or_a_holder_known_dead_is_taken_at_once(store: Store) -> None:
    store.take_lease("leader", "host-a:1", 60)
    assert store.release_lease("leader", "host-a:1")
    assert not store.release_lease("leader", "host-a:1")  # released already
    assert store.lease("leader").holder == ""
    assert store.take_lease("leader", "host-b:2", 60).term == 2
    dead = store.take_lease("leader", "host-c:3", 60, gone=lambda holder: holder == "host-b:2")
    assert dead.mine and dead.previous == "host-b:2" and dead.term == 3


def test_lease_arguments_are_checked(store: Store) -> None:
    with pytest.raises(ValueError, match="positive"):
        store.take_lease("leader", "host-a:1", 0)
    with pytest.raises(ValueError, match="holder"):
        store.take_lease("leader", "", 10)


def test_a_run_request_waits_in_the_store_until_its_run_begins(store: Store) -> None:
    first, joined = store.request_run(new_run_id(), trigger="api", by="host-b:2")
    assert not joined
    again, joined = store.request_run(new_run_id(), trigger="api", by="host-c:3")
    assert (again, joined) == (first, True)  # a request still waiting absorbs the next
    (waiting,) = store.waiting_run_requests()
    assert (waiting.id, waiting.trigger, waiting.requested_by) == (first, "api", "host-b:2")
    store.begin_run(first, trigger="api", config_digest="c", plan={}, owner="host-a:1")
    assert store.waiting_run_requests() == []  # begun: claimed in the same transaction
    with pytest.raises(ValueError, match="trigger"):
        store.request_run(new_run_id(), trigger="nope", by="x")


def test_a_run_taken_over_cannot_be_finished_by_its_old_owner(store: Store) -> None:
    run_id = new_run_id()
    store.begin_run(run_id, trigger="schedule", config_digest="c", plan={}, owner="host-a:1")
    store.begin_run(run_id, trigger="schedule", config_digest="c", plan={}, owner="host-b:2", resume=True)
    with pytest.raises(RunTakenOver, match="host-b:2"):
        store.finish_run(run_id, status="completed", seconds=1.0, scores=[], cells=[], owner="host-a:1")
    assert store.get_run(run_id).status == "running"  # nothing written
    store.finish_run(run_id, status="completed", seconds=1.0, scores=[], cells=[], owner="host-b:2")
    assert store.get_run(run_id).status == "completed"


# -- real daemons --------------------------------------------------------------------------------


def _health(daemon: DaemonProcess) -> dict:
    return daemon.get("/healthz").json()


def _leader_gauge(daemon: DaemonProcess) -> float:
    (value,) = re.findall(r"^persistence_leader (\S+)$", daemon.get("/metrics").text, re.M)
    return float(value)


def _second_config(config: Path, **changes: object) -> Path:
    document = yaml.safe_load(config.read_text())
    document["server"]["port"] = free_port()
    document.update(changes)
    return write_config(config.parent / "second.yaml", document)


def test_a_second_daemon_on_a_sqlite_store_is_refused_with_the_reason(tmp_path: Path) -> None:
    config = workspace(tmp_path)
    document = yaml.safe_load(config.read_text())
    document["schedule"]["lease_ttl"] = "3s"
    write_config(config, document)
    first = DaemonProcess(config).start()
    try:
        assert _health(first)["role"] == "leader" and _leader_gauge(first) == 1
        second = DaemonProcess(_second_config(config))
        handle = second.log.open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "monitor", "serve", "--config", str(second.config)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=second.env,
            cwd=tmp_path,
        )
        assert process.wait(60) != 0
        text = second.log_text()
        assert "SQLite takes one daemon" in text and _health(first)["instance"] in text
        assert "PostgreSQL" in text
        assert _health(first)["role"] == "leader"  # the first one carries on
    finally:
        first.stop()


@pytest.mark.postgres
@pytest.mark.slow
def test_sigkill_of_the_leader_a_standby_leads_within_the_ttl_and_finishes_the_work(
    tmp_path: Path, postgres_fresh_url: str
) -> None:
    ttl = 6.0
    strategies = [{"name": "full", "mode": "full", "lr": 0.05, "epochs": 3, "batch_size": 16}]
    config = workspace(tmp_path, architecture="python:slow_cnn:build", strategies=strategies)
    receiver = Receiver(default=Reply(status=503)).start()  # down until the leader is dead
    document = yaml.safe_load(config.read_text())
    document["database_url"] = postgres_fresh_url
    document["state_dir"] = "state-a"
    document["schedule"]["lease_ttl"] = f"{ttl:g}s"
    document["alerts"] = {
        "rules": [{"name": "Low", "kind": "below", "threshold": 1.0}],
        "notifiers": [{"name": "oncall", "kind": "webhook", "url": f"{receiver.url}/hook"}],
    }
    write_config(config, document)
    store = Store.open(postgres_fresh_url)
    first = DaemonProcess(config).start()
    second: DaemonProcess | None = None
    try:
        assert _health(first)["role"] == "leader"
        second = DaemonProcess(_second_config(config, state_dir="state-b")).start()
        health = _health(second)
        assert health["role"] == "standby" and health["leader"] == _health(first)["instance"]
        assert (_leader_gauge(first), _leader_gauge(second)) == (1, 0)
        assert f"standby (leader: {health['leader']})" in second.get("/").text
        assert f"{health['leader']}: leader ·" in first.get("/").text  # the status page says who is who

        (interrupted,) = wait_until(lambda: store.unfinished_runs(), what="the leader's start-up run")
        assert interrupted.owner == _health(first)["instance"]
        # A run asked of the standby waits in the store for the leader (busy with its first run).
        answer = second.post("/api/v1/runs", headers=AUTH)
        assert answer.status_code == 202 and not answer.json()["joined"]
        requested = answer.json()["run_id"]
        assert [r.id for r in store.waiting_run_requests()] == [requested]
        assert second.get("/api/v1/runs").status_code == 200  # a standby serves reads

        wait_until(
            lambda: len(store.find_trials(run_keys(store, interrupted.id))) >= 1, timeout=120, what="a trial"
        )
        first.signal(signal.SIGKILL)
        killed = time.monotonic()
        first.wait(30)
        wait_until(lambda: _health(second)["role"] == "leader", timeout=ttl + 5, what="the standby to lead")
        took = time.monotonic() - killed
        assert took <= ttl, f"took {took:.1f}s to lead"
        assert _leader_gauge(second) == 1
        receiver.default = Reply()  # the receiver is back

        wait_until(
            lambda: store.get_run(interrupted.id).status == "completed", timeout=180, what="the resumed run"
        )
        wait_until(
            lambda: (run := store.get_run(requested)) is not None and run.status == "completed",
            timeout=120,
            what="the requested run",
        )
        assert store.get_run(interrupted.id).owner == health["instance"]
        assert f"resuming run {interrupted.id}" in second.log_text()
        assert store.waiting_run_requests() == []
        # The outbox: every notification delivered, each id reaching the receiver.
        items = wait_until(
            lambda: (items := store.outbox_items()) and all(i.status == "delivered" for i in items) and items,
            timeout=60,
            what="the outbox delivered",
        )
        ids = {r.headers["webhook-id"] for r in receiver.accepted()}
        assert {i.id for i in items} <= ids
        assert [i.event["alert"] for i in items] == ["Low"]
    finally:
        first.stop()
        if second is not None:
            second.stop()
        receiver.stop()
        store.close()
