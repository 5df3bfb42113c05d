"""Alert states per (model, rule), written together with the notifications they produce.

After every run the alert rules compute each model's new states and the events to notify; both
go through `write_alerts`, inside the transaction of `finish_run` (its `extra` hook hands over the
session), so that a run result, its alert states and its outbox rows commit together or not at
all (the transactional outbox, see `_outbox`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, delete, select, tuple_
from sqlalchemy.orm import Session

from .._checks import duplicates
from ._checks import check_aware, check_hex_id, check_json, check_name, check_optional_finite
from ._outbox import outbox_rows
from ._records import ALERT_STATE_NAMES, SEVERITIES, AlertState, AlertStateName
from ._schema import AlertStateRow, OutboxRow, utcnow
from ._sessions import Sessions
from ._trials import chunks

__all__ = ["AlertLog"]

_MODEL_LENGTH = 128  # alert_states.model is String(128)
_RULE_LENGTH = 64  # alert_states.rule is String(64), as rule names are


def state_values(state: AlertState, *, updated_at: datetime) -> dict[str, Any]:
    """Column values of an `alert_states` row; `updated_at` replaces whatever the record holds."""
    model = check_name(state.model, "the model of an alert state", _MODEL_LENGTH)
    rule = check_name(state.rule, f"the rule of an alert state of {model}", _RULE_LENGTH)
    what = f"alert state {model}/{rule}"
    if state.state not in ALERT_STATE_NAMES:
        raise ValueError(f"{what}: state must be one of {', '.join(ALERT_STATE_NAMES)}, got {state.state!r}")
    if state.severity not in SEVERITIES:
        raise ValueError(f"{what}: severity must be one of {', '.join(SEVERITIES)}, got {state.severity!r}")
    consecutive = state.consecutive
    if not isinstance(consecutive, int) or isinstance(consecutive, bool) or consecutive < 0:
        raise ValueError(f"{what}: consecutive must be a count of runs (an int >= 0), got {consecutive!r}")
    if state.summary is not None and not isinstance(state.summary, str):
        raise ValueError(f"{what}: summary must be text or None, got {type(state.summary).__name__}")
    return {
        "model": model,
        "rule": rule,
        "state": state.state,
        "severity": state.severity,
        "since": check_aware(state.since, f"{what}: since"),
        "consecutive": consecutive,
        "value": check_optional_finite(state.value, f"{what}: value"),
        "baseline": check_optional_finite(state.baseline, f"{what}: baseline"),
        "summary": state.summary,
        "details": check_json(state.details, f"{what}: details"),
        "episode": None if state.episode is None else check_hex_id(state.episode, f"{what}: episode"),
        "last_run_id": (
            None if state.last_run_id is None else check_hex_id(state.last_run_id, f"{what}: last_run_id")
        ),
        "updated_at": updated_at,
    }


def alert_state(row: AlertStateRow) -> AlertState:
    """The `AlertState` of an `alert_states` row."""
    return AlertState(
        model=row.model,
        rule=row.rule,
        state=cast(AlertStateName, row.state),
        severity=row.severity,
        since=row.since,
        consecutive=row.consecutive,
        value=row.value,
        baseline=row.baseline,
        summary=row.summary,
        details=dict(row.details),
        episode=row.episode,
        last_run_id=row.last_run_id,
        updated_at=row.updated_at,
    )


class AlertLog(Sessions):
    """Alert states by (model, rule), and the writing of states with their notifications."""

    def alert_states(self, *, model: str | None = None) -> list[AlertState]:
        """Every stored alert state (or the model's), ordered by model, then rule."""
        model_order: ColumnElement[str] = AlertStateRow.model.expression
        rule_order: ColumnElement[str] = AlertStateRow.rule.expression
        if self._engine.dialect.name == "postgresql":
            # By code point on both databases, as Python sorts (see `last_good_snapshot`).
            model_order, rule_order = AlertStateRow.model.collate("C"), AlertStateRow.rule.collate("C")
        query = select(AlertStateRow).order_by(model_order, rule_order)
        if model is not None:
            query = query.where(AlertStateRow.model == model)
        with self._reading("read the alert states") as session:
            return [alert_state(row) for row in session.scalars(query)]

    def write_alerts(
        self,
        states: Sequence[AlertState],
        deliveries: Sequence[tuple[str, str, Mapping[str, Any]]],
        *,
        session: Session | None = None,
    ) -> None:
        """Upsert `states` by (model, rule) and enqueue `deliveries`, in one transaction.

        A delivery is `(id, notifier, event)`: the delivery id (32 lowercase hex digits, stable
        across retries), the notifier's name and the event document (plain JSON). It is enqueued
        pending, due now, with no attempt yet; an id already in the outbox is left as it is (the
        same notification is enqueued once). With `session` (the one `finish_run` hands to its
        `extra` hook) the rows are written in that transaction, which the caller commits; without
        it, in a write transaction of their own. Bad input is a ValueError before anything is
        written; each state's `updated_at` is set to now.
        """
        now = utcnow()
        state_rows = [state_values(state, updated_at=now) for state in states]
        repeated = duplicates((row["model"], row["rule"]) for row in state_rows)
        if repeated:
            raise ValueError(f"alert state {'/'.join(repeated[0])} appears twice in one write")
        item_rows = outbox_rows(deliveries, now)
        if session is not None:
            self._write_alerts(session, state_rows, item_rows)
            return
        with self._writing(f"write {len(state_rows)} alert states and {len(item_rows)} notifications") as own:
            self._write_alerts(own, state_rows, item_rows)

    def _write_alerts(
        self, session: Session, state_rows: list[dict[str, Any]], item_rows: list[dict[str, Any]]
    ) -> None:
        if state_rows:
            upsert = self._insert(AlertStateRow)
            keys = ("model", "rule")
            upsert = upsert.on_conflict_do_update(
                index_elements=list(keys),
                set_={name: upsert.excluded[name] for name in state_rows[0] if name not in keys},
            )
            session.execute(upsert, state_rows)
        if item_rows:
            enqueue = self._insert(OutboxRow).on_conflict_do_nothing(index_elements=["id"])
            session.execute(enqueue, item_rows)

    def delete_alert_states(self, keep: Collection[tuple[str, str]]) -> int:
        """Delete the state of every (model, rule) not in `keep`; return how many were deleted.

        For rules and models no longer configured: `keep` is every pair the configuration has.
        """
        kept = {(model, rule) for model, rule in keep}
        with self._writing("delete alert states no longer configured") as session:
            stored = session.execute(select(AlertStateRow.model, AlertStateRow.rule))
            gone = [(model, rule) for model, rule in stored if (model, rule) not in kept]
            deleted = 0
            for chunk in chunks(gone):
                statement = (
                    delete(AlertStateRow)
                    .where(tuple_(AlertStateRow.model, AlertStateRow.rule).in_(chunk))
                    .execution_options(synchronize_session=False)
                )
                deleted += cast(CursorResult[Any], session.execute(statement)).rowcount
            return deleted
