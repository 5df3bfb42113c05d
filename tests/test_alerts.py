"""Alert rules: conditions checked against hand-computed values, and the hysteresis of states."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta

import pytest

from monitor.alerts import HistoryPoint, advance, baseline_of, condition
from monitor.settings import AlertsSettings
from monitor.types import CellResult, ModelScore

NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)


def rule(**fields):
    fields.setdefault("name", "R")
    return AlertsSettings(rules=[fields], notifiers=[]).rules[0]


def score(p: float | None, se: float | None = 0.01, coverage: float = 1.0) -> ModelScore:
    return ModelScore("m", "v1", p, se, 0.1, None, None, coverage, 4, round(4 * coverage))


def point(i: int, p: float | None, se: float | None = 0.01) -> HistoryPoint:
    return HistoryPoint(f"{i:032x}", NOW - timedelta(hours=6 * (10 - i)), score(p, se))


def test_drop_against_the_previous_run_needs_min_drop_and_z_standard_errors():
    r = rule(kind="drop", baseline="previous", min_drop=0.03, z=2.0)
    history = [point(1, 0.90, 0.01)]
    # diff = 0.05; se(diff) = sqrt(0.01² + 0.01²) = 0.014142; 2·se = 0.028284 < 0.05 and 0.03 < 0.05
    fired = condition(r, "m", point(2, 0.85, 0.01), history, now=NOW)
    assert fired.active is True and fired.baseline == 0.90 and fired.value == 0.85
    assert fired.details["stderr_of_difference"] == pytest.approx(math.sqrt(0.0002))
    assert fired.threshold == pytest.approx(0.03)  # max(min_drop, z·se) = max(0.03, 0.028284)
    # the same drop with noisy seeds: se(diff) = sqrt(0.03² + 0.03²) = 0.042426; 2·se = 0.0849 > 0.05
    noisy = condition(r, "m", point(2, 0.85, 0.03), [point(1, 0.90, 0.03)], now=NOW)
    assert noisy.active is False and noisy.threshold == pytest.approx(2 * math.sqrt(0.0018))
    # a tiny drop with tiny noise: z passes (0.02 > 2·0.0014) but min_drop does not
    tiny = condition(r, "m", point(2, 0.88, 0.001), [point(1, 0.90, 0.001)], now=NOW)
    assert tiny.active is False


def test_rolling_median_baseline_and_its_standard_error():
    r = rule(kind="drop", baseline="rolling_median", window=3, min_drop=0.0, z=0.0)
    history = [point(1, 0.95, 0.02), point(2, 0.80, 0.01), point(3, 0.90, 0.03), point(4, 0.85, 0.01)]
    base, se, run = baseline_of(r, history, None)
    # window = runs 2, 3, 4 -> median(0.80, 0.90, 0.85) = 0.85 (run 4); stderrs median 0.01
    # se = sqrt(pi/2) · 0.01 / sqrt(3)
    assert base == 0.85 and run == f"{4:032x}"
    assert se == pytest.approx(math.sqrt(math.pi / 2) * 0.01 / math.sqrt(3))
    two = rule(kind="drop", baseline="rolling_median", window=2)
    base2, se2, _ = baseline_of(two, history, None)
    assert base2 == pytest.approx(0.875) and se2 == pytest.approx(0.02 / math.sqrt(2))  # mean of 2; c = 1


def test_first_and_pinned_baselines():
    history = [point(1, 0.91), point(2, 0.80)]
    assert baseline_of(rule(kind="drop", baseline="first"), history, None)[0] == 0.91
    pinned = rule(kind="drop", baseline="pinned", pinned_run="a" * 32)
    assert baseline_of(pinned, history, None) is None  # the pinned run is gone: not judged
    assert condition(pinned, "m", point(3, 0.5), history, now=NOW).active is None
    assert baseline_of(pinned, history, point(7, 0.77))[0] == 0.77


def test_no_history_means_not_judged():
    r = rule(kind="drop")
    assert condition(r, "m", point(1, 0.5), [], now=NOW).active is None


def test_below_incomplete_stale():
    assert condition(rule(kind="below", threshold=0.8), "m", point(1, 0.79), [], now=NOW).active is True
    assert condition(rule(kind="below", threshold=0.8), "m", point(1, 0.80), [], now=NOW).active is False
    partial = HistoryPoint("b" * 32, NOW, score(0.9, coverage=0.75))
    found = condition(rule(kind="incomplete", min_coverage=1.0), "m", partial, [], now=NOW)
    assert found.active is True and "75%" in found.summary
    stale = rule(kind="stale", max_age="24h")
    assert condition(stale, "m", None, [point(9, 0.9)], now=NOW).active is False  # 6 h old
    old = HistoryPoint("c" * 32, NOW - timedelta(hours=25), score(0.9))
    assert condition(stale, "m", None, [old], now=NOW).active is True
    assert condition(stale, "m", None, [], now=NOW).active is True  # never evaluated at all


def test_cell_drop_names_the_worst_cell():
    def cell(strategy, value):
        return CellResult("m", "t", "d", "s", strategy, "ok", value, (value,), 1.0)

    before = [cell("a", 0.9), cell("b", 0.9)]
    after = [cell("a", 0.88), cell("b", 0.75)]
    found = condition(
        rule(kind="cell_drop", min_drop=0.1),
        "m",
        point(2, 0.8),
        [point(1, 0.9)],
        now=NOW,
        previous_cells=before,
        current_cells=after,
    )
    assert found.active is True and found.value == pytest.approx(0.15) and "t/d/b" in found.summary
    assert [c["strategy"] for c in found.details["cells"]] == ["b"]


def _walk(r, pattern: str):
    """Run a rule's hysteresis over a pattern of conditions: 1 holds, 0 clear, ? not judged."""
    from monitor.alerts import Condition

    state, pages, states = None, [], []
    for i, c in enumerate(pattern):
        active = None if c == "?" else c == "1"
        t = advance(
            state, r, "m", Condition(active, value=0.5), now=NOW + timedelta(hours=i), run_id=f"{i:032x}"
        )
        state = t.state
        states.append(state.state)
        if t.event:
            pages.append((i, t.event))
    return states, pages


