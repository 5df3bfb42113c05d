"""After a run: judge every alert rule for every model, and prepare what to store and to send.

The states and the notifications (one outbox item per event and notifier) are written in the
transaction that stores the run (see `run_evaluation`), so a result is never stored without its
alerts, nor an alert without its result. Delivery happens afterwards (`monitor.notifiers`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..alerts import HistoryPoint, advance, applies, condition, event_document
from ..scoring import attribute_change
from ..settings import Settings
from ..store import RunRecord, Store
from ..types import AlertState, CellResult, ModelScore

__all__ = ["AlertWrites", "evaluate_alerts", "evaluate_time_rules"]

_SEVERITY = {"info": 0, "warning": 1, "critical": 2}


@dataclass
class AlertWrites:
    states: list[AlertState] = field(default_factory=list)
    deliveries: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # (id, notifier, event)
    events: list[dict[str, Any]] = field(default_factory=list)

    def write(self, store: Store, session: Any = None) -> None:
        if self.states or self.deliveries:
            store.write_alerts(self.states, self.deliveries, session=session)


def _point(found: tuple[RunRecord, ModelScore]) -> HistoryPoint:
    run, score = found
    return HistoryPoint(run.id, run.finished_at or run.started_at, score)


def _deliveries(settings: Settings, event: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (uuid.uuid4().hex, notifier.name, event)
        for notifier in settings.alerts.notifiers
        if _SEVERITY[event["severity"]] >= _SEVERITY[notifier.min_severity]
    ]


def evaluate_alerts(
    settings: Settings,
    store: Store,
    run_id: str,
    scores: Sequence[ModelScore],
    cells: Sequence[CellResult],
    *,
    now: datetime,
) -> AlertWrites:
    """Every rule for every model after run `run_id` (not stored yet: it is the current run)."""
    writes = AlertWrites()
    rules = settings.alerts.rules
    if not rules:
        return writes
    existing = {(s.model, s.rule): s for s in store.alert_states()}
    longest = max((getattr(r, "window", 1) for r in rules), default=1)
    for score in scores:
        model = score.model
        # Every read below is an index range or a key lookup: what the rules look at, never the
        # whole history (a year of runs costs what a week does).
        history = [
            _point(found) for found in store.score_history(model, limit=longest + 1) if found[0].id != run_id
        ]
        model_cells = [c for c in cells if c.model == model]
        current = (
            HistoryPoint(run_id, now, score) if score.persistence is not None or score.cells_planned else None
        )
        cells_of: dict[str, list[CellResult]] = {}

        def run_cells(
            other: str | None, model: str = model, cells_of: dict[str, list[CellResult]] = cells_of
        ) -> list[CellResult]:
            if other is None:
                return []
            if other not in cells_of:
                cells_of[other] = store.run_cells(other, model=model)
            return cells_of[other]

        first: list[HistoryPoint] | None = None
        for rule in rules:
            if not applies(rule, model):
                continue
            rule_history = history
            if getattr(rule, "baseline", None) == "first":
                if first is None:
                    found_first = store.first_score(model)
                    first = [_point(found_first)] if found_first and found_first[0].id != run_id else []
                rule_history = first or history
            pinned = None
            pinned_id = getattr(rule, "pinned_run", None)
            if getattr(rule, "baseline", None) == "pinned" and pinned_id:
                found_pinned = store.run_score(pinned_id, model)
                pinned = _point(found_pinned) if found_pinned is not None else None
            found = condition(
                rule,
                model,
                current,
                rule_history,
                now=now,
                previous_cells=run_cells(history[-1].run_id) if rule.kind == "cell_drop" and history else [],
                current_cells=model_cells,
                pinned=pinned,
            )
            transition = advance(existing.get((model, rule.name)), rule, model, found, now=now, run_id=run_id)
            writes.states.append(transition.state)
            if transition.event is None:
                continue
            contributors = _contributors(run_cells(found.baseline_run), model_cells)
            event = event_document(
                transition.state,
                transition.event,
                rule,
                now=now,
                threshold=found.threshold,
                run_id=run_id,
                model_version=score.version,
                contributors=contributors,
                status_url=settings.alerts.status_url,
                started_at=existing[(model, rule.name)].since
                if transition.event == "resolved" and (model, rule.name) in existing
                else None,
            )
            writes.events.append(event)
            writes.deliveries.extend(_deliveries(settings, event))
    return writes


def evaluate_time_rules(settings: Settings, store: Store, *, now: datetime) -> AlertWrites:
    """Rules that can change without a run (`stale`), judged on the clock: the daemon's job."""
    writes = AlertWrites()
    stale = [r for r in settings.alerts.rules if r.kind == "stale"]
    if not stale:
        return writes
    existing = {(s.model, s.rule): s for s in store.alert_states()}
    latest = store.latest_scores(m.name for m in settings.models)
    for model in settings.models:
        run = latest.get(model.name)
        history = [HistoryPoint(run[0].id, run[0].finished_at or run[0].started_at, run[1])] if run else []
        for rule in stale:
            if not applies(rule, model.name):
                continue
            found = condition(rule, model.name, None, history, now=now)
            transition = advance(
                existing.get((model.name, rule.name)), rule, model.name, found, now=now, run_id=None
            )
            previous = existing.get((model.name, rule.name))
            if transition.event is None and previous is not None and previous.state == transition.state.state:
                continue  # nothing new to record: no write every minute for a steady state
            writes.states.append(transition.state)
            if transition.event is not None:
                event = event_document(
                    transition.state,
                    transition.event,
                    rule,
                    now=now,
                    threshold=found.threshold,
                    run_id=None,
                    model_version=run[1].version if run else None,
                    status_url=settings.alerts.status_url,
                )
                writes.events.append(event)
                writes.deliveries.extend(_deliveries(settings, event))
    return writes


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
