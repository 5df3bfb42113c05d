"""Scoring (DESIGN.md §1): every expected value is worked out by hand in the comments beside it."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import pytest

from monitor.scoring import CellContribution, attribute_change, cell_weights, score_model
from monitor.types import CellResult, CellStatus

try:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    HAVE_HYPOTHESIS = True
except ImportError:  # hypothesis is optional; the seeded property test below still runs
    HAVE_HYPOTHESIS = False

MODEL = "resnet18-prod"


def close(expected: float) -> Any:
    """Equality up to float rounding (the hand values are exact decimals or fractions)."""
    return pytest.approx(expected, rel=1e-12, abs=1e-15)


def cell(
    task: str,
    dataset: str,
    strategy: str,
    score: float | None,
    seeds: Sequence[float] | None = None,
    status: CellStatus = "ok",
) -> CellResult:
    """A result; `score` is given by hand (the mean of `seeds`), seeds default to (score,)."""
    if seeds is None:
        seeds = () if score is None else (score,)
    return CellResult(
        model=MODEL,
        task=task,
        dataset=dataset,
        snapshot="s1",
        strategy=strategy,
        status=status,
        score=score,
        seed_scores=tuple(seeds),
        seconds=1.0,
    )


def plan_of(cells: Sequence[CellResult]) -> list[tuple[str, str, str]]:
    return [(c.task, c.dataset, c.strategy) for c in cells]


# Rectangular 2 tasks × 2 datasets × 2 strategies; scores are binary fractions (exact in floats).
RECT = [
    cell("A", "a1", "lin", 0.5),
    cell("A", "a1", "full", 0.75),
    cell("A", "a2", "lin", 0.25),
    cell("A", "a2", "full", 1.0),
    cell("B", "b1", "lin", 0.5),
    cell("B", "b1", "full", 0.5),
    cell("B", "b2", "lin", 0.125),
    cell("B", "b2", "full", 0.625),
]
RECT_PLAN = plan_of(RECT)

# Ragged: task A has 1 dataset, task B has 3; 2 strategies everywhere.
RAGGED = [
    cell("A", "a1", "lin", 0.9),
    cell("A", "a1", "full", 0.7),
    cell("B", "b1", "lin", 0.4),
    cell("B", "b1", "full", 0.2),
    cell("B", "b2", "lin", 0.5),
    cell("B", "b2", "full", 0.3),
    cell("B", "b3", "lin", 0.6),
    cell("B", "b3", "full", 0.4),
]
RAGGED_PLAN = plan_of(RAGGED)


def test_rectangular_grid_is_the_plain_mean_with_hand_marginals() -> None:
    s = score_model(MODEL, "abc123", RECT, RECT_PLAN)
    # sum = .5+.75+.25+1+.5+.5+.125+.625 = 4.25; 4.25 / 8 = 0.53125
    assert s.persistence == close(0.53125)
    assert (s.model, s.version, s.coverage, s.cells_planned, s.cells_scored) == (MODEL, "abc123", 1.0, 8, 8)
    # a1 = (.5+.75)/2 = .625, a2 = (.25+1)/2 = .625; b1 = (.5+.5)/2 = .5, b2 = (.125+.625)/2 = .375
    assert s.dataset_scores == {
        "A": {"a1": close(0.625), "a2": close(0.625)},
        "B": {"b1": close(0.5), "b2": close(0.375)},
    }
    # A = (.625+.625)/2 = .625; B = (.5+.375)/2 = .4375; P = (.625+.4375)/2 = .53125
    assert s.task_scores == {"A": close(0.625), "B": close(0.4375)}
    # lin = (.5+.25+.5+.125)/4 = 1.375/4 = .34375; full = (.75+1+.5+.625)/4 = 2.875/4 = .71875
    assert s.strategy_scores == {"lin": close(0.34375), "full": close(0.71875)}
    assert s.worst_cell == ("B", "b2", "lin")
    assert s.worst_cell_score == 0.125
    # deviations from 17/32 in 32nds: -1, 7, -9, 15, -1, -1, -13, 3; squares sum to 536
    # pvariance = 536 / 32² / 8 = 67/1024; pstdev = sqrt(67)/32
    assert s.spread == close(math.sqrt(67) / 32)
    assert cell_weights(RECT, RECT_PLAN) == {cid: 1 / 8 for cid in RECT_PLAN}
    assert s.stderr is None  # single-seed cells everywhere: no replicate


def test_ragged_grid_every_task_weighs_the_same() -> None:
    s = score_model(MODEL, "v", RAGGED, RAGGED_PLAN)
    # A: a1 = (.9+.7)/2 = .8 -> task A = .8
    # B: b1 = (.4+.2)/2 = .3, b2 = (.5+.3)/2 = .4, b3 = (.6+.4)/2 = .5 -> task B = 1.2/3 = .4
    assert s.task_scores == {"A": close(0.8), "B": close(0.4)}
    assert s.dataset_scores == {
        "A": {"a1": close(0.8)},
        "B": {"b1": close(0.3), "b2": close(0.4), "b3": close(0.5)},
    }
    # P = (.8 + .4)/2 = .6, while the plain cell mean is 4.0/8 = .5
    assert s.persistence == close(0.6)
    # lin = (.9 + (.4+.5+.6)/3)/2 = (.9+.5)/2 = .7; full = (.7 + (.2+.3+.4)/3)/2 = (.7+.3)/2 = .5
    assert s.strategy_scores == {"lin": close(0.7), "full": close(0.5)}
    w = cell_weights(RAGGED, RAGGED_PLAN)
    # A cells: 1/(2·1·2) = 1/4; B cells: 1/(2·3·2) = 1/12 -> each task holds 2/4 = 6/12 = 1/2
    assert w == {cid: close(1 / 4 if cid[0] == "A" else 1 / 12) for cid in RAGGED_PLAN}
    assert math.fsum(v for cid, v in w.items() if cid[0] == "A") == close(0.5)
    assert math.fsum(v for cid, v in w.items() if cid[0] == "B") == close(0.5)


@pytest.mark.parametrize("how", ["failed", "missing"])
def test_failed_or_missing_cells_are_left_out_and_means_renormalise(how: str) -> None:
    gone = {("A", "a1", "full"), ("B", "b1", "lin"), ("B", "b1", "full")}
    cells = []
    for c in RECT:
        if (c.task, c.dataset, c.strategy) not in gone:
            cells.append(c)
        elif how == "failed":
            cells.append(cell(c.task, c.dataset, c.strategy, None, status="failed"))
    s = score_model(MODEL, "v", cells, RECT_PLAN)
    assert (s.cells_planned, s.cells_scored, s.coverage) == (8, 5, 5 / 8)
    # A: a1 = .5 (lin only), a2 = (.25+1)/2 = .625 -> A = (.5+.625)/2 = .5625
    # B: b1 gone, b2 = (.125+.625)/2 = .375 -> B = .375
    assert s.dataset_scores == {"A": {"a1": close(0.5), "a2": close(0.625)}, "B": {"b2": close(0.375)}}
    assert s.task_scores == {"A": close(0.5625), "B": close(0.375)}
    # P = (.5625+.375)/2 = .46875 (the plain mean of the 5 scored cells would be 2.5/5 = .5)
    assert s.persistence == close(0.46875)
    # lin: A = (.5+.25)/2 = .375, B = .125 -> .25; full: A = 1 (a2 only), B = .625 -> .8125
    assert s.strategy_scores == {"lin": close(0.25), "full": close(0.8125)}
    # weights: A/a1/lin 1/(2·2·1) = 1/4; A/a2/* 1/(2·2·2) = 1/8; B/b2/* 1/(2·1·2) = 1/4
    assert cell_weights(cells, RECT_PLAN) == {
        ("A", "a1", "lin"): 1 / 4,
        ("A", "a2", "lin"): 1 / 8,
        ("A", "a2", "full"): 1 / 8,
        ("B", "b2", "lin"): 1 / 4,
        ("B", "b2", "full"): 1 / 4,
    }


def test_a_failed_cell_keeps_no_score_even_if_it_has_one() -> None:
    cells = [cell("T", "d", "s1", 0.8), cell("T", "d", "s2", 0.1, status="failed")]
    s = score_model(MODEL, "v", cells, plan_of(cells))
    assert (s.persistence, s.coverage, s.worst_cell) == (0.8, 0.5, ("T", "d", "s1"))


def test_a_whole_failed_task_drops_out_of_the_task_mean() -> None:
    cells = [c if c.task == "B" else cell(c.task, c.dataset, c.strategy, None, status="failed") for c in RECT]
    s = score_model(MODEL, "v", cells, RECT_PLAN)
    # only task B is left: P = task B = (.5 + .375)/2 = .4375
    assert s.persistence == close(0.4375)
    assert list(s.task_scores) == ["B"] and list(s.dataset_scores) == ["B"]
    assert s.coverage == 0.5


def test_all_failed_gives_no_score_and_zero_coverage() -> None:
    cells = [cell(c.task, c.dataset, c.strategy, None, status="failed") for c in RECT]
    s = score_model(MODEL, "v", cells, RECT_PLAN)
    assert (s.persistence, s.stderr, s.spread, s.worst_cell, s.worst_cell_score) == (None,) * 5
    assert (s.coverage, s.cells_planned, s.cells_scored) == (0.0, 8, 0)
    assert (s.task_scores, s.dataset_scores, s.strategy_scores) == ({}, {}, {})
    assert cell_weights(cells, RECT_PLAN) == {}
    assert score_model(MODEL, "v", [], []).coverage == 0.0  # nothing planned


def test_diverged_and_cached_cells_count_with_their_score() -> None:
    cells = [
        cell("T", "d", "s1", 0.9),
        cell("T", "d", "s2", 0.1, status="diverged"),  # chance level after a NaN loss
        cell("T", "d", "s3", 0.5, status="cached"),
    ]
    s = score_model(MODEL, "v", cells, plan_of(cells))
    # (.9 + .1 + .5)/3 = .5
    assert s.persistence == close(0.5)
    assert (s.coverage, s.worst_cell, s.worst_cell_score) == (1.0, ("T", "d", "s2"), 0.1)


def test_stderr_two_cells_three_seeds() -> None:
    cells = [
        cell("T", "d", "s1", 0.8, seeds=(0.7, 0.8, 0.9)),
        cell("T", "d", "s2", 0.7, seeds=(0.5, 0.6, 1.0)),
    ]
    s = score_model(MODEL, "v", cells, plan_of(cells))
    # s1: deviations -.1, 0, .1 -> s² = .02/2 = .01;  s2: -.2, -.1, .3 -> s² = .14/2 = .07
    # w = 1/2 each: Var = (1/4)(.01/3) + (1/4)(.07/3) = .08/12 = 1/150
    assert s.stderr == close(math.sqrt(1 / 150))
    assert s.persistence == close(0.75)


def test_stderr_single_seed_cells_take_the_pooled_variance() -> None:
    cells = [
        cell("A", "a1", "s", 0.8, seeds=(0.7, 0.8, 0.9)),  # s² = .01, n = 3, w = 1/2
        cell("B", "b1", "s", 0.7, seeds=(0.5, 0.6, 1.0)),  # s² = .07, n = 3, w = 1/4
        cell("B", "b2", "s", 0.4, seeds=(0.4,)),  # pooled s² = (.01+.07)/2 = .04, n = 1, w = 1/4
    ]
    s = score_model(MODEL, "v", cells, plan_of(cells))
    # Var = (1/4)(.01/3) + (1/16)(.07/3) + (1/16)(.04/1) = .04/48 + .07/48 + .12/48 = .23/48
    assert s.stderr == close(math.sqrt(0.23 / 48))


def test_stderr_is_none_when_every_cell_has_a_single_seed() -> None:
    cells = [cell("T", "d", "s1", 0.8, seeds=(0.8,)), cell("T", "d", "s2", 0.6, seeds=(0.6,))]
    assert score_model(MODEL, "v", cells, plan_of(cells)).stderr is None


def test_stderr_ignores_failed_cells_replicates() -> None:
    cells = [
        cell("T", "d", "s1", 0.8, seeds=(0.7, 0.8, 0.9)),
        cell("T", "d", "s2", None, seeds=(0.0, 1.0), status="failed"),
        cell("T", "d", "s3", 0.5, seeds=(0.5,)),
    ]
    # scored: s1 (s² = .01, n = 3, w = 1/2), s3 (pooled .01, n = 1, w = 1/2)
    # Var = (1/4)(.01/3) + (1/4)(.01) = .01/12 + .03/12 = .04/12 = 1/300
    assert score_model(MODEL, "v", cells, plan_of(cells)).stderr == close(math.sqrt(1 / 300))


def test_spread_and_worst_cell_ties_follow_the_plan() -> None:
    plan = [("T", "d", "s1"), ("T", "d", "s2"), ("T", "d", "s3"), ("T", "d", "s4")]
    by_id = {("T", "d", "s1"): 0.6, ("T", "d", "s2"): 0.2, ("T", "d", "s3"): 1.0, ("T", "d", "s4"): 0.2}
    # results arrive in another order than planned: the tie must still go to s2 (planned first)
    cells = [cell(*cid, by_id[cid]) for cid in reversed(plan)]
    s = score_model(MODEL, "v", cells, plan)
    assert (s.worst_cell, s.worst_cell_score) == (("T", "d", "s2"), 0.2)
    # mean .5; deviations .1, -.3, .5, -.3 -> squares .01+.09+.25+.09 = .44; /4 = .11
    assert s.spread == close(math.sqrt(0.11))
    one = score_model(MODEL, "v", [cell("T", "d", "s1", 0.3)], [("T", "d", "s1")])
    assert one.spread == 0.0


def test_attribution_on_an_unchanged_grid_is_weight_times_change() -> None:
    moved = {("A", "a1", "lin"): 0.5, ("B", "b1", "full"): 0.8, ("B", "b3", "lin"): 0.36}
    after = [
        cell(c.task, c.dataset, c.strategy, moved.get((c.task, c.dataset, c.strategy), c.score))
        for c in RAGGED
    ]
    # weights (both runs): A cells 1/4, B cells 1/12
    # A/a1/lin:  1/4 · (.5 - .9)   = -.1
    # B/b1/full: 1/12 · (.8 - .2)  = .05
    # B/b3/lin:  1/12 · (.36 - .6) = -.02
    got = attribute_change(RAGGED, after, RAGGED_PLAN, RAGGED_PLAN, top=5)
    assert got == [
        CellContribution("A", "a1", "lin", 0.9, 0.5, close(-0.1)),
        CellContribution("B", "b1", "full", 0.2, 0.8, close(0.05)),
        CellContribution("B", "b3", "lin", 0.6, 0.36, close(-0.02)),
    ]
    # the terms add up to the change of P: A = (.5+.7)/2 = .6; B = ((.4+.8)/2 + .4 + (.36+.4)/2)/3
    # = (.6+.4+.38)/3 = .46; P_after = (.6+.46)/2 = .53; P_before = .6; -.1+.05-.02 = -.07
    p_after = score_model(MODEL, "v", after, RAGGED_PLAN).persistence
    assert p_after == close(0.53)
    assert [
        c.task + c.dataset + c.strategy
        for c in attribute_change(RAGGED, after, RAGGED_PLAN, RAGGED_PLAN, top=2)
    ] == ["Aa1lin", "Bb1full"]
    assert attribute_change(RAGGED, after, RAGGED_PLAN, RAGGED_PLAN, top=0) == []
    with pytest.raises(ValueError, match="top"):
        attribute_change(RAGGED, after, RAGGED_PLAN, RAGGED_PLAN, top=-1)


def test_attribution_when_a_cell_fails_includes_the_reweighting() -> None:
    after = [
        cell("A", "a1", "full", None, status="failed") if c.strategy == "full" and c.dataset == "a1" else c
        for c in RECT
    ]
    # before: every w = 1/8.  after: A/a1/lin 1/(2·2·1) = 1/4, everything else still 1/8
    # A/a1/full: 0 - 1/8 · .75          = -.09375 (after: None)
    # A/a1/lin:  1/4 · .5 - 1/8 · .5     = .0625   (same score, more weight)
    # others: 1/8 · x - 1/8 · x = 0 -> not listed
    got = attribute_change(RECT, after, RECT_PLAN, RECT_PLAN)
    assert got == [
        CellContribution("A", "a1", "full", 0.75, None, close(-0.09375)),
        CellContribution("A", "a1", "lin", 0.5, 0.5, close(0.0625)),
    ]
    # sum -.03125 = P_after - P_before: A = (.5 + .625)/2 = .5625, B = .4375 -> .5; .5 - .53125
    assert score_model(MODEL, "v", after, RECT_PLAN).persistence == close(0.5)


def test_attribution_of_a_newly_planned_dataset() -> None:
    before = [cell("T", "d1", "s", 0.6)]
    after = [cell("T", "d1", "s", 0.6), cell("T", "d2", "s", 0.2)]
    # before: w(d1) = 1; after: w = 1/2 each.  d1: .5·.6 - 1·.6 = -.3; d2: .5·.2 - 0 = .1
    # sum -.2 = P_after (.4) - P_before (.6)
    got = attribute_change(before, after, plan_of(before), plan_of(after))
    assert got == [
        CellContribution("T", "d1", "s", 0.6, 0.6, close(-0.3)),
        CellContribution("T", "d2", "s", None, 0.2, close(0.1)),
    ]


def test_results_must_match_the_plan() -> None:
    plan = [("T", "d", "s1")]
    with pytest.raises(ValueError, match="not planned"):
        score_model(MODEL, "v", [cell("T", "d", "s2", 0.5)], plan)
    with pytest.raises(ValueError, match="more than one result"):
        score_model(MODEL, "v", [cell("T", "d", "s1", 0.5), cell("T", "d", "s1", 0.6)], plan)
    with pytest.raises(ValueError, match="planned more than once"):
        cell_weights([], plan * 2)
    other = CellResult(
        model="other",
        task="T",
        dataset="d",
        snapshot="s",
        strategy="s1",
        status="ok",
        score=0.5,
        seed_scores=(0.5,),
        seconds=1.0,
    )
    with pytest.raises(ValueError, match="other"):
        score_model(MODEL, "v", [other], plan)


# --- properties -------------------------------------------------------------------------------


def _rect_cells(scores: list[list[list[float]]]) -> list[CellResult]:
    return [
        cell(f"t{i}", f"t{i}d{j}", f"s{k}", x)
        for i, task in enumerate(scores)
        for j, dataset in enumerate(task)
        for k, x in enumerate(dataset)
    ]


def _check_rectangular(scores: list[list[list[float]]]) -> None:
    cells = _rect_cells(scores)
    plan = plan_of(cells)
    s = score_model(MODEL, "v", cells, plan)
    flat = [c.score for c in cells if c.score is not None]
    assert s.persistence == pytest.approx(math.fsum(flat) / len(flat), rel=1e-9, abs=1e-12)
    ks = list(s.strategy_scores.values())
    assert s.persistence == pytest.approx(math.fsum(ks) / len(ks), rel=1e-9, abs=1e-12)
    w = cell_weights(cells, plan)
    assert math.fsum(w.values()) == pytest.approx(1.0, rel=1e-12)
    assert math.fsum(w[cid] * x for cid, x in zip(plan, flat, strict=True)) == pytest.approx(
        s.persistence, rel=1e-9, abs=1e-12
    )


def _random_rect(rng: random.Random) -> list[list[list[float]]]:
    n_t, n_d, n_s = rng.randint(1, 4), rng.randint(1, 4), rng.randint(1, 4)
    return [[[rng.random() for _ in range(n_s)] for _ in range(n_d)] for _ in range(n_t)]


@pytest.mark.parametrize("seed", range(25))
def test_property_rectangular_seeded(seed: int) -> None:
    _check_rectangular(_random_rect(random.Random(seed)))


if HAVE_HYPOTHESIS:
    unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)

    @st.composite
    def rect_scores(draw: st.DrawFn) -> list[list[list[float]]]:
        n_t, n_d, n_s = (draw(st.integers(1, 4)) for _ in range(3))
        return [[[draw(unit) for _ in range(n_s)] for _ in range(n_d)] for _ in range(n_t)]

    @st.composite
    def ragged_runs(draw: st.DrawFn) -> tuple[list[CellResult], list[CellResult], list[tuple[str, str, str]]]:
        """Two runs over one ragged plan, with some cells failed in either run."""
        statuses: list[CellStatus] = ["ok", "ok", "cached", "diverged", "failed"]
        status = st.sampled_from(statuses)
        runs: tuple[list[CellResult], list[CellResult]] = ([], [])
        plan: list[tuple[str, str, str]] = []
        for i in range(draw(st.integers(1, 3))):
            for j in range(draw(st.integers(1, 3))):
                for k in range(draw(st.integers(1, 3))):
                    cid = (f"t{i}", f"d{j}", f"s{k}")
                    plan.append(cid)
                    for run in runs:
                        run.append(cell(*cid, draw(unit), status=draw(status)))
        return runs[0], runs[1], plan

    @settings(max_examples=200, deadline=None)
    @given(rect_scores())
    def test_property_rectangular_hypothesis(scores: list[list[list[float]]]) -> None:
        _check_rectangular(scores)

    @settings(max_examples=200, deadline=None)
    @given(ragged_runs())
    def test_property_ragged_weights_and_attribution(
        runs: tuple[list[CellResult], list[CellResult], list[tuple[str, str, str]]],
    ) -> None:
        before, after, plan = runs
        s_before = score_model(MODEL, "v", before, plan)
        s_after = score_model(MODEL, "v", after, plan)
        for cells, s in ((before, s_before), (after, s_after)):
            w = cell_weights(cells, plan)
            if s.persistence is None:
                assert w == {} and s.cells_scored == 0
                continue
            by_id = {(c.task, c.dataset, c.strategy): c.score for c in cells}
            assert math.fsum(w.values()) == pytest.approx(1.0, rel=1e-12)
            assert math.fsum(w[cid] * (by_id[cid] or 0.0) for cid in w) == pytest.approx(
                s.persistence, rel=1e-9, abs=1e-12
            )
            ts = list(s.task_scores.values())
            assert s.persistence == pytest.approx(math.fsum(ts) / len(ts), rel=1e-9, abs=1e-12)
            assert s.worst_cell_score == min(by_id[cid] or 0.0 for cid in w)
        total = math.fsum(c.contribution for c in attribute_change(before, after, plan, plan, top=10**6))
        change = (s_after.persistence or 0.0) - (s_before.persistence or 0.0)
        assert total == pytest.approx(change, rel=1e-9, abs=1e-12)
