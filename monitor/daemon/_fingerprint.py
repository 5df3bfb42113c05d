"""What a poll compares: the newest complete snapshot candidate of every dataset and the version
of every model. Cheap: listings and stat-memoised digests, no decoding."""

from __future__ import annotations

from collections.abc import Hashable

from ..errors import MonitorError
from ..settings import Settings
from ..sources import list_snapshots, model_version

__all__ = ["inputs_fingerprint"]


def inputs_fingerprint(settings: Settings) -> tuple[Hashable, ...]:
    """A value that changes when a dataset gets a newer complete snapshot or a model new weights.

    A source that cannot be read contributes its error, so recovering from it counts as a change.
    """
    parts: list[Hashable] = []
    for model in settings.models:
        try:
            parts.append(
                (
                    "model",
                    model.name,
                    model_version(model, state_dir=settings.state_dir, config_dir=settings.config_dir).digest,
                )
            )
        except MonitorError as exc:
            parts.append(("model", model.name, f"error: {exc}"))
    for task in settings.tasks:
        for dataset in task.datasets:
            try:
                candidates = list_snapshots(task.name, dataset, state_dir=settings.state_dir)
            except MonitorError as exc:
                parts.append(("dataset", task.name, dataset.name, f"error: {exc}"))
                continue
            latest = candidates[-1] if candidates else None
            parts.append(
                ("dataset", task.name, dataset.name)
                + ((latest.snapshot, latest.timestamp, latest.sha256, latest.identity) if latest else (None,))
            )
    return tuple(parts)
