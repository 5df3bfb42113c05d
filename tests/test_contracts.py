"""Pins the contracts of DESIGN.md §3: renaming any of these must be a visible, deliberate act."""

from __future__ import annotations

import argparse
import subprocess
import sys

from monitor.cli import build_parser
from monitor.settings import (
    DatasetSpec,
    LimitsSettings,
    ModelSpec,
    ScheduleSettings,
    ServerSettings,
    Settings,
    StrategySpec,
    TaskSpec,
)
from monitor.types import CELL_STATUSES, RUN_STATUSES


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
    assert {"host", "port", "api_token"} <= set(ServerSettings.model_fields)
    assert {"evaluate", "poll"} <= set(ScheduleSettings.model_fields)
    assert {"max_archive_bytes", "max_archive_members", "max_download_bytes", "max_image_pixels"} <= set(
        LimitsSettings.model_fields
    )
    assert {"name", "architecture", "weights", "head", "image_size", "normalize"} <= set(
        ModelSpec.model_fields
    )
    assert {"name", "metric", "train_per_class", "test_per_class", "test_fraction", "datasets"} <= set(
        TaskSpec.model_fields
    )
    assert {"name", "source", "ready_marker"} <= set(DatasetSpec.model_fields)
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
    } <= set(StrategySpec.model_fields)
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
    from tests.test_api_metrics import Stand, settings_for

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
    }
    assert expected <= routes, expected - routes


def test_metric_names(tmp_path):
    from prometheus_client import CollectorRegistry

    from monitor.metrics import DaemonMetrics, StoreCollector
    from monitor.store import Store
    from tests.test_api_metrics import settings_for

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
