"""The run view at `/runs/{run_id}`: one run's cells, and each cell's training curves across seeds.

Like the status page: server-rendered HTML, inline SVG, no scripts, no external assets. A table
of the run's cells per model links each cell to its panel below: the mean training loss per
epoch of every seed (one line each), a red cross where a seed's loss stopped being finite.
It reads the run and its own trials only (`cell_curves`), never the history. Grids beyond
`MAX_PANELS` cells show the curves of the first `MAX_PANELS` (in plan order) and say so;
`/api/v1/runs/{run_id}/trials` has them all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from .. import __version__
from ..store import RunRecord, Store
from ._curves import CellCurves, SeedCurve, cell_curves
from ._status_page import _STYLE as STYLE
from ._status_page import _f as format_value
from ._status_page import _heat as heat

__all__ = ["MAX_PANELS", "loss_chart", "render_run_page"]

MAX_PANELS = 300  # about 1 KB of SVG each: a page of a few hundred KB at most

# One colour per seed (cycled): distinguishable, and readable on white.
_PALETTE = ("#2456c9", "#c2410c", "#0b6b2f", "#7c3aed", "#0e7490", "#a16207", "#be185d", "#4b5563")

_RUN_STYLE = """
.panels{display:flex;flex-wrap:wrap;gap:.6rem} .panel{background:#fff;border:1px solid #e3e6ea;
border-radius:6px;padding:.4rem .6rem;font-size:.8rem} .panel:target{outline:2px solid #2456c9}
.legend span{margin-right:.6rem;white-space:nowrap}
"""


def loss_chart(seeds: Sequence[SeedCurve], width: int = 280, height: int = 130) -> str:
    """An inline SVG of every seed's loss per epoch (linear axes, epochs from 1)."""
    finite = [v for s in seeds for v in s.losses if v is not None]
    epochs = max((len(s.losses) for s in seeds), default=0)
    if not finite:
        if any(s.diverged_at is not None for s in seeds):
            return '<span class="bad">diverged in its first epoch: no finite epoch loss to draw</span>'
        return '<span class="muted">no training curve stored</span>'
    left, bottom, top = 40, 14, 6
    plot_w, plot_h = width - left - 4, height - bottom - top
    low, high = min(finite), max(finite)
    if high - low < 1e-12:
        low, high = low - 0.5 * (abs(low) or 1.0), high + 0.5 * (abs(high) or 1.0)

    def x(epoch: int) -> float:  # epoch counted from 1
        return left + (plot_w * (epoch - 1) / (epochs - 1) if epochs > 1 else plot_w / 2)

    def y(value: float) -> float:
        return top + plot_h - (value - low) / (high - low) * plot_h

    marks = [
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#d1d5db"/>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#d1d5db"/>',
        f'<text x="{left - 3}" y="{top + 8}" font-size="9" fill="#6b7280" text-anchor="end">{_label(high, low)}</text>',
        f'<text x="{left - 3}" y="{top + plot_h}" font-size="9" fill="#6b7280" text-anchor="end">{_label(low, high)}</text>',
        f'<text x="{left}" y="{height - 2}" font-size="9" fill="#6b7280">1</text>',
        f'<text x="{left + plot_w}" y="{height - 2}" font-size="9" fill="#6b7280" text-anchor="end">'
        f"epoch {epochs}</text>",
    ]
    for i, seed in enumerate(seeds):
        colour = _PALETTE[i % len(_PALETTE)]
        label = escape(_seed_label(seed))
        points = [(x(e), y(v)) for e, v in enumerate(seed.losses, start=1) if v is not None]
        if len(points) > 1:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
            marks.append(
                f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.6">'
                f"<title>{label}</title></polyline>"
            )
        elif points:
            (px, py) = points[0]
            marks.append(
                f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.5" fill="{colour}"><title>{label}</title></circle>'
            )
        if seed.diverged_at is not None:
            at = x(min(seed.diverged_at["epoch"], epochs))
            marks.append(
                f'<text x="{at:.1f}" y="{top + 9}" font-size="12" fill="#c81e1e" text-anchor="middle">×'
                f"<title>{label}</title></text>"
            )
    return (
        f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="training loss per epoch of {len(seeds)} seeds">{"".join(marks)}</svg>'
    )


def _label(value: float, other: float) -> str:
    """`value` with the significant digits that tell it from `other` (3 at least, 7 at most)."""
    span = abs(value - other) or abs(value) or 1.0
    digits = math.ceil(math.log10(max(abs(value), abs(other), span) / span)) + 2
    return f"{value:.{min(7, max(3, digits))}g}"


def _seed_label(seed: SeedCurve) -> str:
    score = "–" if seed.score is None else f"{seed.score:.3f}"
    text = f"seed {seed.seed}: score {score}"
    if seed.losses and seed.losses[-1] is not None:
        text += f", last loss {seed.losses[-1]:.4g}"
    if seed.diverged_at is not None:
        text += f", diverged in epoch {seed.diverged_at['epoch']} (step {seed.diverged_at['step']})"
    return text


def _panel(curves: CellCurves) -> str:
    c = curves.cell
    legend = "".join(
        f'<span style="color:{_PALETTE[i % len(_PALETTE)]}">■ {escape(_seed_label(s))}</span>'
        for i, s in enumerate(curves.seeds)
    )
    return (
        f'<div class="panel" id="{escape(curves.anchor)}"><b>{escape(c.task)}/{escape(c.dataset)}'
        f"/{escape(c.strategy)}</b> <span class='muted'>{escape(c.status)} · score "
        f"{format_value(c.score)}</span><div>{loss_chart(curves.seeds)}</div>"
        f'<div class="legend">{legend}</div></div>'
    )


def render_run_page(store: Store, run: RunRecord) -> str:
    """The page of `run` (with its cells: `Store.get_run`)."""
    curves = cell_curves(store, run.cells[:MAX_PANELS])  # by position in the run: cells[i] -> curves[i]
    finished = run.finished_at.isoformat(timespec="seconds") if run.finished_at else "–"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>run {escape(run.id[:12])} · persistence-monitor</title>",
        f"<style>{STYLE}{_RUN_STYLE}</style></head><body>",
        f"<h1>run {escape(run.id)}</h1>",
        f'<div class="muted">version {escape(__version__)} · {escape(run.trigger)} · '
        f"<b>{escape(run.status)}</b> · started {escape(run.started_at.isoformat(timespec='seconds'))} · "
        f"finished {escape(finished)} · {format_value(run.seconds, '.1f')} s"
        f"{' · error: ' + escape(run.error) if run.error else ''}</div>",
        f"<p class='muted'><a href='/'>status page</a> · <a href='/api/v1/runs/{escape(run.id)}'>run (JSON)</a>"
        f" · <a href='/api/v1/runs/{escape(run.id)}/trials'>trials and curves (JSON)</a></p>",
    ]
    for model in dict.fromkeys(c.model for c in run.cells):
        score = next((m for m in run.models if m.model == model), None)
        parts.append(f"<h2>{escape(model)}</h2>")
        if score is not None:
            parts.append(
                f"<div>version {escape(score.version)} · P(M) <b>{format_value(score.persistence)}</b> ± "
                f"{format_value(score.stderr)} · coverage {format_value(score.coverage, '.0%')}</div>"
            )
        parts.append(
            "<table><tr><th class='l'>task</th><th class='l'>dataset</th><th class='l'>snapshot</th>"
            "<th class='l'>strategy</th><th class='l'>status</th><th>score</th><th class='l'>seeds</th>"
            "<th class='l'>curves</th></tr>"
        )
        positions = [i for i, c in enumerate(run.cells) if c.model == model]
        for i in positions:
            cell = run.cells[i]
            link = (
                f"<a href='#{escape(curves[i].anchor)}'>curves</a>"
                if i < len(curves)
                else "<span class='muted'>–</span>"
            )
            status_class = "failed" if cell.status == "failed" else ""
            parts.append(
                f"<tr><td class='l'>{escape(cell.task)}</td><td class='l'>{escape(cell.dataset)}</td>"
                f"<td class='l muted'>{escape(cell.snapshot or '–')}</td><td class='l'>{escape(cell.strategy)}</td>"
                f"<td class='l {status_class}' title='{escape(cell.error or '')}'>{escape(cell.status)}</td>"
                f"<td style='{heat(cell.score)}'>{format_value(cell.score)}</td>"
                f"<td class='l muted'>{escape(', '.join(f'{s:.3f}' for s in cell.seed_scores))}</td>"
                f"<td class='l'>{link}</td></tr>"
            )
        panels = "".join(_panel(curves[i]) for i in positions if i < len(curves))
        parts.append(f"</table><h3>Training curves</h3><div class='panels'>{panels}</div>")
    if len(run.cells) > MAX_PANELS:
        parts.append(
            f"<p class='muted'>curves of the first {MAX_PANELS} of {len(run.cells)} cells shown; "
            f"the JSON has every trial</p>"
        )
    if not run.cells:
        parts.append("<p class='muted'>this run has no cells (yet)</p>")
    parts.append("</body></html>")
    return "".join(parts)
