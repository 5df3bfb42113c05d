"""`check-config`: validate, resolve every model and source, and show what the grid will be."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from .._text import shown
from ..alerts import small_test_split
from ..data import shift_text
from ..errors import MonitorError
from ..settings import Settings, StrategySpec, TaskSpec, redact_url
from ..sources import SnapshotCandidate, list_snapshots, model_version
from ..store import redacted_database_url

__all__ = ["batchnorm_text", "check_config", "schedule_text"]


def check_config(settings: Settings, out: Console) -> int:
    """Print the resolved configuration; exit code 2 when a model or a source does not resolve."""
    from ..models import load_backbone  # imports torch: only this command needs it

    problems = 0
    database = settings.resolved_database_url
    out.print(f"state_dir  {settings.state_dir}")
    out.print(f"database   {redacted_database_url(database)}")
    out.print(f"device     {settings.device}")

    models = Table(title="models", title_justify="left")
    for column in ("model", "role", "architecture", "version", "features", "stages", "status"):
        models.add_column(column)
    for spec in settings.models:
        try:
            version = model_version(spec, state_dir=settings.state_dir, config_dir=settings.config_dir)
            backbone = load_backbone(spec.with_local_weights(version.weights), config_dir=settings.config_dir)
            stages = ", ".join(name for name, _ in backbone.stages[-3:])
            models.add_row(
                spec.name,
                spec.role,
                spec.architecture,
                version.version,
                str(backbone.feature_dim),
                f"{len(backbone.stages)} (… {stages})",
                Text("ok", style="green"),
            )
            for strategy in settings.strategies:
                if strategy.mode == "partial" and (strategy.trainable_blocks or 0) > len(backbone.stages):
                    problems += 1
                    models.add_row(
                        "",
                        "",
                        "",
                        "",
                        "",
                        "",
                        Text(
                            f"strategy {strategy.name}: trainable_blocks {strategy.trainable_blocks} > "
                            f"{len(backbone.stages)} stages",
                            style="red",
                        ),
                    )
        except MonitorError as exc:
            problems += 1
            models.add_row(
                spec.name, spec.role, spec.architecture, "-", "-", "-", Text(str(exc), style="red")
            )
    out.print(models)

    small_splits: list[str] = []
    datasets = Table(title="datasets", title_justify="left")
    for column in ("task", "metric", "dataset", "source", "complete snapshots", "latest"):
        datasets.add_column(column)
    for task in settings.tasks:
        listings: dict[str, list[SnapshotCandidate] | MonitorError] = {}
        for dataset in task.datasets:
            if dataset.derive is None:
                try:
                    listings[dataset.name] = list_snapshots(task.name, dataset, state_dir=settings.state_dir)
                except MonitorError as exc:
                    listings[dataset.name] = exc
                    problems += 1
        for dataset in task.datasets:
            if dataset.derive is None:
                source = redact_url(dataset.location)
                found_or_error = listings[dataset.name]
            else:  # its source's snapshots, corrupted
                source = f"derived from {dataset.derive.from_}: {shift_text(dataset.derive)}"
                found_or_error = listings[dataset.derive.from_]
            if isinstance(found_or_error, MonitorError):
                datasets.add_row(
                    task.name, task.metric, dataset.name, source, Text(str(found_or_error), style="red"), "-"
                )
                continue
            found = found_or_error
            latest = Text(shown(found[-1].snapshot)) if found else Text("none yet", style="yellow")
            datasets.add_row(task.name, task.metric, dataset.name, source, str(len(found)), latest)
            if dataset.derive is not None:
                continue  # the test split is its source's: any warning about it is given there
            if found and any(r.kind == "drop" for r in settings.alerts.rules):
                bound = _test_split_bound(task, found[-1])
                advice = small_test_split(bound, at_most=True) if bound is not None else None
                if advice is not None:
                    small_splits.append(f"dataset {task.name}/{dataset.name}: {advice}")
    out.print(datasets)
    for line in small_splits:  # a warning, not a problem: the grid runs, its drops are harder to see
        out.print(f"[yellow]warning[/yellow]: {escape(line)}")

    strategies = Table(title="strategies", title_justify="left")
    columns = (
        "strategy",
        "mode",
        "optimizer",
        "lr",
        "schedule",
        "warm-up",
        "epochs",
        "batch",
        "weight decay",
    )
    for column in (*columns, "blocks", "batchnorm", "augment"):
        strategies.add_column(column)
    for s in settings.strategies:
        if s.mode == "knn":  # trains nothing: only its k
            dash = ("-",) * (len(columns) - 1)  # optimizer .. blocks
            strategies.add_row(s.name, f"knn (k={s.k})", *dash, "eval (frozen backbone)", "-")
            continue
        strategies.add_row(
            s.name,
            s.mode,
            s.optimizer,
            f"{s.train_lr:g}",
            schedule_text(s),
            f"{s.warmup_epochs} ep" if s.warmup_epochs else "-",
            str(s.epochs),
            str(s.batch_size),
            f"{s.weight_decay:g}",
            str(s.trainable_blocks or "-"),
            batchnorm_text(s),
            s.augment,
        )
    out.print(strategies)

    n_datasets = [len(t.datasets) for t in settings.tasks]
    per_model = sum(n_datasets) * len(settings.strategies) * len(settings.seeds)
    total = per_model * len(settings.models)
    if len(set(n_datasets)) == 1:
        shape = f"{len(settings.tasks)} tasks × {n_datasets[0]} datasets"
    else:
        shape = f"({' + '.join(map(str, n_datasets))}) datasets over {len(settings.tasks)} tasks"
    out.print(
        f"grid: {len(settings.models)} models × {shape} × {len(settings.strategies)} strategies × "
        f"{len(settings.seeds)} seeds = [bold]{total}[/bold] fine-tunes "
        f"({sum(n_datasets) * len(settings.strategies) * len(settings.models)} cells)"
    )
    if problems:
        out.print(f"[red bold]{problems} problem(s)[/red bold]: fix them before running")
        return 2
    out.print("[green]configuration ok[/green]")
    return 0


def schedule_text(strategy: StrategySpec) -> str:
    """The learning-rate schedule as it will run: `constant`, `cosine → 0`, `step ×0.1 / 2 ep`."""
    if strategy.schedule in ("cosine", "linear"):
        return f"{strategy.schedule} → {strategy.min_lr:g}"
    if strategy.schedule == "step":
        return f"step ×{strategy.gamma:g} / {strategy.step_size} ep"
    return strategy.schedule


def batchnorm_text(strategy: StrategySpec) -> str:
    """What the backbone's BatchNorm layers do while the strategy trains."""
    if strategy.mode == "linear":
        return "eval (frozen backbone)"
    if strategy.mode == "full":
        return "train"
    return "train (every stage)" if strategy.bn == "train" else "frozen stages in eval"


def _test_split_bound(task: TaskSpec, latest: SnapshotCandidate) -> int | None:
    """At most how many test images the latest snapshot gives the task, from its folder names
    alone (nothing is decoded): test_per_class × classes; None when that cannot be told cheaply
    (an archive, a remote source, no per-class cap)."""
    if latest.kind != "directory" or task.test_per_class is None:
        return None
    root = Path(latest.location)
    split = next((root / name for name in ("test", "val") if (root / name).is_dir()), root)
    try:
        classes = [p for p in split.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))]
    except OSError:
        return None
    return task.test_per_class * len(classes) if classes else None
