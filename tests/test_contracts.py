"""Pins the contracts of DESIGN.md §3: renaming any of these must be a visible, deliberate act."""

from __future__ import annotations

import argparse
import subprocess
import sys
import typing
from datetime import UTC, datetime

import pytest
from pydantic import BaseModel, ValidationError

from monitor.cli import build_parser
from monitor.settings import (
    AlertRule,
    AlertsSettings,
    DatasetSpec,
    DeriveSpec,
    EarlyWarningSettings,
    ExecutorSettings,
    LimitsSettings,
    MetricsSettings,
    ModelSpec,
    NotifierSpec,
    RetentionSettings,
    ScheduleSettings,
    ServerSettings,
    Settings,
    StrategySpec,
    TaskSpec,
)
from monitor.types import CELL_STATUSES, RUN_STATUSES, EstimateResult


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {o for a in parser._actions for o in a.option_strings} | {
        a.dest for a in parser._actions if not a.option_strings
    }


def test_cli_commands_and_options():
    commands = _subcommands(build_parser())
    expected = {
        "run-once": {"--config", "--demo", "--json"},
        "demo": {"dir"},
        "check-config": {"--config"},
        "serve": {"--config", "--demo"},
        "report": {"--config", "--out"},
        "prune": {"--config", "--dry-run"},
        "compare": {"--config", "--models", "--json"},
    }
    for name, options in expected.items():
        assert name in commands, name
        assert options <= _options(commands[name]), (name, options - _options(commands[name]))


