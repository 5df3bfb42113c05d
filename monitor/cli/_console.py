"""Terminal output: the progress bar of a run and the per-model results tables.

Progress and warnings go to stderr, results to stdout, so `--json` output stays machine-readable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from ..engine import TrialSpec
from ..pipeline import ModelReport, RunReport
from ..types import CellResult, EstimateResult, TrialResult

__all__ = ["ProgressObserver", "render_report"]


class ProgressObserver:
    """A rich progress bar over the fine-tunes to run (cells done / total, ETA) on stderr."""

    def __init__(self, console: Console, *, seeds: int = 1) -> None:
        self.console = console
        self.seeds = max(1, seeds)
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[cells]}"),
            MofNCompleteColumn(),
            TextColumn("fine-tunes"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._task: int | None = None
        self._failed = 0
        self._per_cell: dict[object, int] = {}
        self._cells_total = 0

    def __enter__(self) -> ProgressObserver:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def stage(self, text: str) -> None:
        # printed above the bar, which stays short; Text: a snapshot id with [brackets] is not markup
        self.console.print(Text(f"· {text}", style="dim"))

    def warn(self, text: str) -> None:
        self.console.print(Text("warning: ", style="yellow bold") + Text(text))

    def planned(self, trials: int, cached: int) -> None:
        todo = trials - cached
        self.console.print(f"[dim]· grid: {trials} fine-tunes, {cached} already stored, {todo} to run[/dim]")
        if todo:
            self._cells_total = -(-todo // self.seeds)  # a cell is done when all its seeds are
            self._task = self.progress.add_task("training", total=todo, cells=self._cells_text())

    def _cells_text(self) -> str:
        done = sum(1 for n in self._per_cell.values() if n >= self.seeds)
        return f"{min(done, self._cells_total)}/{self._cells_total} cells ·"

    def trial_done(self, trial: TrialSpec, result: TrialResult) -> None:
        if result.status == "failed":
            self._failed += 1
            self.warn(f"{trial.cell} seed {trial.seed} failed: {result.error}")
        self._per_cell[trial.cell] = self._per_cell.get(trial.cell, 0) + 1
        if self._task is not None:
            self.progress.update(self._task, cells=self._cells_text())  # type: ignore[arg-type]
        if self._task is not None:
            self.progress.advance(self._task)  # type: ignore[arg-type]


_STATUS_STYLE = {"ok": "", "cached": "dim", "diverged": "red", "failed": "red bold"}


def _cell_text(cell: CellResult | None) -> Text:
    if cell is None:
        return Text("-", style="dim")
    if cell.status == "failed" or cell.score is None:
        return Text("failed", style=_STATUS_STYLE["failed"])
    text = Text(f"{cell.score:.3f}", style=_STATUS_STYLE[cell.status])
    if cell.status == "diverged":
        text.append(" div", style="red")
    return text


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def render_model(report: ModelReport, role: str | None = None) -> Table:
    score = report.score
    strategies = list(dict.fromkeys(c.strategy for c in report.cells))
    title = (
        f"[bold]{score.model}[/bold] (version {score.version}{', ' + role if role else ''})  "
        f"P(M) = [bold]{_fmt(score.persistence)}[/bold] ± {_fmt(score.stderr)}"
        f" [dim](seeds alone ± {_fmt(score.stderr_seeds)})[/dim]"
    )
    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("task")
    table.add_column("dataset")
    table.add_column("snapshot", style="dim")
    for name in strategies:
        table.add_column(name, justify="right")
    table.add_column("mean", justify="right", style="bold")
    rows: dict[tuple[str, str], dict[str, CellResult]] = {}
    for cell in report.cells:
        rows.setdefault((cell.task, cell.dataset), {})[cell.strategy] = cell
    for (task, dataset), by_strategy in rows.items():
        snapshot = next((c.snapshot for c in by_strategy.values() if c.snapshot), "-")
        mean = score.dataset_scores.get(task, {}).get(dataset)
        table.add_row(
            task, dataset, snapshot, *(_cell_text(by_strategy.get(s)) for s in strategies), _fmt(mean)
        )
    worst = f"{'/'.join(score.worst_cell)} = {_fmt(score.worst_cell_score)}" if score.worst_cell else "-"
    table.caption = (
        f"coverage {score.coverage:.0%} ({score.cells_scored}/{score.cells_planned} cells) · "
        f"spread {_fmt(score.spread)} · worst cell {worst}"
    )
    table.caption_justify = "left"
    return table


def render_estimates(model: str, estimates: Sequence[EstimateResult]) -> Table:
    """A model's transferability estimates (higher: its features suit the data better)."""
    table = Table(title=f"{model}: transferability estimates (not in P(M))", title_justify="left")
    for column in ("task", "dataset", "snapshot", "estimator"):
        table.add_column(column)
    table.add_column("value", justify="right")
    table.add_column("status")
    for e in estimates:
        value = f"{e.value:.4f}" if e.value is not None else Text(e.error or "failed", style="red")
        table.add_row(e.task, e.dataset, e.snapshot, e.estimator, value, e.status)
    return table


def render_report(report: RunReport, console: Console, roles: Mapping[str, str] | None = None) -> None:
    """Every model's table (with its role, from `roles`, when given), its failures, then the run."""
    for model in report.models:
        console.print(render_model(model, (roles or {}).get(model.score.model)))
        if model.estimates:
            console.print(render_estimates(model.score.model, model.estimates))
        failed = [c for c in model.cells if c.status == "failed"]
        for cell in failed[:10]:
            console.print(
                Text(f"  failed {cell.task}/{cell.dataset}/{cell.strategy}: ", style="red")
                + Text(cell.error or "")
            )
        if len(failed) > 10:
            console.print(f"  … and {len(failed) - 10} more failed cells")
        console.print()
    style = {"completed": "green", "partial": "yellow", "failed": "red"}[report.status]
    console.print(
        f"run [bold]{report.run_id}[/bold] [{style}]{report.status}[/{style}] in {report.seconds:.1f}s: "
        f"{report.trials_run} fine-tunes run, {report.trials_cached} from the store"
    )
