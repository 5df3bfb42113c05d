"""The HTTP app and the metrics collector against a real store (SQLite in tmp), no daemon."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from monitor.api import create_app
from monitor.metrics import RUN_DURATION_BUCKETS, StoreCollector
from monitor.settings import MetricsSettings
from monitor.store import SnapshotRecord, Store
from monitor.types import ModelVersion
from tests._api import Stand, cell, record_run, score, settings_for


@pytest.fixture()
def store(tmp_path):
    store = Store.open(f"sqlite:///{tmp_path / 'db.sqlite'}")
    yield store
    store.close()


def test_mutating_calls_need_the_token_and_are_refused_without_one(tmp_path, store):
    stand = Stand()
    client = TestClient(
        create_app(
            controller=stand, store=store, settings=settings_for(tmp_path), registry=CollectorRegistry()
        )
    )
    assert client.post("/api/v1/runs").status_code == 401
    wrong = client.post("/api/v1/runs", headers={"Authorization": "Bearer s3cret-tokeN"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"].startswith("Bearer")
    assert client.post("/api/v1/runs", headers={"Authorization": "Basic s3cret-token"}).status_code == 401
    ok = client.post("/api/v1/runs", headers={"Authorization": "Bearer s3cret-token"})
    assert ok.status_code == 202 and ok.json() == {"run_id": "f" * 32, "status": "queued", "joined": False}
    assert stand.requests == ["api"]
    assert "s3cret" not in client.get("/openapi.json").text + client.get("/").text

    closed = TestClient(
        create_app(
            controller=stand,
            store=store,
            settings=settings_for(tmp_path, token=None),
            registry=CollectorRegistry(),
        )
    )
    refused = closed.post("/api/v1/runs", headers={"Authorization": "Bearer anything"})
    assert refused.status_code == 403 and "server.api_token" in refused.json()["detail"]
    assert stand.requests == ["api"]


def test_state_metrics_come_from_the_store_and_follow_the_config(tmp_path, store):
    settings = settings_for(tmp_path, models=("m",))
    store.record_model_version(ModelVersion("m", "torchvision:resnet18", "abcdef012345" + "0" * 52, None))
    cells = [
        cell("m", d, s, 0.5 + 0.1 * i)
        for i, (d, s) in enumerate([("d", "lin"), ("d", "full"), ("e", "lin"), ("e", "full")])
    ]
    record_run(
        store, [*cells, cell("gone", "d", "lin", 0.9)], [score("m", 0.65), score("gone", 0.9)], seconds=7.0
    )
    record_run(store, [], [], status="failed", seconds=400.0)
    store.record_snapshot(
        SnapshotRecord(
            "t", "d", "2026-01-01T00", "a" * 64, "src", "ok", timestamp=datetime(2026, 1, 1, tzinfo=UTC)
        )
    )
    store.record_snapshot(
        SnapshotRecord(
            "t", "d", "2026-01-02T00", "b" * 64, "src", "rejected", reason="empty_class", message="x"
        )
    )
    registry = CollectorRegistry()
    registry.register(StoreCollector(store, settings))
    value = registry.get_sample_value
    assert value("persistence_score", {"model": "m"}) == 0.65
    assert value("persistence_score", {"model": "gone"}) is None  # no longer configured: no label set
    assert value("persistence_score_stderr", {"model": "m"}) == 0.01
    assert value("persistence_score_stderr_seeds", {"model": "m"}) == 0.004
    assert value("persistence_grid_coverage_ratio", {"model": "m"}) == 1.0
    assert value("persistence_worst_cell_score", {"model": "m"}) == pytest.approx(0.55)
    info = {"model": "m", "version": "abcdef012345", "role": "deployed"}
    assert value("persistence_model_info", info) == 1.0
    assert (
        value("persistence_cell_score", {"model": "m", "task": "t", "dataset": "e", "strategy": "full"})
        == 0.8
    )
    assert value("persistence_task_score", {"model": "m", "task": "t"}) == 0.65
    assert value("persistence_dataset_score", {"model": "m", "task": "t", "dataset": "d"}) == 0.65
    assert value("persistence_strategy_score", {"model": "m", "strategy": "lin"}) == 0.65
    assert (
        value("persistence_snapshot_info", {"task": "t", "dataset": "d", "snapshot": "2026-01-01T00"}) == 1.0
    )
    assert (
        value("persistence_snapshot_timestamp_seconds", {"task": "t", "dataset": "d"})
        == datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    )
    assert (
        value("persistence_snapshot_errors_total", {"task": "t", "dataset": "d", "reason": "empty_class"})
        == 1.0
    )
    assert value("persistence_runs_total", {"outcome": "completed"}) == 1.0
    assert value("persistence_runs_total", {"outcome": "failed"}) == 1.0
    assert value("persistence_cells_total", {"outcome": "ok"}) == 5.0
    assert value("persistence_run_duration_seconds_count") == 2.0
    assert value("persistence_run_duration_seconds_sum") == 407.0
    assert value("persistence_run_duration_seconds_bucket", {"le": "15.0"}) == 1.0
    assert value("persistence_run_duration_seconds_bucket", {"le": "+Inf"}) == 2.0
    assert value("persistence_last_success_timestamp_seconds") <= value(
        "persistence_last_run_timestamp_seconds"
    )
    assert value("persistence_monitor_build_info", {"version": __import__("monitor").__version__}) == 1.0
    assert value("persistence_store_up") == 1.0
    assert RUN_DURATION_BUCKETS[0] == 1.0


def test_a_store_that_does_not_answer_is_a_metric_not_a_500(tmp_path, store, monkeypatch):
    from monitor.errors import StoreError

    registry = CollectorRegistry()
    registry.register(StoreCollector(store, settings_for(tmp_path)))

    def down(self, models=None):
        raise StoreError("the database is down")

    monkeypatch.setattr(Store, "latest_scores", down)
    assert registry.get_sample_value("persistence_store_up") == 0.0
    assert registry.get_sample_value("persistence_score", {"model": "m"}) is None
    assert registry.get_sample_value(
        "persistence_monitor_build_info", {"version": __import__("monitor").__version__}
    )


def test_runs_and_models_api(tmp_path, store):
    run_id = record_run(store, [cell("m", "d", "lin", 0.7)], [score("m", 0.7)])
    client = TestClient(
        create_app(
            controller=Stand(), store=store, settings=settings_for(tmp_path), registry=CollectorRegistry()
        )
    )
    (model,) = client.get("/api/v1/models").json()
    assert model["persistence"] == 0.7 and model["run_id"] == run_id and model["version"] == "abcdef012345"
    assert (model["stderr"], model["stderr_seeds"]) == (0.01, 0.004)
    runs = client.get("/api/v1/runs?limit=5").json()
    assert runs[0]["run_id"] == run_id and runs[0]["models"][0]["persistence"] == 0.7
    assert (runs[0]["models"][0]["stderr"], runs[0]["models"][0]["stderr_seeds"]) == (0.01, 0.004)
    assert client.get("/api/v1/runs?status=bogus").status_code == 422
    one = client.get(f"/api/v1/runs/{run_id}").json()
    assert one["models"][0]["cells"][0] == {
        "task": "t",
        "dataset": "d",
        "snapshot": "2026-01-01T00",
        "strategy": "lin",
        "score": 0.7,
        "seed_scores": [0.7],
        "status": "ok",
        "error": None,
        "seconds": 1.5,
    }
    assert client.get("/api/v1/runs/not-a-run-id").status_code == 404
    assert client.get("/healthz").json()["status"] == "ok" and client.get("/readyz").status_code == 200


@pytest.mark.parametrize(
    ("cell_series", "exported"),
    [
        ("all", {("d", "lin"): 0.9, ("d", "full"): 0.4, ("e", "lin"): 0.7, ("e", "full"): 0.5}),
        ("worst", {("d", "full"): 0.4, ("e", "full"): 0.5}),
        ("none", {}),
    ],
)
def test_cell_series_can_be_limited_to_the_worst_cells_or_dropped(tmp_path, store, cell_series, exported):
    settings = settings_for(tmp_path).model_copy(
        update={"metrics": MetricsSettings(cell_series=cell_series, worst_cells=2)}
    )
    scores = {("d", "lin"): 0.9, ("d", "full"): 0.4, ("e", "lin"): 0.7, ("e", "full"): 0.5}
    record_run(store, [cell("m", d, s, v) for (d, s), v in scores.items()], [score("m", 0.625)])
    registry = CollectorRegistry()
    registry.register(StoreCollector(store, settings))
    found = {
        (sample.labels["dataset"], sample.labels["strategy"]): sample.value
        for family in registry.collect()
        if family.name == "persistence_cell_score"
        for sample in family.samples
    }
    assert found == exported
    # The aggregates stay whatever the cell series.
    assert registry.get_sample_value("persistence_score", {"model": "m"}) == 0.625
    assert registry.get_sample_value("persistence_dataset_score", {"model": "m", "task": "t", "dataset": "e"})
    assert registry.get_sample_value("persistence_store_pruned_total", {"what": "cells"}) == 0.0
