"""The grid as cells and trials, and its split into work groups (one model × one snapshot).

Pure data: nothing here touches torch, the disk or the store. The pipeline decides what is
already known (stored trial keys) and asks for work groups covering only the rest.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from ..data import PreparedData
from ..settings import ModelSpec, Settings, StrategySpec, TaskSpec
from ..types import ModelVersion, SnapshotInfo, Unavailable
from ._keys import estimate_key, trial_key

__all__ = [
    "CellRef",
    "EstimateSpec",
    "Job",
    "PlannedCell",
    "PlannedEstimate",
    "TrialSpec",
    "WorkGroup",
    "is_probe",
    "plan_estimates",
    "plan_grid",
    "work_groups",
]


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
class EstimateSpec:
    """One transferability estimate to compute: a model on a dataset's snapshot, no strategy, no seed.

    It travels in a work group beside the trials (`WorkGroup.jobs`) and comes back as a
    `TrialResult` whose score is the estimate; `cell.strategy` is the estimator's name.
    """

    key: str
    cell: CellRef
    estimator: str
    seed: int = 0


Job = TrialSpec | EstimateSpec


@dataclass(frozen=True)
class PlannedEstimate:
    model: str
    task: str
    dataset: str
    estimator: str
    snapshot: SnapshotInfo
    job: EstimateSpec


def is_probe(strategy: StrategySpec) -> bool:
    """A cheap cell: no fine-tune through the backbone (knn, and linear probes on frozen features)."""
    return strategy.mode == "knn" or (strategy.mode == "linear" and strategy.augment == "none")


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
    estimates: tuple[EstimateSpec, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.model.name}/{self.task.name}/{self.snapshot.dataset}@{self.snapshot.snapshot}"

    @property
    def jobs(self) -> tuple[Job, ...]:
        """Everything the group computes, each with one result: its trials, then its estimates."""
        return (*self.trials, *self.estimates)

    def only(self, jobs: Iterable[Job]) -> WorkGroup:
        """This group with just `jobs` left to compute (what a replaced worker still has to do)."""
        keys = {j.key for j in jobs}
        return replace(
            self,
            trials=tuple(t for t in self.trials if t.key in keys),
            estimates=tuple(e for e in self.estimates if e.key in keys),
        )


def plan_grid(
    settings: Settings,
    versions: Mapping[str, ModelVersion | Unavailable],
    snapshots: Mapping[tuple[str, str], SnapshotInfo | Unavailable],
    *,
    probes_only: bool = False,
) -> list[PlannedCell]:
    """Every (model, task, dataset, strategy) cell with its trial keys, in a stable order.

    `versions` maps a model name to its version or to why it could not be resolved;
    `snapshots` maps (task, dataset) to the snapshot in use or to why there is none.
    `probes_only`: just the cheap cells (`is_probe`), for an early warning between grids.
    """
    strategies = [s for s in settings.strategies if is_probe(s) or not probes_only]
    cells: list[PlannedCell] = []
    for model in settings.models:
        version = versions[model.name]
        for task in settings.tasks:
            for dataset in task.datasets:
                snapshot = snapshots[(task.name, dataset.name)]
                for strategy in strategies:
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


def plan_estimates(
    settings: Settings,
    versions: Mapping[str, ModelVersion | Unavailable],
    snapshots: Mapping[tuple[str, str], SnapshotInfo | Unavailable],
) -> list[PlannedEstimate]:
    """Every `early_warning` estimate of every model on every dataset that has a snapshot.

    A model or dataset that cannot be had this run simply has no estimates (its cells say why).
    Nor has a dataset derived with `apply_to: test`: its training split is its source's, so
    every estimate (computed on the training split) would repeat the source's.
    """
    planned: list[PlannedEstimate] = []
    for model in settings.models:
        version = versions[model.name]
        if isinstance(version, Unavailable):
            continue
        for task in settings.tasks:
            for dataset in task.datasets:
                snapshot = snapshots[(task.name, dataset.name)]
                if isinstance(snapshot, Unavailable) or (
                    dataset.derive and dataset.derive.apply_to == "test"
                ):
                    continue
                for estimator in settings.early_warning.estimators:
                    key = estimate_key(model, version, task, snapshot.digest, estimator)
                    ref = CellRef(model.name, task.name, dataset.name, estimator)
                    planned.append(
                        PlannedEstimate(
                            model.name,
                            task.name,
                            dataset.name,
                            estimator,
                            snapshot,
                            EstimateSpec(key, ref, estimator),
                        )
                    )
    return planned


def work_groups(
    settings: Settings,
    cells: Iterable[PlannedCell],
    todo: set[str],
    versions: Mapping[str, ModelVersion | Unavailable],
    data: Mapping[tuple[str, str, str], PreparedData],
    estimates: Iterable[PlannedEstimate] = (),
) -> list[WorkGroup]:
    """Group the trials and estimates whose keys are in `todo` by (model, snapshot); `data` is keyed
    (model, task, dataset)."""
    pending: dict[tuple[str, str, str], list[TrialSpec]] = {}
    pending_estimates: dict[tuple[str, str, str], list[EstimateSpec]] = {}
    snapshot_of: dict[tuple[str, str, str], SnapshotInfo] = {}
    for estimate in estimates:
        if estimate.job.key in todo:
            group_key = (estimate.model, estimate.task, estimate.dataset)
            pending.setdefault(group_key, [])
            pending_estimates.setdefault(group_key, []).append(estimate.job)
            snapshot_of[group_key] = estimate.snapshot
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
                estimates=tuple(pending_estimates.get((model_name, task_name, dataset_name), ())),
            )
        )
    return groups
