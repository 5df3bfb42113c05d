"""Judge every rule of one model: plain inputs in, decisions out (no store, no clock, no I/O).

The pipeline gathers what the rules look at (`RuleNeeds` says what that is, so that every read
is an index range or a key lookup), `judge` decides, and the pipeline writes the new states and
sends the events. A test can therefore judge any history by hand.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from ..settings import AlertRule, CellDropRule, DropRule, EstimateDropRule
from ..types import AlertState, CellResult, ModelRole
from ._conditions import Condition, HistoryPoint, applies, condition
from ._estimates import EstimateSeries, estimate_condition
from ._states import Transition, advance

__all__ = ["Decision", "RuleInputs", "RuleNeeds", "judge"]


@dataclass(frozen=True)
class RuleNeeds:
    """What the rules of a model need to be judged, beyond the run just finished."""

    history: int  # runs before it (oldest first): the longest rolling window, or 1
    first: bool  # the model's first stored run (a `baseline: first` drop rule)
    pinned: tuple[str, ...]  # pinned runs (`baseline: pinned`)
    previous_cells: bool  # the previous run's cells (a `cell_drop` rule)
    estimates: int = 0  # earlier values per estimate (`estimate_drop`: its longest window; 0: none)

    @classmethod
    def of(cls, rules: Sequence[AlertRule], model: str, role: ModelRole = "deployed") -> RuleNeeds:
        mine = [r for r in rules if applies(r, model, role)]
        drops = [r for r in mine if isinstance(r, DropRule)]
        return cls(
            history=max((r.window for r in drops), default=1),
            first=any(r.baseline == "first" for r in drops),
            pinned=tuple(sorted({r.pinned_run for r in drops if r.baseline == "pinned" and r.pinned_run})),
            previous_cells=any(isinstance(r, CellDropRule) for r in mine),
            estimates=max((r.window for r in mine if isinstance(r, EstimateDropRule)), default=0),
        )


@dataclass(frozen=True)
class RuleInputs:
    """Everything the rules of `model` look at after one evaluation."""

    model: str
    current: HistoryPoint | None  # the run just finished; None when judged on the clock (`stale`)
    history: Sequence[HistoryPoint]  # finished runs before it, oldest first (`RuleNeeds.history` + 1)
    states: Mapping[str, AlertState] = field(default_factory=dict)  # rule name -> its stored state
    first: HistoryPoint | None = None  # the first stored run, when it is not the current one
    pinned: Mapping[str, HistoryPoint] = field(default_factory=dict)  # run id -> the model's score there
    current_cells: Sequence[CellResult] = ()
    previous_cells: Sequence[CellResult] = ()  # of history[-1]
    role: ModelRole = "deployed"  # a candidate is judged only by the rules that name it
    # (task, dataset, estimator) -> the estimate's newest value and earlier ones (`estimate_drop`)
    estimates: Mapping[tuple[str, str, str], EstimateSeries] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """One rule judged for one model: the condition found and the state it leads to."""

    rule: AlertRule
    model: str
    condition: Condition
    transition: Transition
    previous: AlertState | None  # the state before (None: the rule had never been judged)

    @property
    def changed(self) -> bool:
        """Whether there is something new to record (an event, or another state name)."""
        return (
            self.transition.event is not None
            or self.previous is None
            or self.previous.state != self.transition.state.state
        )


def judge(
    rules: Sequence[AlertRule],
    inputs: RuleInputs,
    *,
    now: datetime,
    run_id: str | None,
    kinds: frozenset[str] | None = None,
) -> list[Decision]:
    """Every rule (of `kinds`, when given) that applies to the model, judged on `inputs`."""
    decisions = []
    for rule in rules:
        if (kinds is not None and rule.kind not in kinds) or not applies(rule, inputs.model, inputs.role):
            continue
        if isinstance(rule, EstimateDropRule):
            # Judged once per new estimate: a run that only reuses judged values (the grid after
            # a probe run on the same snapshot) leaves the state as it is, so that `for_runs`
            # counts snapshots, not runs.
            if not any(s.new for s in inputs.estimates.values()):
                continue
            found = estimate_condition(rule, inputs.model, inputs.estimates)
            previous = inputs.states.get(rule.name)
            transition = advance(previous, rule, inputs.model, found, now=now, run_id=run_id)
            decisions.append(Decision(rule, inputs.model, found, transition, previous))
            continue
        history: Sequence[HistoryPoint] = inputs.history
        pinned = None
        if isinstance(rule, DropRule):
            if rule.baseline == "first" and inputs.first is not None:
                history = [inputs.first]
            if rule.baseline == "pinned" and rule.pinned_run:
                pinned = inputs.pinned.get(rule.pinned_run)
        found = condition(
            rule,
            inputs.model,
            inputs.current,
            history,
            now=now,
            previous_cells=inputs.previous_cells if isinstance(rule, CellDropRule) and inputs.history else (),
            current_cells=inputs.current_cells,
            pinned=pinned,
        )
        previous = inputs.states.get(rule.name)
        transition = advance(previous, rule, inputs.model, found, now=now, run_id=run_id)
        decisions.append(Decision(rule, inputs.model, found, transition, previous))
    return decisions
