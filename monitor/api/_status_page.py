"""The status page at `/`: P(M) per model over time, the latest grid as a heatmap, alerts, runs.

Plain server-rendered HTML with inline SVG: no scripts, no external assets (the page must work
on an air-gapped host), refreshed by the browser every 30 seconds.
"""

from __future__ import annotations

import base64
from html import escape
from typing import Any

from .. import __version__
from ..pipeline import LatestComparison, compare_latest
from ..settings import Settings
from ..store import Store
from ..types import CellResult
from ._comparison_page import comparison_section
from ._estimates_page import estimates_section

__all__ = ["render_status_page"]

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1d2330;background:#fafbfc}
h1{font-size:1.4rem;margin:0 0 .2rem} h2{font-size:1.1rem;margin:1.6rem 0 .5rem}
.muted{color:#6b7280;font-size:.85rem} table{border-collapse:collapse;margin:.3rem 0}
th,td{padding:.25rem .6rem;border:1px solid #e3e6ea;font-size:.85rem;text-align:right}
th{background:#f0f2f5} td.l,th.l{text-align:left} .cell{min-width:4.5rem}
.failed{background:#fde2e2;color:#9b1c1c} .diverged{outline:2px solid #c81e1e}
.ok{color:#0b6b2f} .bad{color:#9b1c1c;font-weight:600} .card{background:#fff;border:1px solid #e3e6ea;
border-radius:6px;padding:.8rem 1rem;margin:.8rem 0}
"""


def _f(value: float | None, spec: str = ".3f") -> str:
    return "–" if value is None else format(value, spec)


def _heat(score: float | None) -> str:
    if score is None:
        return ""
    hue = max(0.0, min(1.0, score)) * 120  # red (0) … green (1)
    return f"background:hsl({hue:.0f},65%,82%)"


def _sparkline(points: list[float], width: int = 420, height: int = 70) -> str:
    if not points:
        return '<span class="muted">no finished run yet</span>'
    low, high = min(points), max(points)
    span = (high - low) or 0.05
    low, high = low - span * 0.15, high + span * 0.15
    step = width / max(1, len(points) - 1)
    coords = [
        (i * step if len(points) > 1 else width / 2, height - (p - low) / (high - low) * height)
        for i, p in enumerate(points)
    ]
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    dots = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="#2456c9"/>' for x, y in coords[-30:])
    return (
        f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="P(M) over the last {len(points)} runs">'
        f'<polyline points="{path}" fill="none" stroke="#2456c9" stroke-width="1.8"/>{dots}'
        f'<text x="2" y="11" font-size="10" fill="#6b7280">{high:.3f}</text>'
        f'<text x="2" y="{height - 2}" font-size="10" fill="#6b7280">{low:.3f}</text></svg>'
    )


def _heatmap(cells: list[CellResult], strategies: list[str]) -> str:
    if not cells:
        return '<p class="muted">no cells yet</p>'
    rows: dict[tuple[str, str, str], dict[str, CellResult]] = {}
    for cell in cells:
        rows.setdefault((cell.task, cell.dataset, cell.snapshot), {})[cell.strategy] = cell
    head = "".join(f"<th>{escape(s)}</th>" for s in strategies)
    body = []
    for (task, dataset, snapshot), by_strategy in rows.items():
        tds = []
        for strategy in strategies:
            found = by_strategy.get(strategy)
            if found is None:
                tds.append("<td></td>")
            elif found.status == "failed":
                tds.append(f'<td class="cell failed" title="{escape(found.error or "")}">failed</td>')
            else:
                extra = " diverged" if found.status == "diverged" else ""
                title = f"{found.status}; seeds: {', '.join(f'{s:.3f}' for s in found.seed_scores)}"
                tds.append(
                    f'<td class="cell{extra}" style="{_heat(found.score)}" title="{escape(title)}">{_f(found.score)}</td>'
                )
        body.append(
            f'<tr><td class="l">{escape(task)}</td><td class="l">{escape(dataset)}</td>'
            f'<td class="l muted">{escape(snapshot or "–")}</td>{"".join(tds)}</tr>'
        )
    return (
        f'<table><tr><th class="l">task</th><th class="l">dataset</th><th class="l">snapshot</th>{head}</tr>'
        f"{''.join(body)}</table>"
    )


def render_status_page(
    store: Store,
    settings: Settings,
    health: dict[str, Any] | None,
    alerts: list[dict[str, Any]],
    *,
    refresh: int | None = 30,
    images: dict[str, bytes] | None = None,
    curve_images: dict[str, bytes] | None = None,
    comparison: LatestComparison | None = None,
    comparison_image: bytes | None = None,
) -> str:
    """The page; `health` None renders the offline report (with `images`: PNG plots per model,
    and `curve_images`: the training curves of each model's latest cells). With two models or
    more, their comparison (`comparison`, read here when not given; `comparison_image`: a PNG)."""
    strategies = [s.name for s in settings.strategies]
    latest = store.latest_scores(m.name for m in settings.models)
    meta = f"<meta http-equiv='refresh' content='{refresh}'>" if refresh else ""
    if health is None:
        from datetime import UTC, datetime

        subtitle = f"report of the latest runs, written {datetime.now(UTC).isoformat(timespec='seconds')}"
    else:
        role = health.get("role")
        if role == "standby":  # (two daemons on one PostgreSQL store: this one serves reads)
            role = f"standby (leader: {health.get('leader') or 'none'})"
        subtitle = (
            (
                f"{escape(str(health.get('instance') or 'this daemon'))}: {escape(str(role))} · "
                if role
                else ""
            )
            + f"scheduler {escape(str(health.get('scheduler')))} · "
            f"{'evaluating run ' + escape(str(health['evaluating'])) if health.get('evaluating') else 'idle'}"
            f"{' · last error: ' + escape(str(health['last_error'])) if health.get('last_error') else ''}"
        )
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'>{meta}",
        "<title>persistence-monitor</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>persistence-monitor</h1>",
        f'<div class="muted">version {escape(__version__)} · {subtitle}</div>',
    ]
    firing = [a for a in alerts if a.get("state") == "firing"]
    parts.append("<h2>Alerts</h2>")
    if firing:
        items = "".join(
            f'<li class="bad">{escape(a["alert"])} on {escape(a["model"])} ({escape(str(a.get("severity")))}): '
            f"{escape(str(a.get('summary') or ''))}</li>"
            for a in firing
        )
        parts.append(f"<ul>{items}</ul>")
    else:
        parts.append('<p class="ok">no alert firing</p>')
    parts.append("<h2>Models</h2>")
    for model in settings.models:
        run, score = latest.get(model.name, (None, None))
        history = [
            p.persistence
            for p in store.persistence_history(model.name, limit=100)
            if p.persistence is not None
        ]
        parts.append('<div class="card">')
        badge = " <span class='muted'>(candidate)</span>" if model.role == "candidate" else ""
        if score is None:
            parts.append(f"<b>{escape(model.name)}</b>{badge} <span class='muted'>no finished run yet</span>")
        else:
            worst = "/".join(score.worst_cell) if score.worst_cell else "–"
            parts.append(
                f"<b>{escape(model.name)}</b>{badge} <span class='muted'>version {escape(score.version)}</span><br>"
                f"P(M) <b>{_f(score.persistence)}</b> ± {_f(score.stderr)} "
                f"<span class='muted'>(seeds alone ± {_f(score.stderr_seeds)})</span> · coverage {_f(score.coverage, '.0%')} · "
                f"spread {_f(score.spread)} · worst cell {escape(worst)} = {_f(score.worst_cell_score)}"
                f"<div class='muted'>run {escape(run.id if run else '–')} finished "
                f"{escape(run.finished_at.isoformat(timespec='seconds') if run and run.finished_at else '–')}</div>"
            )
        image = (images or {}).get(model.name)
        if image is not None:
            encoded = base64.b64encode(image).decode()
            parts.append(
                f"<img alt='P(M) of {escape(model.name)} over time and its latest grid' "
                f"src='data:image/png;base64,{encoded}' style='max-width:100%'>"
            )
        else:
            parts.append(f"<div>{_sparkline(history)}</div>")
        curves = (curve_images or {}).get(model.name)
        if curves is not None:
            parts.append(
                f"<img alt='training curves of the latest cells of {escape(model.name)}' "
                f"src='data:image/png;base64,{base64.b64encode(curves).decode()}' style='max-width:100%'>"
            )
        parts.append(_heatmap(store.latest_cells(model.name), strategies))
        parts.append(estimates_section(store, settings, model.name))
        parts.append("</div>")
    if len(settings.models) >= 2:
        found = comparison if comparison is not None else compare_latest(settings, store)
        parts.append(comparison_section(found, comparison_image))
    parts.append(
        "<h2>Recent runs</h2><table><tr><th class='l'>run</th><th class='l'>trigger</th>"
        "<th class='l'>status</th><th class='l'>started</th><th>seconds</th></tr>"
    )
    for run in store.list_runs(limit=10, with_models=False):
        status_class = "bad" if run.status in ("failed", "partial") else ""
        parts.append(
            # the run view: its cells and their training curves (the JSON is linked from there)
            f"<tr><td class='l'><a href='/runs/{escape(run.id)}'>{escape(run.id[:12])}</a></td>"
            f"<td class='l'>{escape(run.trigger)}</td><td class='l {status_class}'>{escape(run.status)}</td>"
            f"<td class='l'>{escape(run.started_at.isoformat(timespec='seconds'))}</td>"
            f"<td>{_f(run.seconds, '.1f')}</td></tr>"
        )
    parts.append(
        "</table><p class='muted'><a href='/metrics'>metrics</a> · <a href='/openapi.json'>API schema</a>"
        " · <a href='/api/v1/runs'>runs (JSON)</a></p></body></html>"
    )
    return "".join(parts)
