"""`compare`: the models ranked by P(M), and the paired difference of every pair, from the store.

Nothing is run: each model is shown as its latest completed or partial run left it. A pair is
compared on the cells both models scored on the same snapshot (see `monitor.scoring`); as a rule
of thumb a difference is real when it exceeds 2-3 of its standard errors (`z`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..errors import ConfigError, MonitorError
from ..pipeline import LatestComparison, compare_latest
from ..settings import Settings
from ..store import Store

__all__ = ["compare", "parse_models", "plot_comparison", "render_comparison"]


def parse_models(settings: Settings, value: str | None) -> list[str] | None:
    """The `--models a,b` list (None: every model); unknown names are a ConfigError naming them."""
    if value is None:
        return None
    names = [n.strip() for n in value.split(",") if n.strip()]
    configured = [m.name for m in settings.models]
    unknown = [n for n in names if n not in configured]
    if unknown or not names:
        what = f"unknown model(s) {', '.join(unknown)}" if unknown else "no model named"
        raise ConfigError([("--models", f"{what}: expected names from models[] ({', '.join(configured)})")])
    return names


def compare(
    settings: Settings, store: Store, models: Sequence[str] | None, *, as_json: bool, out: Console
) -> None:
    """Print the comparison (a table, or one JSON document on stdout and nothing else).

    MonitorError (exit code 1) when none of the models has a finished run yet.
    """
    found = compare_latest(settings, store, models)
    if not found.scored:
        names = ", ".join(r.model for r in found.comparison.ranking)
        raise MonitorError(
            f"no finished run of {names} yet: nothing to compare (run `persistence-monitor run-once`, "
            "or let `serve` evaluate, first)"
        )
    if as_json:
        sys.stdout.write(json.dumps(found.document(), indent=2, allow_nan=False) + "\n")
        sys.stdout.flush()
    else:
        render_comparison(found, out)


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def _table(title: str, columns: Sequence[tuple[str, bool]]) -> Table:
    """A table with `columns` as (name, right-aligned)."""
    table = Table(title=title, title_justify="left")
    for name, right in columns:
        table.add_column(name, justify="right" if right else "left")
    return table


def render_comparison(found: LatestComparison, console: Console) -> None:
    """The ranking, then one row per pair, then the cells that differ most in each pair."""
    ranking = _table(
        "models ranked by P(M)",
        [
            ("#", True),
            ("model", False),
            ("role", False),
            ("version", False),
            ("P(M)", True),
            ("± stderr", True),
            ("coverage", True),
            ("run", False),
        ],
    )
    for rank, entry in enumerate(found.comparison.ranking, start=1):
        run = found.runs.get(entry.model)
        ranking.add_row(
            str(rank),
            Text(entry.model, style="bold"),
            Text(found.roles[entry.model], style="dim" if found.roles[entry.model] == "candidate" else ""),
            entry.version or "-",
            _fmt(entry.persistence),
            _fmt(entry.stderr),
            f"{entry.coverage:.0%} ({entry.cells_scored}/{entry.cells_planned})",
            run.id[:12] if run else "no finished run",
        )
    console.print(ranking)
    if not found.comparison.pairs:
        return
    pairs = _table(
        "paired differences (first − second, over the cells both scored on one snapshot)",
        [
            ("first", False),
            ("second", False),
            ("difference", True),
            ("± stderr", True),
            ("z", True),
            ("shared cells", True),
            ("unpaired", True),
        ],
    )
    for pair in found.comparison.pairs:
        z = pair.z
        pairs.add_row(
            pair.first,
            pair.second,
            _fmt(pair.difference, "+.3f"),
            _fmt(pair.stderr),
            Text(_fmt(z, "+.1f"), style="bold" if z is not None and abs(z) >= 3 else ""),
            str(pair.shared),
            str(pair.unpaired),
        )
    pairs.caption = (
        "a difference is real when |z| = |difference| / stderr exceeds 2-3; unpaired: cells both scored "
        "on different snapshots (left out)"
    )
    pairs.caption_justify = "left"
    console.print(pairs)
    for pair in found.comparison.pairs:
        if not pair.cells:
            continue
        cells = _table(
            f"{pair.first} − {pair.second}: the cells that differ most",
            [
                ("task", False),
                ("dataset", False),
                ("strategy", False),
                ("snapshot", False),
                (pair.first, True),
                (pair.second, True),
                ("difference", True),
            ],
        )
        for c in pair.cells:
            cells.add_row(
                c.task,
                c.dataset,
                c.strategy,
                c.snapshot,
                _fmt(c.first),
                _fmt(c.second),
                _fmt(c.difference, "+.3f"),
            )
        console.print(cells)


def plot_comparison(found: LatestComparison) -> bytes:
    """A PNG: P(M) ± 2 standard errors per model (best on top), and each pair's difference ± 2
    standard errors beside a zero line (an interval clear of zero: a real difference)."""
    import io

    import matplotlib

    matplotlib.use("Agg")  # no display: render to memory
    import matplotlib.pyplot as plt

    ranked = [r for r in found.comparison.ranking if r.persistence is not None]
    pairs = [p for p in found.comparison.pairs if p.difference is not None]
    height = 1.2 + 0.35 * max(len(ranked), len(pairs), 1)
    figure, (models, differences) = plt.subplots(1, 2, figsize=(12, height))
    for row, entry in enumerate(reversed(ranked)):
        candidate = found.roles[entry.model] == "candidate"
        models.errorbar(
            entry.persistence,
            row,
            xerr=2 * (entry.stderr or 0.0),
            fmt="s" if candidate else "o",
            color="#b45309" if candidate else "#2456c9",
            capsize=3,
        )
    models.set_yticks(
        range(len(ranked)), [f"{r.model} ({found.roles[r.model]})" for r in reversed(ranked)], fontsize=8
    )
    models.set_title("P(M) ± 2 stderr", fontsize=10)
    models.grid(alpha=0.3, axis="x")
    for row, pair in enumerate(reversed(pairs)):
        assert pair.difference is not None
        differences.errorbar(
            pair.difference, row, xerr=2 * (pair.stderr or 0.0), fmt="o", color="#374151", capsize=3
        )
    differences.axvline(0.0, color="#c81e1e", linewidth=1, linestyle=":")
    differences.set_yticks(
        range(len(pairs)), [f"{p.first} − {p.second}" for p in reversed(pairs)], fontsize=8
    )
    differences.set_title("paired difference ± 2 stderr (shared cells)", fontsize=10)
    differences.grid(alpha=0.3, axis="x")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()
