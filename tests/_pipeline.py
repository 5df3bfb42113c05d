"""The pipeline's test workspace and one evaluation of it (a pytest plugin, and helpers).

Loaded from tests/conftest.py (`pytest_plugins`). Fixture:

    workspace  (function)  (root, config): a tiny CNN and two datasets of real digits (5, 6, 7),
                           each with a split snapshot and a later hashed one; `config` is the
                           document `evaluate` writes. Modules with a workspace of their own
                           define their own `workspace` fixture.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.engine import InlineExecutor
from monitor.pipeline import RunReport, run_evaluation
from monitor.settings import load_settings
from monitor.store import Store
from tests._workspace import basic_config, write_config, write_snapshot, write_tiny_cnn

__all__ = ["Recorder", "evaluate", "workspace"]


class Recorder:
    """An observer of a run that keeps its warnings and the results of the trials it ran."""

    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.trials = 0
        self.results: list = []

    def stage(self, text: str) -> None:
        pass

    def warn(self, text: str) -> None:
        self.warnings.append(text)

    def planned(self, trials: int, cached: int) -> None:
        pass

    def trial_done(self, trial, result) -> None:
        self.trials += 1
        self.results.append(result)


@pytest.fixture()
def workspace(tmp_path: Path):
    write_tiny_cnn(tmp_path, name="pipe_cnn")
    for dataset, offset in (("a", 0), ("b", 40)):
        write_snapshot(tmp_path / "data" / dataset / "2026-01-01T00", (5, 6, 7), per_class=24, offset=offset)
        write_snapshot(
            tmp_path / "data" / dataset / "2026-01-02T00",
            (5, 6, 7),
            per_class=24,
            offset=offset + 10,
            layout="hashed",
        )
    config = basic_config(
        [{"name": "cnn", "architecture": "python:pipe_cnn:build"}],
        {"digits": [("a", "data/a"), ("b", "data/b")]},
    )
    return tmp_path, config


def evaluate(root: Path, config: dict, executor=None) -> tuple[RunReport, Recorder, Store]:
    """Write `config` into `root`, run one evaluation (in-process by default) and return its report,
    the recorder that watched it and the store it wrote (left open)."""
    settings = load_settings(write_config(root / "persistence-monitor.yaml", config))
    store = Store.open(settings.resolved_database_url)
    recorder = Recorder()
    report = run_evaluation(settings, store, executor or InlineExecutor("cpu"), observer=recorder)
    return report, recorder, store
