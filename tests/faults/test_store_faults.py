"""The store under fire: deleted and replaced files, a full disk, a read-only disk, a PostgreSQL
restart mid-run, and a worker killed mid-trial. Real daemons, real files, real servers.

The disks are real filesystems: a small tmpfs mounted over the state folder (needs root and
permission to mount, as in CI's containers; skipped with the reason otherwise).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from monitor.errors import StoreError, StoreGone
from monitor.store import Store, new_run_id
from tests._daemon import TOKEN, run_keys, workspace
from tests._services import DaemonProcess, wait_until
from tests._workspace import write_config

pytestmark = pytest.mark.slow  # daemon processes that train, a PostgreSQL restarted mid-run

AUTH = {"Authorization": f"Bearer {TOKEN}"}
SLOW_GRID = [
    {"name": f"full-{i}", "mode": "full", "lr": lr, "epochs": 1, "batch_size": 16}
    for i, lr in enumerate((0.05, 0.02, 0.01))
]


def _slow_workspace(root: Path, **executor: str) -> Path:
    config = workspace(root, architecture="python:slow_cnn:build", strategies=SLOW_GRID)
    document = yaml.safe_load(config.read_text())
    document["executor"].update(executor)
    return write_config(config, document)


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A real, small filesystem mounted at `path` (unmounted afterwards)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root (the CI container has it)")
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode(errors='replace').strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill_up(filler: Path) -> None:
    """Write `filler` until its filesystem is full."""
    with filler.open("wb") as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * (1 << 20))


# -- a deleted or replaced database file ------------------------------------------------------------


def test_a_deleted_or_replaced_sqlite_file_is_refused_and_nothing_is_written_elsewhere(tmp_path):
    path = tmp_path / "monitor.db"
    store = Store.open(f"sqlite:///{path}")
    other = Store.open(f"sqlite:///{tmp_path / 'other.db'}")
    other.close()
    try:
        store.begin_run(new_run_id(), trigger="cli", config_digest="x", plan={"cells": []})
        for name in ("monitor.db", "monitor.db-wal", "monitor.db-shm"):
            (tmp_path / name).unlink(missing_ok=True)
        with pytest.raises(StoreGone, match="the database file was deleted while this process had it open"):
            store.list_runs()
        with pytest.raises(StoreGone):
            store.begin_run(new_run_id(), trigger="cli", config_digest="x", plan={"cells": []})
        with pytest.raises(StoreGone):
            store.ping(write=True)
        assert not path.exists(), "a write went into a new, empty database"
        os.replace(tmp_path / "other.db", path)
        with pytest.raises(StoreGone, match="replaced by another file"):
            store.list_runs()
        assert isinstance(StoreGone("x"), StoreError)
    finally:
        store.close()
    reopened = Store.open(f"sqlite:///{path}")  # a restart is the way on: a store of that file
    assert reopened.list_runs() == []
    reopened.close()


def test_a_database_deleted_under_the_daemon_stops_it_taking_work_and_says_why(tmp_path):
    daemon = DaemonProcess(workspace(tmp_path)).start()
    try:
        wait_until(lambda: [r for r in daemon.runs() if r["status"] == "completed"], what="the start-up run")
        assert "persistence_store_up 1.0" in daemon.get("/metrics").text
        for name in ("monitor.db", "monitor.db-wal", "monitor.db-shm"):
            (tmp_path / "state" / name).unlink(missing_ok=True)
        ready = daemon.get("/readyz")
        assert ready.status_code == 503 and "deleted" in ready.json()["store"]
        assert "persistence_store_up 0.0" in daemon.get("/metrics").text
        assert daemon.post("/api/v1/runs", headers=AUTH).status_code == 202
        wait_until(lambda: "not started: result store" in daemon.log_text(), what="the refused run")
        assert "no more runs start until a restart" in daemon.log_text() or "CRITICAL" in daemon.log_text()
        assert daemon.get("/healthz").json()["halted"].startswith("result store")
        assert not (tmp_path / "state" / "monitor.db").exists(), "the daemon began a new, empty history"
        assert "Traceback" not in daemon.log_text()
    finally:
        daemon.stop()


# -- a full disk, a read-only disk ----------------------------------------------------------------------


@contextlib.contextmanager
def disk_full_mid_run(tmp_path: Path, **executor: str) -> Iterator[tuple[DaemonProcess, Store, Path, str]]:
    """A daemon whose state is on a 48 MiB tmpfs, filled up once its start-up run stored two
    trials; yields the daemon, a store on its database, the filler file and the run's id."""
    config = _slow_workspace(tmp_path, **executor)
    with tmpfs(tmp_path / "state", "48m") as state:
        daemon = DaemonProcess(config).start()
        store = Store.open(f"sqlite:///{state / 'monitor.db'}")
        filler = state / "filler"
        try:
            (running,) = wait_until(lambda: store.unfinished_runs(), what="the start-up run")
            wait_until(
                lambda: len(store.find_trials(run_keys(store, running.id))) >= 2, timeout=120, what="trials"
            )
            fill_up(filler)
            yield daemon, store, filler, running.id
        finally:
            filler.unlink(missing_ok=True)
            daemon.stop()
            store.close()


def test_a_disk_that_fills_up_mid_run_holds_the_results_until_space_is_back(tmp_path):
    with disk_full_mid_run(tmp_path) as (daemon, store, filler, run_id):
        wait_until(lambda: "it is kept in memory" in daemon.log_text(), timeout=120, what="a refused trial")
        filler.unlink()
        wait_until(lambda: store.get_run(run_id).status == "completed", timeout=180, what="the run")
        assert len(store.find_trials(run_keys(store, run_id))) == 12, "a finished fine-tune was lost"
        assert "the store takes writes again" in daemon.log_text()
        assert "Traceback" not in daemon.log_text()