def test_python_dash_m_is_the_same_command():
    result = subprocess.run([sys.executable, "-m", "monitor", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("persistence-monitor ")


def test_setting_names():
    assert {
        "state_dir",
        "database_url",
        "device",
        "executor",
        "server",
        "schedule",
        "limits",
        "models",
        "tasks",
        "strategies",
        "seeds",
        "alerts",
    } <= set(Settings.model_fields)
    # The top level is a closed set (unknown keys are refused): a new section is a deliberate act.
    # `config_dir` is set by the loader (the config file's folder), not written in the file.
    assert set(Settings.model_fields) == {
        "state_dir",
        "database_url",
        "device",
        "executor",
        "server",
        "schedule",
        "limits",
        "retention",
        "metrics",
        "early_warning",
        "models",
        "tasks",
        "strategies",
        "seeds",
        "alerts",
        "config_dir",
    }
    assert {"host", "port", "api_token"} <= set(ServerSettings.model_fields)
    assert ExecutorSettings.model_fields["tensorboard_dir"].default is None  # README "Training curves"
    assert {"evaluate", "poll", "on_new_data"} <= set(ScheduleSettings.model_fields)
    assert ScheduleSettings().on_new_data == "grid"  # DESIGN §3.2: the default
    assert set(EarlyWarningSettings.model_fields) == {"estimators"}
    assert {"max_archive_bytes", "max_archive_members", "max_download_bytes", "max_image_pixels"} <= set(
        LimitsSettings.model_fields
    )
    assert {"name", "architecture", "weights", "head", "image_size", "normalize", "role"} <= set(
        ModelSpec.model_fields
    )
    assert ModelSpec.model_fields["role"].default == "deployed"  # DESIGN §3.2: deployed | candidate
    assert {"name", "metric", "train_per_class", "test_per_class", "test_fraction", "datasets"} <= set(
        TaskSpec.model_fields
    )
    assert {"name", "source", "ready_marker", "derive"} <= set(DatasetSpec.model_fields)
    # DESIGN §3.2: `derive: {from, shift, severity, apply_to}` (`seed`: an extension, README)
    derive = {field.alias or name for name, field in DeriveSpec.model_fields.items()}
    assert derive == {"from", "shift", "severity", "apply_to", "seed"}
    assert DeriveSpec.model_fields["apply_to"].default == "test"
    assert {
        "name",
        "mode",
        "optimizer",
        "lr",
        "epochs",
        "batch_size",
        "weight_decay",
        "momentum",
        "label_smoothing",
        "trainable_blocks",
        "schedule",
        "min_lr",
        "step_size",
        "gamma",
        "warmup_epochs",
        "bn",
        "augment",
        "k",
    } <= set(StrategySpec.model_fields)
    assert StrategySpec(name="nn", mode="knn").k == 20  # DESIGN §3.2: knn, k defaults to 20
    # DESIGN §3.2: a strategy that names no schedule trains at a constant learning rate
    assert StrategySpec(name="s", mode="full", lr=0.1, epochs=1).schedule == "constant"
    assert StrategySpec.model_fields["bn"].default == "frozen"
    assert StrategySpec.model_fields["augment"].default == "none"


def test_statuses():
    assert CELL_STATUSES == ("ok", "cached", "diverged", "failed")
    assert RUN_STATUSES == ("completed", "partial", "failed")


def test_ci_runs_the_readme_test_command():
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    readme = (repo / "README.md").read_text()
    marker = readme.index("<!-- test-command")
    command_block = readme[marker:].split("```bash", 1)[1].split("```", 1)[0]
    command = next(line for line in command_block.splitlines() if line.strip() and not line.startswith("#"))
    assert command.endswith("python -m pytest")
    extracted = subprocess.run(
        ["bash", "-c", "grep -o \"awk '.*' README.md\" .ci/run | head -1 | bash"],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    assert extracted.stdout.strip() == command


def test_http_routes(tmp_path):
    from prometheus_client import CollectorRegistry

    from monitor.api import create_app
    from monitor.store import Store
    from tests._api import Stand, settings_for

    store = Store.open(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        app = create_app(
            controller=Stand(), store=store, settings=settings_for(tmp_path), registry=CollectorRegistry()
        )
        routes = {(method, route.path) for route in app.routes for method in getattr(route, "methods", ())}
    finally:
        store.close()
    expected = {
        ("GET", "/metrics"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/"),
        ("GET", "/api/v1/models"),
        ("GET", "/api/v1/runs"),
        ("GET", "/api/v1/runs/{run_id}"),
        ("POST", "/api/v1/runs"),
        ("GET", "/api/v1/alerts"),
        ("GET", "/openapi.json"),
        # extensions (README "Training curves"): the run view and its trials with their curves
        ("GET", "/runs/{run_id}"),
        ("GET", "/api/v1/runs/{run_id}/trials"),
    }
    assert expected <= routes, expected - routes


def test_metric_names(tmp_path):
    from prometheus_client import CollectorRegistry

    from monitor.metrics import DaemonMetrics, StoreCollector
    from monitor.store import Store
    from tests._api import settings_for

    store = Store.open(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        registry = CollectorRegistry()
        registry.register(StoreCollector(store, settings_for(tmp_path)))
        DaemonMetrics(registry)
        names = {family.name for family in registry.collect()}
    finally:
        store.close()
    contract = {
        "persistence_score",
        "persistence_score_stderr",
        "persistence_score_stderr_seeds",
        "persistence_score_spread",
        "persistence_worst_cell_score",
        "persistence_grid_coverage_ratio",
        "persistence_cell_score",
        "persistence_task_score",
        "persistence_dataset_score",
        "persistence_strategy_score",
        "persistence_model_info",
        "persistence_snapshot_info",
        "persistence_snapshot_timestamp_seconds",
        "persistence_snapshot_errors",
        "persistence_runs",
        "persistence_run_duration_seconds",
        "persistence_last_run_timestamp_seconds",
        "persistence_last_success_timestamp_seconds",
        "persistence_cells",
        "persistence_monitor_build_info",
    }  # (counter families are named without their _total suffix)
    assert contract <= names, contract - names


# DESIGN.md §3.5: every metric name, with its labels, as Prometheus shows them (counters with
# their `_total`). `run_duration_seconds` is a histogram: its `le` label is Prometheus's own.
DESIGN_METRICS: dict[str, set[str]] = {
    "persistence_score": {"model"},
    "persistence_score_stderr": {"model"},
    "persistence_score_stderr_seeds": {"model"},
    "persistence_score_spread": {"model"},
    "persistence_worst_cell_score": {"model"},
    "persistence_grid_coverage_ratio": {"model"},
    "persistence_baseline_score": {"model"},
    "persistence_cell_score": {"model", "task", "dataset", "strategy"},
    "persistence_task_score": {"model", "task"},
    "persistence_dataset_score": {"model", "task", "dataset"},
    "persistence_strategy_score": {"model", "strategy"},
    "persistence_model_info": {"model", "version", "role"},  # role: an extension (README, metrics)
    "persistence_snapshot_info": {"task", "dataset", "snapshot"},
    "persistence_snapshot_timestamp_seconds": {"task", "dataset"},
    "persistence_snapshot_errors_total": {"task", "dataset", "reason"},
    "persistence_runs_total": {"outcome"},
    "persistence_run_duration_seconds": set(),
    "persistence_last_run_timestamp_seconds": set(),
    "persistence_last_success_timestamp_seconds": set(),
    "persistence_cells_total": {"outcome"},
    "persistence_alert_firing": {"model", "alert"},
    "persistence_notifications_total": {"notifier", "outcome"},
    "persistence_notification_outbox_pending": set(),
    "persistence_monitor_build_info": {"version"},
    "persistence_leader": set(),
    "persistence_transferability_score": {"model", "task", "dataset", "estimator"},
    "persistence_store_pruned_total": {"what"},
}
# Exported beyond DESIGN.md (README's metrics table): an extension, pinned as well.
EXTENSIONS = {
    "persistence_store_up",
    "persistence_scheduler_events_total",
    "persistence_evaluations_requested_total",
    "persistence_evaluation_in_progress",
    "persistence_polls_total",
}


def _exported(tmp_path) -> dict[str, list]:
    """Every metric family the daemon exports, by its exposed name, read from a store that holds
    one finished run, two snapshots (one rejected), a drop rule's baseline and a notifier: so that
    each family of the contract has samples to show its labels."""
    from prometheus_client import CollectorRegistry

    from monitor.metrics import DaemonMetrics, StoreCollector
    from monitor.store import AlertState, SnapshotRecord, Store
    from tests._api import cell, record_run, score, settings_for

    settings = settings_for(tmp_path)
    settings = settings.model_copy(
        update={
            "alerts": AlertsSettings.model_validate({"notifiers": [{"name": "oncall", "kind": "log"}]}),
            "early_warning": EarlyWarningSettings(estimators=["logme"]),
        }
    )
    (drop,) = [r.name for r in settings.alerts.rules if r.kind == "drop"]  # one of the default rules
    store = Store.open(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        estimate = EstimateResult("m", "t", "d", "2026-01-01T00", "logme", -0.6, "ok", key="k" * 64)
        record_run(store, [cell("m", "d", "lin", 0.7)], [score("m", 0.7)], estimates=[estimate])
        store.record_snapshot(
            SnapshotRecord(
                "t", "d", "2026-01-01T00", "a" * 64, "src", "ok", timestamp=datetime(2026, 1, 1, tzinfo=UTC)
            )
        )
        store.record_snapshot(
            SnapshotRecord("t", "e", "2026-01-02T00", "b" * 64, "src", "rejected", reason="empty_class")
        )
        since = datetime(2026, 1, 1, tzinfo=UTC)
        baseline = AlertState(
            model="m", rule=drop, state="firing", severity="warning", since=since, consecutive=1, baseline=0.8
        )
        store.write_alerts([baseline], [])
        registry = CollectorRegistry()
        registry.register(StoreCollector(store, settings))
        DaemonMetrics(registry)
        families = list(registry.collect())
    finally:
        store.close()
    return {f.name + "_total" if f.type == "counter" else f.name: f.samples for f in families}


def test_every_metric_of_the_design_is_exported_and_nothing_else(tmp_path):
    exported = set(_exported(tmp_path))
    expected = set(DESIGN_METRICS) | EXTENSIONS
    assert exported == expected, (
        f"missing: {sorted(expected - exported)}; not in the contract: {sorted(exported - expected)}"
    )


def test_every_metric_of_the_design_has_its_labels(tmp_path):
    exported = _exported(tmp_path)
    labels = {}
    for name, samples in exported.items():
        if name in DESIGN_METRICS:
            assert samples, f"{name} has no sample to show its labels"
            found = {frozenset(set(s.labels) - {"le"}) for s in samples}
            assert len(found) == 1, (name, found)
            labels[name] = set(next(iter(found)))
    assert labels == DESIGN_METRICS
    # The outcome labels are closed sets (DESIGN.md §3.5).
    outcomes = {
        name: {s.labels["outcome"] for s in exported[name] if s.name == name}
        for name in ("persistence_runs_total", "persistence_cells_total", "persistence_notifications_total")
    }
    assert outcomes == {
        "persistence_runs_total": {"completed", "partial", "failed"},
        "persistence_cells_total": {"ok", "cached", "diverged", "failed"},
        "persistence_notifications_total": {"delivered", "retried", "dropped"},
    }


def _kinds(union: object) -> dict[str, type[BaseModel]]:
    """The `kind`s of a discriminated union of the settings, and the model each one validates to."""
    members, *_ = typing.get_args(union)  # Annotated[A | B | ..., Field(discriminator="kind")]
    kinds = {}
    for member in typing.get_args(members):
        (kind,) = typing.get_args(member.model_fields["kind"].annotation)
        kinds[kind] = member
    return kinds


def test_alert_rule_kinds_and_their_fields():
    rules = _kinds(AlertRule)
    # DESIGN.md §3.2 and §3.6 name these five, issue-level extensions add `estimate_drop`, and the
    # union holds no other.
    assert set(rules) == {"below", "drop", "cell_drop", "stale", "incomplete", "estimate_drop"}
    common = {"name", "kind", "severity", "for_runs", "resolve_runs"}
    for kind, fields in {
        "below": {"threshold"},
        "drop": {"baseline", "window", "min_drop", "z"},
        "cell_drop": {"min_drop"},
        "stale": {"max_age"},
        "incomplete": {"min_coverage"},
        "estimate_drop": {"estimators", "window", "min_drop", "z"},
    }.items():
        assert common | fields <= set(rules[kind].model_fields), (kind, common | fields)
    assert rules["below"].model_fields["resolve_runs"].default == 1  # DESIGN §3.6: default 1
    assert "rolling_median" in typing.get_args(rules["drop"].model_fields["baseline"].annotation)
    # DESIGN's own example rules are valid as they are written there.
    parsed = AlertsSettings.model_validate(
        {
            "rules": [
                {
                    "name": "PersistenceLow",
                    "kind": "below",
                    "threshold": 0.8,
                    "for_runs": 2,
                    "severity": "critical",
                },
                {
                    "name": "PersistenceDrop",
                    "kind": "drop",
                    "baseline": "rolling_median",
                    "window": 7,
                    "min_drop": 0.03,
                    "z": 2.0,
                },
                {"name": "CellDrop", "kind": "cell_drop", "min_drop": 0.10},
                {"name": "EvaluationStale", "kind": "stale", "max_age": "24h"},
                {"name": "GridIncomplete", "kind": "incomplete", "min_coverage": 1.0},
            ]
        }
    )
    assert [(r.name, r.kind) for r in parsed.rules] == [
        ("PersistenceLow", "below"),
        ("PersistenceDrop", "drop"),
        ("CellDrop", "cell_drop"),
        ("EvaluationStale", "stale"),
        ("GridIncomplete", "incomplete"),
    ]
    assert parsed.rules[3].max_age == 86400.0
    with pytest.raises(ValidationError):
        AlertsSettings.model_validate({"rules": [{"name": "Bogus", "kind": "above", "threshold": 0.5}]})


def test_notifier_kinds_and_their_fields():
    notifiers = _kinds(NotifierSpec)
    # DESIGN.md §3.2 names four; `log` (README) is the one extension.
    assert set(notifiers) == {"webhook", "slack", "pagerduty", "alertmanager", "log"}
    for kind, fields in {
        "webhook": {"url", "secret"},
        "slack": {"url"},
        "pagerduty": {"routing_key"},
        "alertmanager": {"url"},
        "log": set(),
    }.items():
        assert {"name", "kind", "min_severity"} | fields <= set(notifiers[kind].model_fields), kind
    parsed = AlertsSettings.model_validate(
        {
            "notifiers": [
                {
                    "name": "oncall",
                    "kind": "webhook",
                    "url": "https://hooks.example/pm",
                    "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                    "min_severity": "warning",
                },
                {"name": "chat", "kind": "slack", "url": "https://hooks.slack.com/services/T/B/x"},
                {"name": "pager", "kind": "pagerduty", "routing_key": "R0UT1NGKEY"},
                {"name": "am", "kind": "alertmanager", "url": "http://alertmanager:9093"},
            ]
        }
    )
    assert [(n.name, n.kind) for n in parsed.notifiers] == [
        ("oncall", "webhook"),
        ("chat", "slack"),
        ("pager", "pagerduty"),
        ("am", "alertmanager"),
    ]
    with pytest.raises(ValidationError):
        AlertsSettings.model_validate({"notifiers": [{"name": "x", "kind": "email", "url": "http://x"}]})


def test_retention_settings_and_their_defaults(tmp_path):
    from tests._api import settings_for

    # Not spelled out in DESIGN.md (`retention: {…}`): the code's defaults, as README documents them.
    assert set(RetentionSettings.model_fields) == {
        "enabled",
        "cells_days",
        "keep_runs",
        "history_days",
        "notifications_days",
        "interval",
        "batch",
    }
    defaults = {
        "enabled": True,
        "cells_days": 90.0,
        "keep_runs": 20,
        "history_days": 730.0,
        "notifications_days": 365.0,
        "interval": 3600.0,  # seconds: 1h
        "batch": 5,
    }
    assert RetentionSettings().model_dump() == defaults
    assert settings_for(tmp_path).retention.model_dump() == defaults  # a config without `retention:`
    custom = RetentionSettings.model_validate({"interval": "30m", "history_days": None, "cells_days": 7})
    assert (custom.interval, custom.history_days, custom.cells_days) == (1800.0, None, 7.0)


def test_metrics_settings_and_their_defaults(tmp_path):
    from tests._api import settings_for

    assert set(MetricsSettings.model_fields) == {"cell_series", "worst_cells"}
    assert typing.get_args(MetricsSettings.model_fields["cell_series"].annotation) == ("all", "worst", "none")
    assert MetricsSettings().model_dump() == {"cell_series": "all", "worst_cells": 20}
    assert settings_for(tmp_path).metrics.model_dump() == {"cell_series": "all", "worst_cells": 20}
    with pytest.raises(ValidationError):
        MetricsSettings.model_validate({"cell_series": "some"})
