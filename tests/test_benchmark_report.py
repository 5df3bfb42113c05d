"""The grid benchmark's agreement figures, checked against values computed by hand."""

from __future__ import annotations

import math

import pytest

from benchmarks.baseline import BaselineResult
from benchmarks.grid import STRATEGIES, EngineResult, compare_scores


def test_bias_its_standard_error_and_pm_difference_by_hand():
    names = [s["name"] for s in STRATEGIES]  # three linear, one partial, one full
    cells = [("t", "d", n) for n in names]
    engine_seeds = {c: [0.8, 0.9] for c in cells}
    baseline_seeds = {c: [0.7, 0.7] for c in cells}
    engine_seeds[cells[3]] = [0.5, 0.5]  # the partial cell: engine 0.5 vs baseline 0.7
    engine = EngineResult(
        {}, {}, {c: sum(v) / 2 for c, v in engine_seeds.items()}, engine_seeds, 1, 0, 0, 0, 0
    )
    baseline = BaselineResult(scores={c: 0.7 for c in cells}, seed_scores=baseline_seeds, total=1.0)
    figures = compare_scores(baseline, engine)
    assert figures["bias"] == pytest.approx({"linear": 0.15, "partial": -0.2, "full": 0.15})
    # linear: three cells, each with variance (0.005 + 0) / 2 seeds -> sqrt(3 * 0.0025) / 3
    assert figures["bias_se"]["linear"] == pytest.approx(math.sqrt(3 * 0.0025) / 3)
    assert figures["bias_se"]["partial"] == 0.0
    assert figures["engine_persistence"] == pytest.approx((4 * 0.85 + 0.5) / 5)
    assert figures["persistence_difference"] == pytest.approx((4 * 0.15 - 0.2) / 5)
    assert figures["max_cell_difference"] == pytest.approx(0.2) and figures["worst_cell"].endswith(
        "last-block"
    )
