"""What a poll compares: the newest complete snapshot candidate of every dataset and the version
of every model. Cheap: listings and stat-memoised digests, no decoding."""

from __future__ import annotations

from collections.abc import Hashable

from .._text import shown
from ..errors import MonitorError
from ..settings import Settings
from ..sources import list_snapshots, model_version

__all__ = ["changes", "inputs_fingerprint"]


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
            if dataset.derive is not None:
                continue  # it follows its source dataset, whose snapshots are listed here
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


def changes(before: tuple[Hashable, ...] | None, after: tuple[Hashable, ...]) -> str:
    """What a poll found new, in words (names and versions only: no locations, no secrets)."""
    seen = set(before or ())
    said = [_describe(part) for part in after if part not in seen]
    return "new " + ", ".join(said) if said else "the inputs changed"


def _describe(part: Hashable) -> str:
    assert isinstance(part, tuple)
    if part[0] == "model":
        _, name, digest = part
        state = "unreadable" if str(digest).startswith("error:") else f"weights {str(digest)[:12]}"
        return f"model {name}: {state}"
    task, dataset = part[1], part[2]
    detail = part[3] if len(part) > 3 else None
    if isinstance(detail, str) and detail.startswith("error:"):
        return f"dataset {task}/{dataset}: unreadable"
    return f"dataset {task}/{dataset}: snapshot {shown(detail) if detail is not None else '(none)'}"
