"""Pins the contracts of DESIGN.md §3: renaming any of these must be a visible, deliberate act."""

from __future__ import annotations

import argparse
import subprocess
import sys

from monitor.cli import build_parser
from monitor.settings import (
    DatasetSpec,
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
        "models",
        "tasks",
        "strategies",
        "seeds",
        "alerts",
    } <= set(Settings.model_fields)
    assert {"host", "port", "api_token"} <= set(ServerSettings.model_fields)
    assert {"evaluate", "poll"} <= set(ScheduleSettings.model_fields)
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
    } <= set(StrategySpec.model_fields)


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
