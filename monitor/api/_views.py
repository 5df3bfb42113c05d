"""Read models shared by the API, the status page and the offline report."""

from __future__ import annotations

from typing import Any

from ..settings import Settings
from ..store import Store

__all__ = ["alert_documents"]


def alert_documents(store: Store, settings: Settings) -> list[dict[str, Any]]:
    """Alert states of the configured rules and models (a rule never judged yet is `ok`)."""
    states = {(s.model, s.rule): s for s in store.alert_states()}
    out = []
    for model in settings.models:
        for rule in settings.alerts.rules:
            if not rule.applies_to(model.name, model.role):
                continue
            state = states.get((model.name, rule.name))
            out.append(
                {
                    "model": model.name,
                    "alert": rule.name,
                    "state": state.state if state else "ok",
                    "severity": rule.severity,
                    "since": state.since if state else None,
                    "value": state.value if state else None,
                    "baseline": state.baseline if state else None,
                    "summary": state.summary if state else None,
                }
            )
    return out
