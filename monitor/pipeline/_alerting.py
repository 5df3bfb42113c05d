"""After a run: judge every alert rule for every model, and prepare what to store and to send.

The states and the notifications (one outbox item per event and notifier) are written in the
transaction that stores the run (see `run_evaluation`), so a result is never stored without its
alerts, nor an alert without its result. Delivery happens afterwards (`monitor.notifiers`).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..alerts import (
    Decision,
    EstimateSeries,
    HistoryPoint,
    RuleInputs,
    RuleNeeds,
    applies,
    event_document,
    judge,
)
from ..scoring import attribute_change
from ..settings import AlertRule, Settings
from ..store import RunRecord, Store
from ..types import AlertState, CellResult, EstimateResult, ModelRole, ModelScore, severity_rank

__all__ = ["AlertWrites", "evaluate_alerts", "evaluate_time_rules"]


@dataclass
class AlertWrites:
    states: list[AlertState] = field(default_factory=list)
    deliveries: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # (id, notifier, event)
    events: list[dict[str, Any]] = field(default_factory=list)

    def write(self, store: Store, session: Any = None) -> None:
        if self.states or self.deliveries:
            store.write_alerts(self.states, self.deliveries, session=session)


def evaluate_alerts(
    settings: Settings,
    store: Store,
    run_id: str,
    scores: Sequence[ModelScore],
    cells: Sequence[CellResult],
    *,
    now: datetime,
    estimates: Sequence[EstimateResult] = (),
    probes: bool = False,
) -> AlertWrites:
    """Every rule for every model it applies to after run `run_id` (not stored yet: it is the
    current run). A candidate model is judged only by the rules that name it.

    After a probe run (`probes`: cheap cells and estimates only, no P(M)) only `estimate_drop`
    rules are judged; the others wait for the next full grid."""
    writes = AlertWrites()
    rules = settings.alerts.rules
    if not rules:
        return writes
    states = _states_by_model(store)
    roles = {m.name: m.role for m in settings.models}
    for score in scores:
        cells_of = _CellReader(store, score.model)
        role = roles.get(score.model, "deployed")
        if not any(applies(r, score.model, role) for r in rules):
            continue  # (a candidate no rule names: nothing to read)
        inputs = _run_inputs(
            store, rules, run_id, score, cells, states.get(score.model, {}), cells_of, now, role
        )
        limit = RuleNeeds.of(rules, score.model, role).estimates
        if limit:
            mine = [e for e in estimates if e.model == score.model]
            inputs = dataclasses.replace(inputs, estimates=_estimate_series(store, run_id, mine, limit))
        kinds = frozenset({"estimate_drop"}) if probes else None
        for decision in judge(rules, inputs, now=now, run_id=run_id, kinds=kinds):
            _record(writes, settings, decision, run_id, score.version, now, cells_of, inputs.current_cells)
    return writes


def evaluate_time_rules(settings: Settings, store: Store, *, now: datetime) -> AlertWrites:
    """Rules that can change without a run (`stale`), judged on the clock: the daemon's job."""
    writes = AlertWrites()
    stale = [r for r in settings.alerts.rules if r.kind == "stale"]
    if not stale:
        return writes
    states = _states_by_model(store)
    latest = store.latest_scores(m.name for m in settings.models)
    for model in settings.models:
        run = latest.get(model.name)
        inputs = RuleInputs(
            model=model.name,
            current=None,
            history=[_point(run)] if run else [],
            states=states.get(model.name, {}),
            role=model.role,
        )
        for decision in judge(stale, inputs, now=now, run_id=None):
            if decision.changed:  # nothing new to record: no write every minute for a steady state
                _record(writes, settings, decision, None, run[1].version if run else None, now)
    return writes


def _states_by_model(store: Store) -> dict[str, dict[str, AlertState]]:
    by_model: dict[str, dict[str, AlertState]] = {}
    for state in store.alert_states():
        by_model.setdefault(state.model, {})[state.rule] = state
    return by_model


def _point(found: tuple[RunRecord, ModelScore]) -> HistoryPoint:
    run, score = found
    return HistoryPoint(run.id, run.finished_at or run.started_at, score)


class _CellReader:
    """The cells of one model in other runs, each run read once (and only if a rule needs it)."""

    def __init__(self, store: Store, model: str) -> None:
        self._store, self._model = store, model
        self._cells: dict[str, list[CellResult]] = {}

    def __call__(self, run_id: str | None) -> list[CellResult]:
        if run_id is None:
            return []
        if run_id not in self._cells:
            self._cells[run_id] = self._store.run_cells(run_id, model=self._model)
        return self._cells[run_id]