def test_for_runs_and_resolve_runs():
    r = rule(kind="below", threshold=0.9, for_runs=2, resolve_runs=2)
    states, pages = _walk(r, "0110?0010")
    # "?" (not judged) leaves the state and its counts alone: runs 3 and 5 are the two clear runs
    assert states == ["ok", "pending", "firing", "firing", "firing", "resolved", "ok", "pending", "ok"]
    assert pages == [(2, "firing"), (5, "resolved")]


def test_firing_and_resolved_share_an_episode():
    r = rule(kind="below", threshold=0.9)
    state = None
    from monitor.alerts import Condition

    fired = advance(state, r, "m", Condition(True), now=NOW, run_id=None)
    resolved = advance(fired.state, r, "m", Condition(False), now=NOW, run_id=None)
    assert fired.event == "firing" and resolved.event == "resolved"
    assert fired.state.episode == resolved.state.episode and len(fired.state.episode) == 32


def test_flapping_inputs_do_not_page_every_run():
    alternating = "10" * 25
    once = rule(kind="below", threshold=0.9, for_runs=1, resolve_runs=2)
    _, pages = _walk(once, alternating)
    assert pages == [(0, "firing")]  # never two clear runs in a row: one page, then it stays firing
    patient = rule(kind="below", threshold=0.9, for_runs=2, resolve_runs=1)
    _, pages = _walk(patient, alternating)
    assert pages == []  # never two bad runs in a row: never fires


def test_the_default_rules():
    names = {r.name: r for r in AlertsSettings().rules}
    assert set(names) == {"PersistenceDrop", "EvaluationStale", "GridIncomplete"}
    drop = names["PersistenceDrop"]
    assert (drop.baseline, drop.window, drop.min_drop, drop.z, drop.resolve_runs) == (
        "rolling_median",
        7,
        0.03,
        3.0,
        2,
    )
    assert AlertsSettings(rules=[]).rules == []  # an explicit empty list turns them off


# -- the standard error of a drop, from what two runs share ----------------------------------------


def noisy(p: float, datasets: dict[str, tuple[str, str, float, float]], version: str = "v1") -> ModelScore:
    """A score whose datasets (one task) carry (snapshot, trials, seed variance, test variance)."""
    from monitor.types import DatasetNoise

    noise = {
        "t": {
            d: DatasetNoise(snap, seeds, test, trials) for d, (snap, trials, seeds, test) in datasets.items()
        }
    }
    return dataclasses.replace(score(p, 0.02), version=version, noise=noise)


