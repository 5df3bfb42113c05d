"""`report --out FILE`: an HTML report of the latest runs, with PNG plots (also written beside it).

For people who want to look rather than query: per model, P(M) over time with its standard error
band and its baseline, and the latest grid as a heatmap; then the status page's tables. The HTML
embeds everything (one file to mail or attach to a ticket).
"""

from __future__ import annotations

import io
from pathlib import Path

from ..api import alert_documents, render_status_page
from ..settings import Settings
from ..store import Store

__all__ = ["write_report"]


def write_report(settings: Settings, store: Store, out: Path) -> list[Path]:
    """Write the HTML report to `out` and one PNG per model beside it; returns the files written."""
    images = {model.name: _plot(store, settings, model.name) for model in settings.models}
    html = render_status_page(
        store, settings, None, alert_documents(store, settings), refresh=None, images=images
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    written = []
    if out.suffix.lower() == ".png":  # asked for a picture only: all models, one after another
        out.write_bytes(next(iter(images.values())) if len(images) == 1 else _stack(list(images.values())))
        return [out]
    out.write_text(html, encoding="utf-8")
    written.append(out)
    for name, png in images.items():
        path = out.with_name(f"{out.stem}-{name}.png")
        path.write_bytes(png)
        written.append(path)
    return written


def _plot(store: Store, settings: Settings, model: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")  # no display: render to memory
    import matplotlib.pyplot as plt
    import numpy as np

    history = [
        point for point in store.persistence_history(model, limit=200) if point.persistence is not None
    ]
    cells = store.latest_cells(model)
    states = {s.rule: s for s in store.alert_states(model=model)}
    drop_rules = [r.name for r in settings.alerts.rules if r.kind == "drop"]
    baseline = states[drop_rules[0]].baseline if drop_rules and drop_rules[0] in states else None

    figure, (trend, grid) = plt.subplots(1, 2, figsize=(13, 4.2), gridspec_kw={"width_ratios": [1.2, 1]})
    figure.suptitle(f"{model}", fontsize=12, x=0.01, ha="left")
    if history:
        times = [point.finished_at or point.started_at for point in history]
        values = np.array([point.persistence for point in history], dtype=float)
        errors = np.array([point.stderr or 0.0 for point in history], dtype=float)
        seed_errors = np.array([point.stderr_seeds or 0.0 for point in history], dtype=float)
        trend.plot(times, values, marker="o", markersize=3, color="#2456c9", label="P(M)")
        trend.fill_between(
            times, values - errors, values + errors, color="#2456c9", alpha=0.15, label="± stderr"
        )
        trend.fill_between(
            times,
            values - seed_errors,
            values + seed_errors,
            color="#2456c9",
            alpha=0.25,
            label="± stderr of the seeds alone",
        )
        if baseline is not None:
            trend.axhline(baseline, color="#6b7280", linestyle="--", linewidth=1, label="baseline")
        for rule in settings.alerts.rules:
            if rule.kind == "below":
                trend.axhline(
                    rule.threshold, color="#c81e1e", linestyle=":", linewidth=1, label=f"{rule.name}"
                )
        trend.legend(loc="lower left", fontsize=8)
        figure.autofmt_xdate()
    else:
        trend.text(0.5, 0.5, "no finished run yet", ha="center", va="center", transform=trend.transAxes)
    trend.set_title("P(M) over time", fontsize=10)
    trend.set_ylabel("P(M)")
    trend.grid(alpha=0.3)

    strategies = [s.name for s in settings.strategies]
    rows = list(dict.fromkeys((c.task, c.dataset) for c in cells))
    matrix = np.full((len(rows), len(strategies)), np.nan)
    for cell in cells:
        if cell.score is not None and cell.strategy in strategies:
            matrix[rows.index((cell.task, cell.dataset)), strategies.index(cell.strategy)] = cell.score
    if rows:
        image = grid.imshow(matrix, cmap="RdYlGn", vmin=0.0, vmax=1.0, aspect="auto")
        grid.set_xticks(range(len(strategies)), strategies, rotation=30, ha="right", fontsize=8)
        grid.set_yticks(range(len(rows)), [f"{t}/{d}" for t, d in rows], fontsize=8)
        for (i, j), value in np.ndenumerate(matrix):
            grid.text(
                j, i, "failed" if np.isnan(value) else f"{value:.2f}", ha="center", va="center", fontsize=8
            )
        figure.colorbar(image, ax=grid, fraction=0.046, pad=0.04)
    else:
        grid.text(0.5, 0.5, "no cells yet", ha="center", va="center", transform=grid.transAxes)
        grid.set_axis_off()
    grid.set_title("latest grid (cell scores)", fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()


def _stack(pngs: list[bytes]) -> bytes:
    from PIL import Image

    images = [Image.open(io.BytesIO(p)).convert("RGB") for p in pngs]
    width = max(i.width for i in images)
    canvas = Image.new("RGB", (width, sum(i.height for i in images)), "white")
    top = 0
    for image in images:
        canvas.paste(image, (0, top))
        top += image.height
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()
