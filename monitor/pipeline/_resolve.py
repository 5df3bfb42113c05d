"""Resolve what a run evaluates: each model's version, each dataset's snapshot and decoded data.

A dataset uses its newest complete snapshot that is usable. A snapshot that is rejected (bad
archive, too few classes, …) is recorded with its reason and the next older one is tried: a bad
snapshot never replaces the last good one. A derived dataset (`derive:`) uses the snapshot its
source dataset uses, under a digest of its own; it is unavailable when its source is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from .._text import shown
from ..alerts import small_test_split
from ..data import PreparedData, derived_data, derived_digest, prepare_snapshot, shift_text
from ..errors import DataError, MonitorError, SnapshotRejected, SourceError
from ..settings import DatasetSpec, Settings, TaskSpec, redact_url
from ..sources import SnapshotLimits, list_snapshots, materialize, model_version, release_snapshot
from ..store import SnapshotRecord, Store
from ..types import ModelVersion, SnapshotInfo, Unavailable
from ._observer import Observer

__all__ = ["Resolution", "resolve"]


@dataclass
class Resolution:
    versions: dict[str, ModelVersion | Unavailable] = field(default_factory=dict)  # by model
    snapshots: dict[tuple[str, str], SnapshotInfo | Unavailable] = field(
        default_factory=dict
    )  # (task, dataset)
    data: dict[tuple[str, str, str], PreparedData] = field(default_factory=dict)  # (model, task, dataset)


def resolve(settings: Settings, store: Store, observer: Observer) -> Resolution:
    resolution = Resolution()
    for model in settings.models:
        try:
            version = model_version(model, state_dir=settings.state_dir, config_dir=settings.config_dir)
        except SourceError as exc:
            observer.warn(f"model {model.name}: {exc}")
            resolution.versions[model.name] = Unavailable(str(exc))
            continue
        store.record_model_version(version)
        resolution.versions[model.name] = version
    sizes = sorted({m.image_size for m in settings.models})
    for task in settings.tasks:
        chosen: dict[str, tuple[SnapshotInfo, dict[int, PreparedData]] | Unavailable] = {}
        # Sources first: a derived dataset takes what its source dataset chose.
        for dataset in sorted(task.datasets, key=lambda d: d.derive is not None):
            if dataset.derive is None:
                found = _choose_snapshot(settings, task, dataset, sizes, store, observer)
            else:
                found = _derive(task, dataset, chosen[dataset.derive.from_], store)
            chosen[dataset.name] = found
            if isinstance(found, Unavailable):
                resolution.snapshots[(task.name, dataset.name)] = found
                continue
            info, prepared = found
            resolution.snapshots[(task.name, dataset.name)] = info
            for model in settings.models:
                resolution.data[(model.name, task.name, dataset.name)] = prepared[model.image_size]
    return resolution


def _derive(
    task: TaskSpec,
    dataset: DatasetSpec,
    source: tuple[SnapshotInfo, dict[int, PreparedData]] | Unavailable,
    store: Store,
) -> tuple[SnapshotInfo, dict[int, PreparedData]] | Unavailable:
    """A derived dataset's snapshot and entries: its source's, under its own digest (the worker
    corrupts the images; nothing is decoded here)."""
    derive = dataset.derive
    assert derive is not None
    origin = f"{task.name}/{derive.from_}"
    if isinstance(source, Unavailable):
        return Unavailable(
            f"dataset {task.name}/{dataset.name} is derived from {origin}, which is unavailable: {source}"
        )
    base, prepared = source
    info = SnapshotInfo(
        task=task.name,
        dataset=dataset.name,
        snapshot=base.snapshot,  # the same id: the snapshot in use is the source's
        digest=derived_digest(base.digest, derive),
        root=base.root,
        source=f"derived from {origin}: {shift_text(derive)}",
        timestamp=base.timestamp,
    )
    first = next(iter(prepared.values()))
    store.record_snapshot(
        SnapshotRecord(
            task=task.name,
            dataset=dataset.name,
            snapshot=info.snapshot,
            digest=info.digest,
            source=info.source,
            status="ok",
            n_train=first.n_train,
            n_test=first.n_test,
            n_classes=len(first.classes),
            skipped=0,  # the source's undecodable images are counted under the source
            timestamp=datetime.fromtimestamp(info.timestamp, UTC),
        )
    )
    return info, {size: derived_data(entry, derive, info.digest, task) for size, entry in prepared.items()}


def _choose_snapshot(
    settings: Settings,
    task: TaskSpec,
    dataset: DatasetSpec,
    sizes: list[int],
    store: Store,
    observer: Observer,
) -> tuple[SnapshotInfo, dict[int, PreparedData]] | Unavailable:
    where = f"dataset {task.name}/{dataset.name}"
    try:
        candidates = list_snapshots(task.name, dataset, state_dir=settings.state_dir)
    except SourceError as exc:
        observer.warn(str(exc))
        return Unavailable(str(exc))
    problems: list[str] = []
    limits = SnapshotLimits.from_settings(settings.limits)
    for candidate in reversed(candidates):  # newest first
        try:
            info = materialize(candidate, state_dir=settings.state_dir, limits=limits)
        except SnapshotRejected as exc:
            _reject(store, task, dataset, candidate.snapshot, "", exc, observer)
            problems.append(f"{shown(candidate.snapshot)}: {exc}")
            continue
        except SourceError as exc:
            observer.warn(f"{where}: snapshot {shown(candidate.snapshot)} unavailable: {exc}")
            problems.append(f"{shown(candidate.snapshot)}: {exc}")
            continue
        try:
            observer.stage(f"preparing {where} snapshot {shown(info.snapshot)}")
            prepared = {
                size: prepare_snapshot(
                    info,
                    task,
                    size,
                    cache_dir=settings.state_dir / "cache",
                    max_image_pixels=settings.limits.max_image_pixels,
                )
                for size in sizes
            }
        except SnapshotRejected as exc:
            _reject(store, task, dataset, info.snapshot, info.digest, exc, observer, info)
            release_snapshot(info, state_dir=settings.state_dir)  # its extraction: disk, nothing more
            problems.append(f"{shown(info.snapshot)}: {exc}")
            continue
        except (DataError, OSError, MonitorError) as exc:
            observer.warn(f"{where}: snapshot {shown(info.snapshot)} could not be prepared: {exc}")
            problems.append(f"{shown(info.snapshot)}: {exc}")
            continue
        first = prepared[sizes[0]]
        if first.skipped:
            names = ", ".join(shown(path) for path, _ in first.skipped[:3])
            more = f" and {len(first.skipped) - 3} more" if len(first.skipped) > 3 else ""
            observer.warn(
                f"{where}: snapshot {shown(info.snapshot)}: skipped {len(first.skipped)} undecodable "
                f"image(s): {names}{more}"
            )
        seen_before = store.snapshot_record(task.name, dataset.name, info.snapshot, info.digest) is not None
        store.record_snapshot(
            SnapshotRecord(
                task=task.name,
                dataset=dataset.name,
                snapshot=info.snapshot,
                digest=info.digest,
                source=redact_url(dataset.location),
                status="ok",
                n_train=first.n_train,
                n_test=first.n_test,
                n_classes=len(first.classes),
                skipped=len(first.skipped),
                timestamp=datetime.fromtimestamp(info.timestamp, UTC),
            )
        )
        if candidate is not candidates[-1]:
            observer.warn(f"{where}: using snapshot {shown(info.snapshot)}, the newest usable one")
        too_small = small_test_split(first.n_test)
        if too_small is not None and not seen_before and any(r.kind == "drop" for r in settings.alerts.rules):
            observer.warn(f"{where}: snapshot {shown(info.snapshot)}: {too_small}")  # once per snapshot
        return info, prepared
    if problems:
        return Unavailable(f"no usable snapshot for {where}: " + "; ".join(problems))
    marker = (
        f" (a snapshot folder counts once it holds {dataset.ready_marker})" if dataset.ready_marker else ""
    )
    return Unavailable(f"no complete snapshot yet in {redact_url(dataset.location)} for {where}{marker}")


def _reject(
    store: Store,
    task: TaskSpec,
    dataset: DatasetSpec,
    snapshot: str,
    digest: str,
    exc: SnapshotRejected,
    observer: Observer,
    info: SnapshotInfo | None = None,
) -> None:
    observer.warn(
        f"dataset {task.name}/{dataset.name}: snapshot {shown(snapshot)} rejected ({exc.reason}): {exc}"
    )
    store.record_snapshot(
        SnapshotRecord(
            task=task.name,
            dataset=dataset.name,
            snapshot=snapshot,
            digest=digest,
            source=redact_url(dataset.location),
            status="rejected",
            reason=exc.reason,
            message=str(exc),
            timestamp=datetime.fromtimestamp(info.timestamp, UTC) if info else None,
        )
    )
