"""Alert states with hysteresis in runs: ok -> pending -> firing -> resolved -> ok.

    condition holds:  ok/resolved -> pending (or firing when for_runs = 1);
                      pending -> firing after `for_runs` consecutive runs;
                      firing stays firing (its clear count restarts).
    condition clear:  pending -> ok;  firing -> resolved after `resolve_runs` consecutive clear runs;
                      resolved -> ok;  ok stays ok.
    not judged:       the state stays as it was.

Only two transitions notify anyone: into `firing` and into `resolved`. An input that flips
around a threshold therefore pages once (it needs `resolve_runs` clear runs in a row to resolve),
or never (with `for_runs` > 1, it never holds long enough).
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime
from typing import Any, Literal

from ..settings import AlertRule
from ..types import AlertState
from ._conditions import Condition

__all__ = ["Transition", "advance"]

EventKind = Literal["firing", "resolved"]


class Transition:
    """The new state of one alert, and the event to notify (if any)."""

    __slots__ = ("event", "state")

    def __init__(self, state: AlertState, event: EventKind | None) -> None:
        self.state = state
        self.event = event


def advance(
    previous: AlertState | None,
    rule: AlertRule,
    model: str,
    condition: Condition,
    *,
    now: datetime,
    run_id: str | None,
) -> Transition:
    """The next state of `rule` for `model` after one evaluation with `condition`."""
    state = previous or AlertState(
        model=model, rule=rule.name, state="ok", severity=rule.severity, since=now, consecutive=0
    )
    observed: dict[str, Any] = {
        "severity": rule.severity,
        "value": condition.value,
        "baseline": condition.baseline,
        "summary": condition.summary or state.summary,
        "details": {**condition.details, "threshold": condition.threshold}
        if condition.active is not None
        else state.details,
        "last_run_id": run_id or state.last_run_id,
    }
    if condition.active is None:
        return Transition(
            replace(state, **{k: v for k, v in observed.items() if k in ("last_run_id", "severity")}), None
        )
    current = state.state
    if condition.active:
        if current in ("ok", "resolved"):
            if rule.for_runs <= 1:
                return Transition(
                    replace(
                        state, state="firing", since=now, consecutive=0, episode=uuid.uuid4().hex, **observed
                    ),
                    "firing",
                )
            return Transition(replace(state, state="pending", since=now, consecutive=1, **observed), None)
        if current == "pending":
            held = state.consecutive + 1
            if held >= rule.for_runs:
                return Transition(
                    replace(
                        state, state="firing", since=now, consecutive=0, episode=uuid.uuid4().hex, **observed
                    ),
                    "firing",
                )
            return Transition(replace(state, consecutive=held, **observed), None)
        return Transition(replace(state, consecutive=0, **observed), None)  # firing: still firing
    if current == "firing":
        clear = state.consecutive + 1
        if clear >= rule.resolve_runs:
            return Transition(
                replace(state, state="resolved", since=now, consecutive=0, **observed), "resolved"
            )
        return Transition(replace(state, consecutive=clear, **observed), None)
    if current in ("pending", "resolved"):
        return Transition(replace(state, state="ok", since=now, consecutive=0, **observed), None)
    return Transition(replace(state, **observed), None)
