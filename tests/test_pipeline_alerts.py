"""Alerts in the pipeline: judged after every run, stored atomically with it, with attribution."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.engine import InlineExecutor
from monitor.pipeline import run_evaluation
from monitor.settings import load_settings
from monitor.store import Store
from tests._workspace import basic_config, write_config, write_snapshot, write_tiny_cnn

pytestmark = pytest.mark.slow  # every test trains a grid, run after run


class Quiet:
    def stage(self, text): ...
    def warn(self, text): ...
    def planned(self, trials, cached): ...
    def trial_done(self, trial, result): ...


@pytest.fixture()
def workspace(tmp_path: Path):
    write_tiny_cnn(tmp_path, name="alert_cnn")
    for dataset, offset in (("a", 0), ("b", 40)):
        write_snapshot(tmp_path / "data" / dataset / "2026-01-01T00", (5, 6, 7), per_class=24, offset=offset)
    config = basic_config(
        [{"name": "cnn", "architecture": "python:alert_cnn:build"}],
        {"digits": [("a", "data/a"), ("b", "data/b")]},
        strategies=[
            {"name": "full", "mode": "full", "optimizer": "adamw", "lr": 0.005, "epochs": 6, "batch_size": 16}
        ],
        seeds=[0, 1],
    )
    return tmp_path, config


def evaluate(root: Path, config: dict, **kwargs):
    settings = load_settings(write_config(root / "persistence-monitor.yaml", config))
    store = Store.open(settings.resolved_database_url)
    return run_evaluation(settings, store, InlineExecutor("cpu"), observer=Quiet(), **kwargs), store


def scrambled_snapshot(root: Path) -> None:
    """A newer snapshot of dataset b whose training labels are wrong: filed under another class."""
    target = root / "data" / "b" / "2026-01-02T00"
    write_snapshot(target, (5, 6, 7), per_class=24, offset=40)
    for split in ("train",):
        folders = [target / split / c for c in ("5", "6", "7")]
        for folder in folders:
            folder.rename(folder.with_name(folder.name + "x"))
        for old, new in zip(("5x", "6x", "7x"), ("6", "7", "5"), strict=True):
            (target / split / old).rename(target / split / new)


def test_a_real_drop_fires_with_the_cells_that_caused_it(workspace):
    root, config = workspace
    config["alerts"] = {
        "rules": [
            {
                "name": "Drop",
                "kind": "drop",
                "baseline": "previous",
                "min_drop": 0.05,
                "z": 0,
                "severity": "critical",
            }
        ],
        "notifiers": [
            {"name": "chat", "kind": "log", "min_severity": "warning"},
            {"name": "quiet", "kind": "log", "min_severity": "critical"},
        ],
    }
    first, store = evaluate(root, config)
    assert first.alerts == []
    (state,) = store.alert_states()
    assert state.state == "ok" and state.rule == "Drop"  # not judged yet (no history), still recorded
    scrambled_snapshot(root)
    second, store = evaluate(root, config)
    (event,) = second.alerts
    assert event["kind"] == "firing" and event["alert"] == "Drop" and event["model"] == "cnn"
    assert event["baseline"] == first.models[0].score.persistence
    assert event["value"] == second.models[0].score.persistence and event["value"] < event["baseline"] - 0.05
    top = event["contributors"][0]
    assert top["dataset"] == "b" and top["snapshot"] == "2026-01-02T00" and top["contribution"] < 0
    assert "b/full" in event["description"]
    (firing,) = [s for s in store.alert_states() if s.rule == "Drop"]
    assert firing.state == "firing" and firing.episode == event["episode"]
    deliveries = store.outbox_items()
    assert sorted(d.notifier for d in deliveries) == ["chat", "quiet"]  # critical passes both thresholds
    assert all(d.event["id"] == event["id"] for d in deliveries)


def test_incomplete_fires_then_resolves_when_the_data_arrives(workspace):
    root, config = workspace
    (root / "data" / "c").mkdir()
    config["tasks"][0]["datasets"].append({"name": "c", "source": "data/c"})
    config["alerts"] = {
        "rules": [
            {"name": "GridIncomplete", "kind": "incomplete", "min_coverage": 1.0, "severity": "warning"}
        ],
        "notifiers": [{"name": "ops", "kind": "log"}],
    }
    first, store = evaluate(root, config)
    assert [e["kind"] for e in first.alerts] == ["firing"] and "67%" in first.alerts[0]["summary"]
    write_snapshot(root / "data" / "c" / "2026-01-01T00", (5, 6, 7), per_class=24, offset=80)
    second, store = evaluate(root, config)
    assert [e["kind"] for e in second.alerts] == ["resolved"]
    assert second.alerts[0]["episode"] == first.alerts[0]["episode"]
    assert second.alerts[0]["ends_at"] is not None
    assert [s.state for s in store.alert_states()] == ["resolved"]
    assert [d.event["kind"] for d in sorted(store.outbox_items(), key=lambda d: d.event["at"])] == [
        "firing",
        "resolved",
    ]


def test_alerts_are_written_with_the_run_or_not_at_all(workspace):
    root, config = workspace
    (root / "data" / "c").mkdir()
    config["tasks"][0]["datasets"].append({"name": "c", "source": "data/c"})
    config["alerts"] = {
        "rules": [{"name": "GridIncomplete", "kind": "incomplete"}],
        "notifiers": [{"name": "ops", "kind": "log"}],
    }

    def crash(session):
        raise RuntimeError("the database connection dropped mid-commit")

    with pytest.raises(RuntimeError):
        evaluate(root, config, in_transaction=crash)
    store = Store.open(load_settings(root / "persistence-monitor.yaml").resolved_database_url)
    assert store.alert_states() == [] and store.outbox_items() == []
    (run,) = store.list_runs()
    assert run.status == "failed" and run.models == []


def test_clock_rules_judge_a_candidate_only_when_they_name_it(workspace):
    from datetime import UTC, datetime

    from monitor.pipeline import evaluate_time_rules

    root, config = workspace
    config["models"].append({**config["models"][0], "name": "cnn-next", "role": "candidate"})
    config["alerts"] = {
        "rules": [
            {"name": "Stale", "kind": "stale", "max_age": "1h"},
            {"name": "NextStale", "kind": "stale", "max_age": "1h", "models": ["cnn-next"]},
        ]
    }
    settings = load_settings(write_config(root / "persistence-monitor.yaml", config))
    store = Store.open(settings.resolved_database_url)
    try:
        writes = evaluate_time_rules(settings, store, now=datetime.now(UTC))  # nothing evaluated yet
    finally:
        store.close()
    assert sorted((s.model, s.rule, s.state) for s in writes.states) == [
        ("cnn", "Stale", "firing"),
        ("cnn-next", "NextStale", "firing"),
    ]
