"""The event document a firing or resolved alert sends to every notifier (DESIGN.md §3.6)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ..settings import AlertRule
from ..types import AlertState

__all__ = ["event_document"]


def event_document(
    state: AlertState,
    kind: str,
    rule: AlertRule,
    *,
    now: datetime,
    threshold: float | None,
    run_id: str | None,
    model_version: str | None,
    contributors: Sequence[dict[str, Any]] = (),
    status_url: str | None = None,
    started_at: datetime | None = None,
) -> dict[str, Any]:
    """A self-contained, JSON-serialisable description of one alert transition.

    `contributors` are the cells that moved P(M) the most: dicts with task, dataset, strategy,
    snapshot, before, after and contribution (the weighted change, see `scoring.attribute_change`).
    """
    verb = "firing" if kind == "firing" else "resolved"
    return {
        "id": uuid.uuid4().hex,
        "kind": kind,
        "model": state.model,
        "alert": state.rule,
        "rule_kind": rule.kind,
        "severity": state.severity,
        "value": state.value,
        "baseline": state.baseline,
        "threshold": threshold,
        "summary": state.summary or f"{state.rule} {verb} for {state.model}",
        "description": _description(state, kind, contributors),
        "run_id": run_id,
        "model_version": model_version,
        "episode": state.episode,
        "started_at": (started_at or state.since).isoformat(),
        "at": now.isoformat(),
        "ends_at": now.isoformat() if kind == "resolved" else None,
        "contributors": [dict(c) for c in contributors],
        "status_url": status_url,
    }


def _description(state: AlertState, kind: str, contributors: Sequence[dict[str, Any]]) -> str:
    lines = [state.summary or ""]
    if kind == "resolved":
        lines.insert(0, f"Resolved: {state.rule} for {state.model} is clear again.")
    if contributors:
        lines.append("Cells that moved P(M) the most (weighted contribution to the change):")
        for c in contributors:
            before = "n/a" if c.get("before") is None else f"{c['before']:.3f}"
            after = "n/a" if c.get("after") is None else f"{c['after']:.3f}"
            where = f"{c['task']}/{c['dataset']}/{c['strategy']}"
            snapshot = f" (snapshot {c['snapshot']})" if c.get("snapshot") else ""
            lines.append(f"  {where}{snapshot}: {before} -> {after} ({c['contribution']:+.4f})")
    return "\n".join(line for line in lines if line)