def _run_inputs(
    store: Store,
    rules: Sequence[AlertRule],
    run_id: str,
    score: ModelScore,
    cells: Sequence[CellResult],
    states: dict[str, AlertState],
    cells_of: _CellReader,
    now: datetime,
    role: ModelRole,
) -> RuleInputs:
    """What the model's rules look at, read by index ranges and key lookups only: a year of
    history costs what a week does."""
    model = score.model
    needs = RuleNeeds.of(rules, model, role)
    history = [
        _point(found)
        for found in store.score_history(model, limit=needs.history + 1)
        if found[0].id != run_id
    ]
    first = None
    if needs.first:
        found = store.first_score(model)
        first = _point(found) if found is not None and found[0].id != run_id else None
    pinned = {}
    for pinned_id in needs.pinned:
        found = store.run_score(pinned_id, model)
        if found is not None:
            pinned[pinned_id] = _point(found)
    scored = score.persistence is not None or score.cells_planned
    return RuleInputs(
        model=model,
        current=HistoryPoint(run_id, now, score) if scored else None,
        history=history,
        states=states,
        first=first,
        pinned=pinned,
        current_cells=[c for c in cells if c.model == model],
        previous_cells=cells_of(history[-1].run_id) if needs.previous_cells and history else [],
        role=role,
    )


def _estimate_series(
    store: Store, run_id: str, estimates: Sequence[EstimateResult], window: int
) -> dict[tuple[str, str, str], EstimateSeries]:
    """Each estimate of this run with its values on earlier inputs (one per distinct key, newest
    first), read as one short index range per estimate."""
    series = {}
    for e in estimates:
        # A key repeats when a later run reuses the value (the grid after a probe run): read
        # enough rows for `window` distinct keys even if every key came twice.
        earlier: list[tuple[float, float | None]] = []
        seen = {e.key}
        newest_key = None
        for point in store.estimate_history(e.model, e.task, e.dataset, e.estimator, limit=2 * window + 2):
            if point.run_id == run_id:
                continue
            newest_key = newest_key or point.key
            if point.key in seen or point.value is None:
                continue
            seen.add(point.key)
            earlier.append((point.value, point.stderr))
            if len(earlier) == window:
                break
        series[(e.task, e.dataset, e.estimator)] = EstimateSeries(
            task=e.task,
            dataset=e.dataset,
            estimator=e.estimator,
            snapshot=e.snapshot,
            value=e.value,
            stderr=e.stderr,
            earlier=earlier,
            new=e.value is not None and e.key != newest_key,
        )
    return series


def _record(
    writes: AlertWrites,
    settings: Settings,
    decision: Decision,
    run_id: str | None,
    model_version: str | None,
    now: datetime,
    cells_of: Callable[[str | None], list[CellResult]] | None = None,
    current_cells: Sequence[CellResult] = (),
) -> None:
    """Add the decision's new state, and its event with one delivery per notifier that wants it."""
    transition, previous = decision.transition, decision.previous
    writes.states.append(transition.state)
    if transition.event is None:
        return
    before = cells_of(decision.condition.baseline_run) if cells_of is not None else []
    event = event_document(
        transition.state,
        transition.event,
        decision.rule,
        now=now,
        threshold=decision.condition.threshold,
        run_id=run_id,
        model_version=model_version,
        contributors=_contributors(before, list(current_cells)),
        status_url=settings.alerts.status_url,
        started_at=previous.since if transition.event == "resolved" and previous is not None else None,
    )
    writes.events.append(event)
    rank = severity_rank(str(event["severity"]))
    writes.deliveries.extend(
        (uuid.uuid4().hex, notifier.name, event)
        for notifier in settings.alerts.notifiers
        if rank >= severity_rank(notifier.min_severity)
    )


def _contributors(before: list[CellResult], after: list[CellResult], top: int = 5) -> list[dict[str, Any]]:
    """The cells that moved P(M) the most between the baseline run and this one."""
    if not before or not after:
        return []
    changes = attribute_change(
        before,
        after,
        [(c.task, c.dataset, c.strategy) for c in before],
        [(c.task, c.dataset, c.strategy) for c in after],
        top=top,
    )
    snapshot = {(c.task, c.dataset): c.snapshot for c in after}
    return [
        {
            "task": c.task,
            "dataset": c.dataset,
            "strategy": c.strategy,
            "snapshot": snapshot.get((c.task, c.dataset)),
            "before": c.before,
            "after": c.after,
            "contribution": c.contribution,
        }
        for c in changes
    ]
