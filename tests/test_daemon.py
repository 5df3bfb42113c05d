"""The daemon as users run it: a real process, real HTTP, a real Prometheus, real signals."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from monitor.store import Store
from tests._daemon import TOKEN, run_keys, workspace
from tests._services import DaemonProcess, PrometheusProcess, wait_until
from tests._workspace import write_config, write_snapshot

pytestmark = pytest.mark.slow  # daemon processes that train, and a real Prometheus


def completed_runs(daemon: DaemonProcess) -> list[dict]:
    return [r for r in daemon.runs() if r["status"] in ("completed", "partial")]


@pytest.fixture()
def daemon(tmp_path):
    process = DaemonProcess(workspace(tmp_path)).start()
    yield process
    process.stop()


def test_serve_api_metrics_and_a_real_prometheus(daemon, tmp_path):
    (startup,) = wait_until(lambda: completed_runs(daemon), what="the start-up evaluation")
    assert startup["trigger"] == "startup" and startup["status"] == "completed"

    health = daemon.get("/healthz")
    assert health.status_code == 200 and health.json()["scheduler"] == "running"
    assert daemon.get("/readyz").json()["status"] == "ready"

    (model,) = daemon.get("/api/v1/models").json()
    assert model["model"] == "cnn" and model["run_id"] == startup["run_id"] and model["coverage"] == 1.0
    run = daemon.get(f"/api/v1/runs/{startup['run_id']}").json()
    assert len(run["models"][0]["cells"]) == 2 * 2 and {c["status"] for c in run["models"][0]["cells"]} == {
        "ok"
    }
    assert daemon.get("/api/v1/runs/" + "0" * 32).status_code == 404
    alerts = daemon.get("/api/v1/alerts").json()
    assert {(a["alert"], a["state"]) for a in alerts} == {
        ("PersistenceDrop", "ok"),
        ("EvaluationStale", "ok"),
        ("GridIncomplete", "ok"),
    }  # the default rules, judged after the start-up run
    schema = daemon.get("/openapi.json").json()
    assert {"/api/v1/models", "/api/v1/runs", "/api/v1/runs/{run_id}", "/api/v1/alerts"} <= set(
        schema["paths"]
    )
    page = daemon.get("/")
    assert page.status_code == 200 and "cnn" in page.text and "<svg" in page.text
    # the run view, linked from the status page: every cell's training curves across seeds
    assert f"href='/runs/{startup['run_id']}'" in page.text
    run_view = daemon.get(f"/runs/{startup['run_id']}")
    assert run_view.status_code == 200 and run_view.text.count('class="panel"') == 2 * 2
    trials = daemon.get(f"/api/v1/runs/{startup['run_id']}/trials").json()
    assert trials and all(t["loss_curve"] and t["diverged_at"] is None for t in trials)

    metrics = daemon.get("/metrics").text
    assert f'persistence_score{{model="cnn"}} {model["persistence"]}' in metrics.replace("e-0", "e-0")
    assert 'persistence_runs_total{outcome="completed"} 1.0' in metrics

    # mutating calls need the token (constant-time compared), and join the one queue
    assert daemon.post("/api/v1/runs").status_code == 401
    assert daemon.post("/api/v1/runs", headers={"Authorization": "Bearer wrong"}).status_code == 401
    queued = daemon.post("/api/v1/runs", headers={"Authorization": f"Bearer {TOKEN}"})
    assert queued.status_code == 202 and queued.json()["status"] == "queued"
    wait_until(lambda: len(completed_runs(daemon)) == 2, what="the API-triggered run")
    api_run = daemon.get(f"/api/v1/runs/{queued.json()['run_id']}").json()
    assert api_run["trigger"] == "api" and {c["status"] for c in api_run["models"][0]["cells"]} == {"cached"}

    # a real Prometheus scrapes the daemon; PromQL returns what the API reports
    prometheus = PrometheusProcess(tmp_path, [f"127.0.0.1:{daemon.port}"]).start()
    try:
        result = wait_until(lambda: prometheus.query('persistence_score{model="cnn"}'), what="a scrape")
        assert float(result[0]["value"][1]) == pytest.approx(model["persistence"], abs=1e-12)
        up = prometheus.query('up{job="persistence-monitor"}')
        assert up[0]["value"][1] == "1"
        cells = prometheus.query("count(persistence_cell_score)")
        assert cells[0]["value"][1] == "4"
    finally:
        prometheus.stop()

    # the daemon process never loads torch: only its workers do
    maps = Path(f"/proc/{daemon.process.pid}/maps").read_text()
    assert "libtorch" not in maps

    daemon.signal(signal.SIGTERM)
    assert daemon.wait(60) == 0
    assert "stopped (SIGTERM)" in daemon.log_text()


def test_polling_runs_exactly_one_evaluation_for_a_new_complete_snapshot(daemon, tmp_path):
    wait_until(lambda: completed_runs(daemon), what="the start-up evaluation")
    incomplete = write_snapshot(
        tmp_path / "data" / "a" / "2026-01-02T00", (5, 6, 7), per_class=15, offset=80, marker=False
    )
    time.sleep(3)  # three polls
    assert len(daemon.runs()) == 1, "an incomplete snapshot (no _SUCCESS) must be ignored"
    (incomplete / "_SUCCESS").touch()
    newer, _ = wait_until(
        lambda: (runs := completed_runs(daemon)) and len(runs) == 2 and runs, what="a poll run"
    )  # newest first
    assert newer["trigger"] == "poll"
    time.sleep(3)
    assert len(daemon.runs()) == 2, "exactly one evaluation per change"
    cells = daemon.get(f"/api/v1/runs/{newer['run_id']}").json()["models"][0]["cells"]
    assert {(c["dataset"], c["status"]) for c in cells} == {("a", "ok"), ("b", "cached")}
    assert {c["snapshot"] for c in cells if c["dataset"] == "a"} == {"2026-01-02T00"}


def test_sigkill_mid_grid_then_restart_resumes_without_recomputing(tmp_path):
    strategies = [
        {"name": f"full-{i}", "mode": "full", "lr": lr, "epochs": 2, "batch_size": 16}
        for i, lr in enumerate((0.05, 0.02, 0.01))
    ]
    config = workspace(tmp_path, architecture="python:slow_cnn:build", strategies=strategies)
    first = DaemonProcess(config).start()
    store = Store.open(f"sqlite:///{tmp_path / 'state' / 'monitor.db'}")
    try:
        (running,) = wait_until(lambda: store.unfinished_runs(), what="the start-up run to begin")
        wait_until(
            lambda: len(store.find_trials(run_keys(store, running.id))) >= 3, timeout=120, what="a few trials"
        )
        first.signal(signal.SIGKILL)
        first.wait(30)
        before = set(store.find_trials(run_keys(store, running.id)))
        assert 3 <= len(before) < 12, "the kill must land mid-grid"
        assert store.get_run(running.id).status == "running"  # nobody could record anything

        second = DaemonProcess(config).start()
        try:
            wait_until(
                lambda: store.get_run(running.id).status == "completed", timeout=120, what="the resumed run"
            )
        finally:
            second.stop()
        resumed = store.get_run(running.id)
        assert resumed.trigger == "startup"  # the same run, resumed: no new run was started
        assert [r.id for r in store.list_runs()] == [running.id]
        for cell in resumed.cells:
            done_before = set(cell.keys) <= before
            assert (cell.status == "cached") == done_before, (cell.strategy, cell.dataset, cell.status)
        assert "resuming run " + running.id in second.log_text()
    finally:
        first.stop()
        store.close()


def test_sigterm_while_evaluating_exits_0_and_the_run_resumes(tmp_path):
    strategies = [{"name": "full", "mode": "full", "lr": 0.05, "epochs": 3, "batch_size": 16}]
    config = workspace(tmp_path, architecture="python:slow_cnn:build", strategies=strategies)
    daemon = DaemonProcess(config).start()
    store = Store.open(f"sqlite:///{tmp_path / 'state' / 'monitor.db'}")
    try:
        (running,) = wait_until(lambda: store.unfinished_runs(), what="the start-up run to begin")
        wait_until(lambda: daemon.get("/healthz").json()["evaluating"], what="an evaluation in progress")
        started = time.monotonic()
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(60) == 0
        assert time.monotonic() - started < 5 + 15  # the grace period, plus start-up of nothing new
        assert store.get_run(running.id).status == "running"  # left for the next start to resume
        again = DaemonProcess(config).start()
        try:
            wait_until(
                lambda: store.get_run(running.id).status == "completed", timeout=120, what="the resumed run"
            )
        finally:
            again.stop()
    finally:
        daemon.stop()
        store.close()


def test_a_receiver_down_across_a_restart_gets_the_event_when_it_is_back(tmp_path):
    import yaml

    from tests._receivers import Receiver

    config_path = workspace(tmp_path)
    (tmp_path / "data" / "c").mkdir()  # no snapshot yet: coverage < 1 fires GridIncomplete
    document = yaml.safe_load(config_path.read_text())
    document["tasks"][0]["datasets"].append({"name": "c", "source": "data/c"})
    receiver = Receiver()  # not started: nothing listens on its port yet
    document["alerts"] = {"notifiers": [{"name": "oncall", "kind": "webhook", "url": f"{receiver.url}/hook"}]}
    write_config(config_path, document)
    store = Store.open(f"sqlite:///{tmp_path / 'state' / 'monitor.db'}")
    first = DaemonProcess(config_path).start()
    try:
        wait_until(lambda: completed_runs(first), what="the start-up run")
        # the default GridIncomplete rule fires on the second incomplete run in a row (for_runs: 2)
        assert first.post("/api/v1/runs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 202
        wait_until(lambda: store.outbox_items(), what="the GridIncomplete notification in the outbox")
        wait_until(lambda: store.outbox_items()[0].attempts >= 1, what="a failed delivery attempt")
    finally:
        first.stop()
    (item,) = store.outbox_items()
    assert item.status == "pending" and item.event["alert"] == "GridIncomplete"
    with receiver:
        second = DaemonProcess(config_path).start()
        try:
            wait_until(lambda: receiver.accepted(), timeout=60, what="the delivery after the restart")
        finally:
            second.stop()
        (delivered,) = receiver.accepted()
        assert delivered.headers["webhook-id"] == item.id and delivered.json()["id"] == item.event["id"]
    assert store.outbox_items()[0].status == "delivered"
    store.close()
