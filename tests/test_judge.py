"""`alerts.judge`: every rule of a model decided on plain inputs, checked by hand (no store)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from monitor.alerts import HistoryPoint, RuleInputs, RuleNeeds, judge
from monitor.settings import AlertsSettings
from monitor.types import SEVERITIES, AlertState, CellResult, ModelScore, severity_rank

NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)


def rules(*specs: dict) -> list:
    return AlertsSettings(rules=list(specs), notifiers=[]).rules


def point(i: int, p: float, se: float = 0.001) -> HistoryPoint:
    score = ModelScore("m", "v1", p, se, 0.1, None, None, 1.0, 4, 4)
    return HistoryPoint(f"{i:032x}", NOW - timedelta(hours=6 * (10 - i)), score)


def cell(strategy: str, score: float) -> CellResult:
    return CellResult("m", "t", "d", "s1", strategy, "ok", score, (score,), 1.0)


def test_needs_say_what_to_read_for_the_rules_of_one_model() -> None:
    these = rules(
        {"name": "Roll", "kind": "drop", "baseline": "rolling_median", "window": 5},
        {"name": "First", "kind": "drop", "baseline": "first"},
        {"name": "Pin", "kind": "drop", "baseline": "pinned", "pinned_run": "ab" * 16, "models": ["m"]},
        {"name": "Cells", "kind": "cell_drop", "models": ["other"]},
        {"name": "Stale", "kind": "stale"},
    )
    assert RuleNeeds.of(these, "m") == RuleNeeds(
        history=7, first=True, pinned=("ab" * 16,), previous_cells=False
    )
    # "other": the pinned rule is not its own, the cell rule is; the default window of 7 counts
    assert RuleNeeds.of(these, "other") == RuleNeeds(history=7, first=True, pinned=(), previous_cells=True)
    assert RuleNeeds.of(rules({"name": "S", "kind": "stale"}), "m") == RuleNeeds(1, False, (), False)


def test_judge_uses_the_baseline_each_rule_names() -> None:
    these = rules(
        {"name": "Prev", "kind": "drop", "baseline": "previous", "min_drop": 0.03, "z": 0},
        {"name": "First", "kind": "drop", "baseline": "first", "min_drop": 0.03, "z": 0},
        {
            "name": "Pin",
            "kind": "drop",
            "baseline": "pinned",
            "pinned_run": f"{1:032x}",
            "min_drop": 0.03,
            "z": 0,
        },
    )
    inputs = RuleInputs(
        model="m",
        current=point(9, 0.80),
        history=[point(7, 0.90), point(8, 0.82)],  # previous: 0.82, a drop of 0.02
        first=point(1, 0.95),  # first: 0.95, a drop of 0.15
        pinned={f"{1:032x}": point(1, 0.81)},  # pinned: 0.81, a drop of 0.01
    )
    decisions = {d.rule.name: d for d in judge(these, inputs, now=NOW, run_id=f"{9:032x}")}
    assert {n: d.condition.baseline for n, d in decisions.items()} == {
        "Prev": 0.82,
        "First": 0.95,
        "Pin": 0.81,
    }
    assert {n: d.transition.state.state for n, d in decisions.items()} == {
        "Prev": "ok",
        "First": "firing",
        "Pin": "ok",
    }
    assert decisions["First"].transition.event == "firing" and decisions["First"].changed
    # no first run stored (or it is the current one): the history is the baseline's window
    without_first = judge(these[1:2], RuleInputs("m", point(9, 0.80), [point(8, 0.82)]), now=NOW, run_id=None)
    assert without_first[0].condition.baseline == 0.82
    # a pinned run that is gone: not judged, the state stays as it was
    gone = judge(these[2:], RuleInputs("m", point(9, 0.80), [point(8, 0.82)]), now=NOW, run_id=None)
    assert gone[0].condition.active is None and gone[0].transition.state.state == "ok"


def test_cell_drop_compares_with_the_previous_runs_cells() -> None:
    these = rules({"name": "Cells", "kind": "cell_drop", "min_drop": 0.1})
    inputs = RuleInputs(
        model="m",
        current=point(9, 0.7),
        history=[point(8, 0.8)],
        current_cells=[cell("a", 0.5), cell("b", 0.79)],
        previous_cells=[cell("a", 0.8), cell("b", 0.8)],
    )
    (decision,) = judge(these, inputs, now=NOW, run_id=None)
    assert decision.condition.active is True and decision.condition.value == 0.8 - 0.5
    assert [c["strategy"] for c in decision.condition.details["cells"]] == ["a"]
    # without a previous run there is nothing to compare with
    (alone,) = judge(
        these, RuleInputs("m", point(9, 0.7), [], current_cells=inputs.current_cells), now=NOW, run_id=None
    )
    assert alone.condition.active is None


def test_rules_for_other_models_and_other_kinds_are_left_out() -> None:
    these = rules(
        {"name": "Below", "kind": "below", "threshold": 0.9, "models": ["other"]},
        {"name": "Low", "kind": "below", "threshold": 0.9},
        {"name": "Stale", "kind": "stale", "max_age": 3600},
    )
    inputs = RuleInputs("m", None, [point(1, 0.95)])  # judged on the clock: 54 h since run 1
    assert [d.rule.name for d in judge(these, inputs, now=NOW, run_id=None)] == ["Low", "Stale"]
    (stale,) = judge(these, inputs, now=NOW, run_id=None, kinds=frozenset({"stale"}))
    assert stale.condition.active is True and stale.transition.event == "firing"


def test_a_candidate_is_judged_only_by_the_rules_that_name_it() -> None:
    these = rules(
        {"name": "Low", "kind": "below", "threshold": 0.9},  # no `models`: deployed models only
        {"name": "Named", "kind": "below", "threshold": 0.9, "models": ["m"]},
        {"name": "Cells", "kind": "cell_drop"},
        {"name": "Stale", "kind": "stale", "max_age": 3600},
    )
    deployed = RuleInputs("m", point(9, 0.8), [point(8, 0.85)])
    assert [d.rule.name for d in judge(these, deployed, now=NOW, run_id=None)] == [
        "Low",
        "Named",
        "Cells",
        "Stale",
    ]
    candidate = RuleInputs("m", point(9, 0.8), [point(8, 0.85)], role="candidate")
    (named,) = judge(these, candidate, now=NOW, run_id=None)
    assert named.rule.name == "Named" and named.transition.event == "firing"
    assert RuleNeeds.of(these, "m") == RuleNeeds(1, False, (), True)
    assert RuleNeeds.of(these, "m", "candidate") == RuleNeeds(1, False, (), False)  # no cell rule of its own
    assert RuleNeeds.of(these, "other", "candidate") == RuleNeeds(1, False, (), False)
    # the setting itself says the same
    low, named_rule = these[0], these[1]
    assert low.applies_to("m") and not low.applies_to("m", "candidate")
    assert named_rule.applies_to("m", "candidate") and not named_rule.applies_to("other")


def test_a_steady_state_is_not_a_change() -> None:
    these = rules({"name": "Stale", "kind": "stale", "max_age": 3600})
    firing = AlertState("m", "Stale", "firing", "warning", NOW - timedelta(hours=1), 0)
    (again,) = judge(
        these, RuleInputs("m", None, [point(1, 0.9)], states={"Stale": firing}), now=NOW, run_id=None
    )
    assert again.transition.state.state == "firing" and again.transition.event is None
    assert not again.changed and again.previous is firing


def test_the_severity_ladder_fails_open() -> None:
    assert SEVERITIES == ("info", "warning", "critical")
    assert [severity_rank(s) for s in SEVERITIES] == [0, 1, 2]
    assert severity_rank("page-everyone") > severity_rank("critical")  # unknown: reaches every notifier
