"""Every shipped dashboard query and Prometheus rule, evaluated by a real Prometheus that scrapes the
real daemon running the demo, with the shipped scrape config and rule file."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from grafana.dashboard import queries, render
from tests._services import DaemonProcess, free_port, prometheus_binary, wait_until

pytestmark = pytest.mark.slow  # the daemon running the demo, scraped by a real Prometheus

REPO = Path(__file__).resolve().parents[1]
TOKEN = "observability-token-0123456789"
# Panels whose query is expected to be empty on a healthy demo (nothing is wrong there).
EMPTY_WHEN_HEALTHY = {
    "Firing alerts": "no alert fires on a healthy demo",
    "Snapshot errors in range": "no snapshot of the demo is rejected",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from monitor.demo import build_demo

    root = tmp_path_factory.mktemp("observability")
    config_path = build_demo(root / "demo", pretrain_epochs=2)
    config = yaml.safe_load(config_path.read_text())
    for strategy in config["strategies"]:
        if strategy["mode"] != "knn":  # (knn trains nothing)
            strategy["epochs"] = 1  # the demo's grid, lighter
    config["server"] = {"host": "127.0.0.1", "port": free_port(), "api_token": TOKEN}
    config["schedule"] = {"evaluate": "0 0 1 1 *", "poll": "1s"}  # polls: scheduler events to show
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    daemon = DaemonProcess(config_path).start()
    prometheus = None
    try:
        wait_until(lambda: _finished(daemon) >= 1, timeout=180, what="the demo's start-up run")
        # a second run gives the drop rule its baseline (persistence_baseline_score)
        assert daemon.post("/api/v1/runs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 202
        wait_until(lambda: _finished(daemon) >= 2, timeout=180, what="the second run")
        prometheus = _prometheus(root / "prometheus", daemon.port)
        wait_until(lambda: _query(prometheus, "persistence_score"), timeout=60, what="a scrape of the daemon")
        # a run while Prometheus watches: the dashboard's run annotations and increase()s see it
        assert daemon.post("/api/v1/runs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 202
        wait_until(lambda: _finished(daemon) >= 3, timeout=180, what="the third run")
        time.sleep(4)  # a few more scrapes: increase() over short ranges needs two samples
        yield daemon, prometheus
    finally:
        if prometheus is not None:
            prometheus[1].terminate()
            prometheus[1].wait(30)
        daemon.stop()


def _finished(daemon: DaemonProcess) -> int:
    return sum(1 for r in daemon.runs() if r["status"] in ("completed", "partial"))


def _prometheus(workdir: Path, port: int) -> tuple[str, subprocess.Popen[bytes]]:
    """Prometheus with the shipped configuration, pointed at the test's daemon and sped up."""
    workdir.mkdir()
    shipped = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    shutil.copy(REPO / "deploy" / "prometheus" / "persistence.rules.yml", workdir / "persistence.rules.yml")
    shipped["global"].update(scrape_interval="1s", evaluation_interval="1s")
    shipped.pop("alerting", None)  # no Alertmanager in this test
    jobs = [job for job in shipped["scrape_configs"] if job["job_name"] == "persistence-monitor"]
    assert jobs, "the shipped scrape config must have the persistence-monitor job"
    jobs[0].update(
        scrape_interval="1s", scrape_timeout="1s", static_configs=[{"targets": [f"127.0.0.1:{port}"]}]
    )
    shipped["scrape_configs"] = jobs
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(shipped))
    web = free_port()
    process = subprocess.Popen(
        [
            prometheus_binary(),
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{web}",
            "--log.level=warn",
        ],
        stdout=(workdir / "log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{web}"
    wait_until(
        lambda: httpx.get(f"{url}/-/ready", timeout=2).status_code == 200, timeout=60, what="prometheus"
    )
    return url, process


def _query(prometheus: tuple[str, subprocess.Popen[bytes]], expr: str) -> list[dict]:
    body = httpx.get(f"{prometheus[0]}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert body["status"] == "success", (expr, body)
    return body["data"]["result"]


def test_every_dashboard_query_returns_data(stack):
    _, prometheus = stack
    empty = []
    for title, expr in queries():
        result = _query(prometheus, render(expr))
        if not result and title not in EMPTY_WHEN_HEALTHY:
            empty.append((title, expr))
    assert not empty, f"dashboard queries without data on the demo: {empty}"


def test_every_rule_is_valid_loaded_and_says_what_the_demo_state_says(stack):
    daemon, prometheus = stack
    rules = yaml.safe_load((REPO / "deploy" / "prometheus" / "persistence.rules.yml").read_text())
    # the deployed model (the candidate beside it is judged by no rule: the shipped rules skip it)
    (model,) = [m for m in daemon.get("/api/v1/models").json() if m["role"] == "deployed"]
    drop = next(
        a
        for a in daemon.get("/api/v1/alerts").json()
        if a["alert"] == "PersistenceDrop" and a["model"] == model["model"]
    )
    p, se, baseline = model["persistence"], model["stderr"] or 0.0, drop["baseline"]
    assert baseline is not None, "the second run must have given the drop rule a baseline"

    def dropped(by: float) -> bool:
        return baseline - p > by and not (baseline - p <= 3.0 * se)

    expected = {
        ("PersistenceLow", None): p < 0.8,
        ("PersistenceDropped", "warning"): dropped(0.03),
        ("PersistenceDropped", "critical"): dropped(0.1),
        ("GridIncomplete", None): model["coverage"] < 1,
    }
    checked = 0
    for group in rules["groups"]:
        for rule in group["rules"]:
            result = _query(prometheus, rule["expr"])
            key = (
                rule["alert"],
                rule["labels"]["severity"] if rule["alert"] == "PersistenceDropped" else None,
            )
            # everything else is about failures (stale, down, notifications): quiet on a healthy demo
            should_fire = expected.get(key, False)
            assert bool(result) == should_fire, (rule["alert"], rule["labels"], rule["expr"], result)
            checked += 1
    assert checked >= 10
    loaded = httpx.get(f"{prometheus[0]}/api/v1/rules", timeout=10).json()["data"]["groups"]
    health = [(r["name"], r["health"]) for g in loaded for r in g["rules"]]
    assert len(health) == checked and all(h == "ok" for _, h in health), health
