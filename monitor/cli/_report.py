"""`report --out FILE`: an HTML report of the latest runs, with PNG plots (also written beside it).

For people who want to look rather than query: per model, P(M) over time with its standard error
band and its baseline, the latest grid as a heatmap and its cells' training curves (one panel a
cell, one line a seed: `_plot_curves`); then the status page's tables, with, for two models or
more, their comparison as `compare` has it and its plot (`<stem>_comparison.png`). The HTML
embeds everything (one file to mail or attach to a ticket).
"""

from __future__ import annotations

import io
from pathlib import Path

from ..api import CellCurves, alert_documents, cell_curves, render_status_page
from ..pipeline import compare_latest
from ..settings import Settings
from ..store import Store
from ._compare import plot_comparison

__all__ = ["write_report"]


def write_report(settings: Settings, store: Store, out: Path) -> list[Path]:
    """Write the HTML report to `out` and PNGs per model beside it; returns the files written."""
    images = {model.name: _plot(store, settings, model.name) for model in settings.models}
    curves = {
        model.name: png
        for model in settings.models
        if (png := _plot_curves(cell_curves(store, store.latest_cells(model.name)), model.name)) is not None
    }
    # Two models or more: their comparison, as `compare` has it (a table in the page, and a plot).
    comparison = compare_latest(settings, store) if len(settings.models) >= 2 else None
    compared = plot_comparison(comparison) if comparison is not None and comparison.scored else None
    html = render_status_page(
        store,
        settings,
        None,
        alert_documents(store, settings),
        refresh=None,
        images=images,
        curve_images=curves,
        comparison=comparison,
        comparison_image=compared,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    written = []
    if out.suffix.lower() == ".png":  # asked for a picture only: all models, one after another
        pngs = [*images.values(), *([compared] if compared is not None else [])]
        out.write_bytes(pngs[0] if len(pngs) == 1 else _stack(pngs))
        return [out]
    out.write_text(html, encoding="utf-8")
    written.append(out)
    for name, png in images.items():
        path = out.with_name(f"{out.stem}-{name}.png")
        path.write_bytes(png)
        written.append(path)
    for name, png in curves.items():
        path = out.with_name(f"{out.stem}-{name}-curves.png")
        path.write_bytes(png)
        written.append(path)
    if compared is not None:
        # "_": never the name of a model's file ("-<model>"), whatever the model is called
        path = out.with_name(f"{out.stem}_comparison.png")
        path.write_bytes(compared)
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


# Panels of the curves figure at most: a huge grid shows its diverged cells first, then its
# lowest-scoring ones (where a look at training pays off), and the title says how many are left out.
MAX_CURVE_PANELS = 24


def _plot_curves(cells: list[CellCurves], model: str) -> bytes | None:
    """Small multiples of the cells' loss per epoch, a line per seed; None when no cell has a curve."""
    with_curves = [c for c in cells if any(s.losses for s in c.seeds)]
    if not with_curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    shown = with_curves
    if len(shown) > MAX_CURVE_PANELS:
        order = sorted(
            range(len(shown)),
            key=lambda i: (shown[i].cell.status != "diverged", shown[i].cell.score or 0.0, i),
        )
        shown = [shown[i] for i in sorted(order[:MAX_CURVE_PANELS])]  # back in grid order
    columns = min(4, len(shown))
    rows = -(-len(shown) // columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(3.2 * columns, 2.4 * rows + 0.5), squeeze=False, constrained_layout=True
    )
    left_out = len(with_curves) - len(shown)
    title = f"{model}: training loss per epoch, a line per seed (latest cells)"
    if left_out:
        title += f"; {len(shown)} of {len(with_curves)} cells, diverged and lowest-scoring first"
    figure.suptitle(title, fontsize=10, x=0.01, ha="left")
    for ax, curves in zip(axes.flat, shown, strict=False):
        c = curves.cell
        for seed in curves.seeds:
            epochs = [e for e, v in enumerate(seed.losses, start=1) if v is not None]
            values = [v for v in seed.losses if v is not None]
            at = seed.diverged_at
            label = f"seed {seed.seed}" + (f", diverged in epoch {at['epoch']}" if at else "")
            (line,) = ax.plot(epochs, values, marker="o", markersize=2, linewidth=1.2, label=label)
            if at is not None:  # a dotted line and a cross at the top: where the loss stopped being finite
                ax.axvline(at["epoch"], color=line.get_color(), linestyle=":", linewidth=1)
                ax.plot([at["epoch"]], [0.9], "x", color="#c81e1e", transform=ax.get_xaxis_transform())
        score = "–" if c.score is None else f"{c.score:.3f}"
        ax.set_title(f"{c.task}/{c.dataset}/{c.strategy}\n{c.status}, score {score}", fontsize=8)
        ax.set_xlabel("epoch", fontsize=7)
        ax.set_xlim(0.5, max(len(s.losses) for s in curves.seeds) + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="best")
    for ax in list(axes.flat)[len(shown) :]:
        ax.set_axis_off()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
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