def test_a_disk_full_for_longer_than_store_outage_fails_the_run_once_and_settles_it_later(tmp_path):
    with disk_full_mid_run(tmp_path, store_outage="2s") as (daemon, store, filler, run_id):
        wait_until(lambda: daemon.get("/healthz").json()["last_error"], timeout=180, what="the failed run")
        log = daemon.log_text()
        assert "full" in daemon.get("/healthz").json()["last_error"]
        assert f"run {run_id} could not be recorded as failed" in log
        assert "Traceback" not in log, log[-3000:]
        assert store.get_run(run_id).status == "running"  # nothing could be written
        filler.unlink()
        assert daemon.post("/api/v1/runs", headers=AUTH).status_code == 202
        wait_until(lambda: store.get_run(run_id).status == "failed", what="the failed run settled")
        assert "full" in (store.get_run(run_id).error or "")
        wait_until(
            lambda: [r for r in store.list_runs() if r.status == "completed"], timeout=180, what="a new run"
        )
        (newer,) = [r for r in store.list_runs() if r.status == "completed"]
        assert newer.started_at > store.get_run(run_id).started_at
        # every fine-tune that finished before the disk filled is still there
        assert len(store.find_trials(run_keys(store, newer.id))) == 12


def test_readiness_needs_a_store_that_takes_writes(tmp_path):
    path = tmp_path / "monitor.db"
    Store.open(f"sqlite:///{path}").close()
    read_only = Store.open(f"sqlite:///file:{path}?mode=ro&uri=true")
    try:
        read_only.ping()  # reads are fine
        with pytest.raises(StoreError, match="could not take a write: attempt to write a readonly database"):
            read_only.ping(write=True)
        assert read_only.write_failure is not None
    finally:
        read_only.close()


def test_an_interrupted_run_overtaken_by_a_newer_one_is_failed_not_resumed(tmp_path):
    from prometheus_client import CollectorRegistry

    from monitor.daemon import Daemon
    from monitor.engine import LocalExecutor
    from monitor.settings import load_settings

    settings = load_settings(workspace(tmp_path))
    store = Store.open(settings.resolved_database_url)
    old, newer, last = new_run_id(), new_run_id(), new_run_id()
    for run_id in (old, newer, last):  # `last` started after `newer`, and was interrupted too
        store.begin_run(run_id, trigger="schedule", config_digest="x", plan={"cells": []}, owner=None)
        time.sleep(0.01)
    store.finish_run(newer, status="completed", seconds=1.0, scores=[], cells=[])
    daemon = Daemon(settings, store, LocalExecutor("cpu"), registry=CollectorRegistry())
    try:
        assert daemon._resume_interrupted() is True
        assert store.get_run(old).status == "failed"
        assert store.get_run(old).error == f"interrupted, and overtaken by run {newer}; not resumed"
        assert [r.run_id for r in daemon.queue.waiting] == [last]  # nothing finished after it
    finally:
        store.close()


# -- PostgreSQL restarted mid-run ----------------------------------------------------------------------


@pytest.mark.postgres
def test_postgresql_restarted_mid_run_the_daemon_reconnects_and_the_run_completes(tmp_path, postgres_cluster):
    config = _slow_workspace(tmp_path)
    document = yaml.safe_load(config.read_text())
    document["database_url"] = postgres_cluster.url
    write_config(config, document)
    daemon = DaemonProcess(config).start()
    store = Store.open(postgres_cluster.url)
    try:
        (running,) = wait_until(lambda: store.unfinished_runs(), what="the start-up run")
        wait_until(
            lambda: len(store.find_trials(run_keys(store, running.id))) >= 2, timeout=120, what="trials"
        )
        postgres_cluster.halt()
        time.sleep(4)  # a few trials finish while the server is down
        postgres_cluster.resume()
        wait_until(lambda: store.get_run(running.id).status == "completed", timeout=180, what="the run")
        assert len(store.find_trials(run_keys(store, running.id))) == 12, "a finished fine-tune was lost"
        assert daemon.get("/readyz").status_code == 200
        assert "Traceback" not in daemon.log_text()
    finally:
        daemon.stop()
        store.close()


# -- a worker killed mid-trial ---------------------------------------------------------------------------


def _workers(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    workers = []
    for child in map(int, found):
        with contextlib.suppress(OSError):
            command = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
            if b"resource_tracker" not in command:
                workers.append(child)
    return workers


def test_a_worker_killed_mid_trial_fails_only_its_trial_and_the_next_run_redoes_it(tmp_path):
    config = _slow_workspace(tmp_path)
    daemon = DaemonProcess(config).start()
    store = Store.open(f"sqlite:///{tmp_path / 'state' / 'monitor.db'}")
    try:
        (running,) = wait_until(lambda: store.unfinished_runs(), what="the start-up run")
        wait_until(
            lambda: len(store.find_trials(run_keys(store, running.id))) >= 1, timeout=120, what="a trial"
        )
        assert daemon.process is not None
        victim = wait_until(lambda: _workers(daemon.process.pid), what="the worker processes")[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: store.get_run(running.id).status != "running", timeout=180, what="the run to end")
        first = store.get_run(running.id)
        assert first.status in ("partial", "completed"), first.error
        failed = [c for c in first.cells if c.status == "failed"]
        assert all("worker process died" in (c.error or "") for c in failed), [c.error for c in failed]
        assert daemon.post("/api/v1/runs", headers=AUTH).status_code == 202
        wait_until(
            lambda: [r for r in store.list_runs() if r.id != running.id and r.status == "completed"],
            timeout=180,
            what="the next run",
        )
        assert daemon.get("/healthz").json()["status"] == "ok"
    finally:
        daemon.stop()
        store.close()
