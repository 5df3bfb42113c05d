"""The history benchmark at a tiny size: every column measured, and its shortcut to P(M) exact."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest

from benchmarks.history import COLUMNS, Grid, History, config_mapping, main
from monitor.scoring import score_model
from monitor.settings import settings_from_mapping
from monitor.store import Store

pytestmark = pytest.mark.slow  # the benchmark itself, at a tiny size


def test_a_tiny_history_prints_every_column_with_positive_times(tmp_path, capsys):
    figures = tmp_path / "history.json"
    argv = ["--runs", "2,4", "--models", "2", "--cells", "12", "--test-per-class", "4"]
    assert main([*argv, "--backend", "sqlite", "--repeat", "1", "--json", str(figures)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("| N |"))
    assert [c.strip() for c in header.strip("|").split("|")] == ["N", "DB size", *COLUMNS]
    assert [line.split("|")[1].strip() for line in lines if line.startswith(("| 2 |", "| 4 |"))] == ["2", "4"]
    assert any(line.startswith("| N=4 / N=2") for line in lines)
    rows = json.loads(figures.read_text())["backends"]["sqlite"]["rows"]
    assert [r["runs"] for r in rows] == [2, 4]
    assert rows[1]["db_bytes"] > rows[0]["db_bytes"] > 0
    for row in rows:
        assert all(0 < row["seconds"][c] < 10 for c in COLUMNS), row["seconds"]


def test_the_assembled_score_is_what_score_model_gives_the_whole_grid(tmp_path):
    grid = Grid.shaped(models=1, cells=24, seeds=3, classes=4, test_per_class=6)  # 2 × 6 × 2
    settings = settings_from_mapping(config_mapping(grid, tmp_path), base_dir=tmp_path)
    history = History(grid, settings, 1, datetime(2026, 1, 1, tzinfo=UTC), np.random.default_rng(0))
    model = grid.models[0]
    with Store.open(f"sqlite:///{tmp_path / 'db.sqlite'}") as store:
        history.begin(store)
        history.run(store)  # the first run trains every cell
        stored = store.latest_scores()[model][1]
    cells = [c for t in grid.tasks for d in grid.datasets for c in history.fresh[(model, t, d)]]
    expected = score_model(
        model,
        stored.version,
        cells,
        [(c.task, c.dataset, c.strategy) for c in cells],
        {t: "accuracy" for t in grid.tasks},
    )
    for name in ("persistence", "stderr", "stderr_seeds", "spread", "worst_cell_score"):
        assert getattr(stored, name) == pytest.approx(getattr(expected, name), rel=1e-9), name
    assert stored.worst_cell == expected.worst_cell
    assert stored.task_scores == pytest.approx(expected.task_scores)
    assert stored.strategy_scores == pytest.approx(expected.strategy_scores)
    assert {t: pytest.approx(by) for t, by in stored.dataset_scores.items()} == expected.dataset_scores
    assert stored.noise == expected.noise
    assert (stored.cells_planned, stored.cells_scored, stored.coverage) == (24, 24, 1.0)