def test_noise_that_both_runs_share_cancels_in_the_difference():
    from monitor.alerts import difference_variance

    base = noisy(0.9, {"a": ("s1", "T1", 4e-4, 9e-4)})
    # the very same trials: not a single source of noise differs
    assert difference_variance(noisy(0.9, {"a": ("s1", "T1", 4e-4, 9e-4)}), [base]) == 0.0
    # a new model version on the same snapshot: the seeds differ, the test sample does not
    assert difference_variance(noisy(0.8, {"a": ("s1", "T2", 5e-4, 8e-4)}), [base]) == pytest.approx(
        4e-4 + 5e-4
    )
    # a new snapshot: everything counts, once per side
    assert difference_variance(noisy(0.8, {"a": ("s2", "T2", 5e-4, 8e-4)}), [base]) == pytest.approx(
        4e-4 + 9e-4 + 5e-4 + 8e-4
    )


def test_only_the_dataset_that_changed_counts_with_its_weight():
    from monitor.alerts import difference_variance

    before = noisy(0.9, {"a": ("s1", "A1", 4e-4, 9e-4), "b": ("s1", "B1", 1e-4, 2e-4)})
    after = noisy(0.85, {"a": ("s2", "A2", 6e-4, 7e-4), "b": ("s1", "B1", 1e-4, 2e-4)})
    # two datasets of one task: each weighs 1/2 in P(M); b is untouched (cached)
    assert difference_variance(after, [before]) == pytest.approx(0.25 * (4e-4 + 9e-4 + 6e-4 + 7e-4))


def test_a_rolling_median_counts_the_runs_that_share_a_snapshot_together():
    from monitor.alerts import difference_variance

    window = [
        noisy(0.90, {"a": ("s1", "T1", 3e-4, 8e-4)}),
        noisy(0.91, {"a": ("s1", "T1", 3e-4, 8e-4)}),  # cached: the same trials as the first
        noisy(0.89, {"a": ("s2", "T3", 5e-4, 6e-4)}),
    ]
    current = noisy(0.85, {"a": ("s2", "T4", 7e-4, 4e-4)})  # s2 again, another model version
    c2 = math.pi / 2
    expected = (
        c2 * (2 / 3) ** 2 * 8e-4  # s1's test sample, twice in the window
        + (1 - 1 / 3) ** 2 * (4e-4 + 6e-4) / 2  # s2's test sample, shared by the current run
        + c2 * (2 / 3) ** 2 * 3e-4  # trials T1, twice in the window
        + c2 * (1 / 3) ** 2 * 5e-4  # trials T3
        + 7e-4  # the current run's own trials
    )
    assert difference_variance(current, window) == pytest.approx(expected)


def test_the_drop_rule_uses_the_breakdown_and_falls_back_to_stderr_without_one():
    r = rule(kind="drop", baseline="previous", min_drop=0.03, z=3.0)
    before = HistoryPoint(
        "0" * 32,
        NOW - timedelta(hours=6),
        noisy(0.90, {"a": ("s1", "A", 1e-4, 1e-4), "b": ("s1", "B", 1e-4, 1e-4)}),
    )
    # b's cells are cached, a got a new snapshot: se(diff) = 0.5 · sqrt(4e-4) = 0.01, z · se = 0.03
    after = HistoryPoint(
        "1" * 32, NOW, noisy(0.86, {"a": ("s2", "A2", 1e-4, 1e-4), "b": ("s1", "B", 1e-4, 1e-4)})
    )
    fired = condition(r, "m", after, [before], now=NOW)
    assert fired.details["stderr_of_difference"] == pytest.approx(0.01)
    assert fired.active is True  # 0.04 > max(0.03, 0.03)
    # the same runs without a breakdown: both stderrs (0.02) count, 3 · 0.028 > 0.04
    old = condition(r, "m", point(2, 0.86, 0.02), [point(1, 0.90, 0.02)], now=NOW)
    assert old.active is False and old.details["stderr_of_difference"] == pytest.approx(math.sqrt(8e-4))
