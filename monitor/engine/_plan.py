"""The grid as cells and trials, and its split into work groups (one model × one snapshot).

Pure data: nothing here touches torch, the disk or the store. The pipeline decides what is
already known (stored trial keys) and asks for work groups covering only the rest.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..data import PreparedData
from ..settings import ModelSpec, Settings, StrategySpec, TaskSpec
from ..types import ModelVersion, SnapshotInfo, Unavailable
from ._keys import trial_key

__all__ = ["CellRef", "PlannedCell", "TrialSpec", "WorkGroup", "plan_grid", "work_groups"]


@dataclass(frozen=True)
class CellRef:
    model: str
    task: str
    dataset: str
    strategy: str

    def __str__(self) -> str:
        return f"{self.model}/{self.task}/{self.dataset}/{self.strategy}"


@dataclass(frozen=True)
class TrialSpec:
    """One fine-tune to run: a cell with one seed."""

    key: str
    cell: CellRef
    seed: int
    strategy: StrategySpec


@dataclass(frozen=True)
class PlannedCell:
    cell: CellRef
    snapshot: SnapshotInfo | None
    trials: tuple[TrialSpec, ...]  # one per seed; empty when the cell cannot run
    problem: str | None = None  # why it cannot run: no usable snapshot, model not resolvable


@dataclass(frozen=True)
class WorkGroup:
    """The unit of execution: the model is loaded once, the snapshot decoded once, for all trials."""

    model: ModelSpec
    version: ModelVersion
    task: TaskSpec
    snapshot: SnapshotInfo
    data: PreparedData
    trials: tuple[TrialSpec, ...]
    config_dir: Path | None

    @property
    def id(self) -> str:
        return f"{self.model.name}/{self.task.name}/{self.snapshot.dataset}@{self.snapshot.snapshot}"


def plan_grid(
    settings: Settings,
    versions: Mapping[str, ModelVersion | Unavailable],
    snapshots: Mapping[tuple[str, str], SnapshotInfo | Unavailable],
) -> list[PlannedCell]:
    """Every (model, task, dataset, strategy) cell with its trial keys, in a stable order.

    `versions` maps a model name to its version or to why it could not be resolved;
    `snapshots` maps (task, dataset) to the snapshot in use or to why there is none.
    """
    cells: list[PlannedCell] = []
    for model in settings.models:
        version = versions[model.name]
        for task in settings.tasks:
            for dataset in task.datasets:
                snapshot = snapshots[(task.name, dataset.name)]
                for strategy in settings.strategies:
                    ref = CellRef(model.name, task.name, dataset.name, strategy.name)
                    if isinstance(version, Unavailable):
                        cells.append(PlannedCell(ref, None, (), problem=version.reason))
                    elif isinstance(snapshot, Unavailable):
                        cells.append(PlannedCell(ref, None, (), problem=snapshot.reason))
                    else:
                        trials = tuple(
                            TrialSpec(
                                trial_key(model, version, task, snapshot.digest, strategy, seed),
                                ref,
                                seed,
                                strategy,
                            )
                            for seed in settings.seeds
                        )
                        cells.append(PlannedCell(ref, snapshot, trials))
    return cells


def work_groups(
    settings: Settings,
    cells: Iterable[PlannedCell],
    todo: set[str],
    versions: Mapping[str, ModelVersion | Unavailable],
    data: Mapping[tuple[str, str, str], PreparedData],
) -> list[WorkGroup]:
    """Group the trials whose keys are in `todo` by (model, snapshot); `data` is keyed (model, task, dataset)."""
    pending: dict[tuple[str, str, str], list[TrialSpec]] = {}
    snapshot_of: dict[tuple[str, str, str], SnapshotInfo] = {}
    for planned in cells:
        ref = planned.cell
        wanted = [t for t in planned.trials if t.key in todo]
        if not wanted or planned.snapshot is None:
            continue
        group_key = (ref.model, ref.task, ref.dataset)
        queued = pending.setdefault(group_key, [])
        known = {t.key for t in queued}
        queued.extend(t for t in wanted if t.key not in known)  # identical cells train once
        snapshot_of[group_key] = planned.snapshot
    groups = []
    for (model_name, task_name, dataset_name), trials in pending.items():
        version = versions[model_name]
        assert isinstance(version, ModelVersion)
        groups.append(
            WorkGroup(
                # Remote weights were fetched by the sources layer: the worker loads that file.
                model=settings.model(model_name).with_local_weights(version.weights),
                version=version,
                task=settings.task(task_name),
                snapshot=snapshot_of[(model_name, task_name, dataset_name)],
                data=data[(model_name, task_name, dataset_name)],
                trials=tuple(trials),
                config_dir=settings.config_dir,
            )
        )
    return groups
