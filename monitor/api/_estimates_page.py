"""The transferability section of a model's card (status page and report): the latest
`early_warning` estimates, each with its history over snapshots as an inline SVG line.

Reads are flat in history: one query for the model's latest estimates, one short index range
(the last 30 values) per estimate shown.
"""

from __future__ import annotations

from html import escape

from ..settings import Settings
from ..store import Store

__all__ = ["estimates_section"]

_HISTORY = 30


def _line(values: list[float], width: int = 160, height: int = 28) -> str:
    if len(values) < 2:
        return '<span class="muted">–</span>'
    low, high = min(values), max(values)
    span = (high - low) or 1e-9
    step = width / (len(values) - 1)
    points = " ".join(
        f"{i * step:.1f},{height - 2 - (v - low) / span * (height - 4):.1f}" for i, v in enumerate(values)
    )
    return (
        f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="the estimate over its last {len(values)} values">'
        f'<polyline fill="none" stroke="#7c3aed" stroke-width="1.5" points="{points}"/></svg>'
    )


def estimates_section(store: Store, settings: Settings, model: str) -> str:
    """The model's latest estimates as a table with their histories ('' when none are configured)."""
    estimators = settings.early_warning.estimators
    if not estimators:
        return ""
    latest = store.latest_estimates([model]).get(model, [])
    if not latest:
        return "<div class='muted'>transferability estimates: none yet</div>"
    rows = []
    for e in latest:
        if e.estimator not in estimators:
            continue
        history = store.estimate_history(model, e.task, e.dataset, e.estimator, limit=_HISTORY)
        values: list[float] = []
        seen: set[str] = set()
        for point in reversed(history):  # oldest first; one value per distinct key
            if point.value is not None and point.key not in seen:
                seen.add(point.key)
                values.append(point.value)
        value = "–" if e.value is None else f"{e.value:.4f}"
        stderr = f" ± {e.stderr:.4f}" if e.stderr is not None else ""
        rows.append(
            f"<tr><td class='l'>{escape(e.task)}</td><td class='l'>{escape(e.dataset)}</td>"
            f"<td class='l'>{escape(e.estimator)}</td><td>{value}{stderr}</td>"
            f"<td class='l'>{escape(e.snapshot)}</td><td>{_line(values)}</td></tr>"
        )
    return (
        "<div class='muted' style='margin-top:.6rem'>transferability estimates on the frozen features "
        "(higher is better; not in P(M))</div><table><tr><th class='l'>task</th><th class='l'>dataset</th>"
        "<th class='l'>estimator</th><th>latest</th><th class='l'>snapshot</th><th>over snapshots</th></tr>"
        + "".join(rows)
        + "</table>"
    )
