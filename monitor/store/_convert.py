"""Turn the value types of `monitor.types` into table rows and back, refusing what cannot round-trip.

Scores, seconds and marginals must be finite numbers (or None where the type allows it): JSON has
no NaN, PostgreSQL's JSON type rejects it, and a NaN that silently became NULL would hide a bug
upstream (a diverged trial is scored as it is, usually at chance level; a cell without a score has
`score=None`). Trial `details` are the exception: a diverged trial may well report `loss=nan`, so
non-finite floats there are stored tagged (`{"__float__": "nan"}`) and come back as floats.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any, cast

from ..types import CellResult, CellStatus, DatasetNoise, ModelScore, Predictions, TrialResult, TrialStatus
from ._checks import check_finite, check_optional_finite
from ._records import RunRecord, RunState, ScorePoint, SnapshotRecord, SnapshotStatus
from ._schema import RunRow, SnapshotRow, TrialRow

__all__ = [
    "cell_result",
    "cell_values",
    "decode_details",
    "decode_predictions",
    "encode_details",
    "encode_predictions",
    "model_score",
    "model_values",
    "run_record",
    "snapshot_record",
    "snapshot_values",
    "trial_result",
    "trial_values",
]

_FLOAT_TAG = "__float__"


def _check_scores(scores: Mapping[str, Any], what: str) -> dict[str, Any]:
    checked: dict[str, Any] = {}
    for name, value in scores.items():
        if isinstance(value, Mapping):
            checked[name] = _check_scores(value, f"{what}[{name!r}]")
        else:
            checked[name] = check_finite(value, f"{what}[{name!r}]")
    return checked


def encode_details(details: Mapping[str, Any]) -> dict[str, Any]:
    """Make trial details JSON-safe: non-finite floats become `{"__float__": "nan"|"inf"|"-inf"}`.

    Only top-level values are tagged: nested ones (a `loss_curve`) hold None where not finite.
    """
    return {
        name: {_FLOAT_TAG: repr(value)} if isinstance(value, float) and not math.isfinite(value) else value
        for name, value in details.items()
    }


def decode_details(stored: Mapping[str, Any]) -> dict[str, Any]:
    """Undo `encode_details`."""
    return {
        name: float(value[_FLOAT_TAG]) if isinstance(value, dict) and _FLOAT_TAG in value else value
        for name, value in stored.items()
    }


# version 1: struct "<BI" (format version, number of classes), then the labels, then the
# predictions (16-bit little-endian each), all zlib-compressed: a test split of 640 images takes
# about 1 KB, labels in class order compress to almost nothing.
_PREDICTIONS_FORMAT = 1


def encode_predictions(predictions: Predictions | None) -> bytes | None:
    """The `trials.predictions` blob of a trial's test predictions."""
    if predictions is None:
        return None
    header = struct.pack("<BI", _PREDICTIONS_FORMAT, predictions.num_classes)
    return zlib.compress(header + predictions.labels + predictions.predicted, level=6)


def decode_predictions(blob: bytes | None) -> Predictions | None:
    """Undo `encode_predictions`; a blob this code cannot read counts as no predictions."""
    if blob is None:
        return None
    try:
        raw = zlib.decompress(blob)
        version, classes = struct.unpack_from("<BI", raw)
    except (zlib.error, struct.error):
        return None
    body = raw[struct.calcsize("<BI") :]
    if version != _PREDICTIONS_FORMAT or len(body) % 4:
        return None
    half = len(body) // 2
    return Predictions(body[:half], body[half:], classes)


def trial_values(
    result: TrialResult,
    *,
    run_id: str,
    model: str,
    task: str,
    dataset: str,
    snapshot: str,
    strategy: str,
    created_at: datetime,
) -> dict[str, Any]:
    """Column values of a `trials` row; only ok and diverged trials are results worth keeping."""
    if result.status not in ("ok", "diverged"):
        raise ValueError(
            f"trial {result.key} has status {result.status!r}: only 'ok' and 'diverged' trials are "
            f"stored (a failed trial is retried by the next run, so it must not be cached)"
        )
    return {
        "key": result.key,
        "model": model,
        "task": task,
        "dataset": dataset,
        "snapshot": snapshot,
        "strategy": strategy,
        "seed": result.seed,
        "status": result.status,
        "score": check_optional_finite(result.score, f"score of trial {result.key}"),
        "seconds": check_finite(result.seconds, f"seconds of trial {result.key}"),
        "error": result.error,
        "details": encode_details(result.details),
        "predictions": encode_predictions(result.predictions),
        "run_id": run_id,
        "created_at": created_at,
        "last_used_at": created_at,
    }


def trial_result(row: TrialRow | Any, *, with_predictions: bool = True) -> TrialResult:
    """The cached trial as the executor produced it; without its predictions (then `row` may be
    a selected row that lacks the column)."""
    return TrialResult(
        key=row.key,
        seed=row.seed,
        status=cast(TrialStatus, row.status),
        score=row.score,
        seconds=row.seconds,
        error=row.error,
        details=decode_details(row.details),
        predictions=decode_predictions(row.predictions) if with_predictions else None,
    )


def model_values(score: ModelScore, *, run_id: str, position: int) -> dict[str, Any]:
    """Column values of a `run_models` row."""
    what = f"model {score.model!r}"
    return {
        "run_id": run_id,
        "model": score.model,
        "position": position,
        "version": score.version,
        "digest": score.digest,
        "persistence": check_optional_finite(score.persistence, f"persistence of {what}"),
        "stderr": check_optional_finite(score.stderr, f"stderr of {what}"),
        "stderr_seeds": check_optional_finite(score.stderr_seeds, f"stderr_seeds of {what}"),
        "spread": check_optional_finite(score.spread, f"spread of {what}"),
        "worst_cell": list(score.worst_cell) if score.worst_cell is not None else None,
        "worst_cell_score": check_optional_finite(score.worst_cell_score, f"worst_cell_score of {what}"),
        "coverage": check_finite(score.coverage, f"coverage of {what}"),
        "cells_planned": score.cells_planned,
        "cells_scored": score.cells_scored,
        "task_scores": _check_scores(score.task_scores, f"task_scores of {what}"),
        "dataset_scores": _check_scores(score.dataset_scores, f"dataset_scores of {what}"),
        "strategy_scores": _check_scores(score.strategy_scores, f"strategy_scores of {what}"),
        "noise": {
            task: {
                dataset: {
                    "snapshot": noise.snapshot,
                    "seeds": check_optional_finite(noise.seeds, f"seed noise of {what}/{task}/{dataset}"),
                    "test": check_optional_finite(noise.test, f"test noise of {what}/{task}/{dataset}"),
                    "trials": noise.trials,
                }
                for dataset, noise in datasets.items()
            }
            for task, datasets in score.noise.items()
        },
    }


def model_score(row: Any) -> ModelScore:
    """The `ModelScore` a `run_models` row was written from."""
    worst = row.worst_cell
    return ModelScore(
        model=row.model,
        version=row.version,
        digest=row.digest,
        persistence=row.persistence,
        stderr=row.stderr,
        spread=row.spread,
        worst_cell=(str(worst[0]), str(worst[1]), str(worst[2])) if worst is not None else None,
        worst_cell_score=row.worst_cell_score,
        coverage=row.coverage,
        cells_planned=row.cells_planned,
        cells_scored=row.cells_scored,
        task_scores=dict(row.task_scores),
        dataset_scores={task: dict(scores) for task, scores in row.dataset_scores.items()},
        strategy_scores=dict(row.strategy_scores),
        # A row written before revision 0004 has no noise breakdown, and its stderr was seed-only.
        stderr_seeds=row.stderr_seeds if row.noise is not None else row.stderr,
        noise={
            task: {
                dataset: DatasetNoise(
                    str(entry["snapshot"]),
                    entry.get("seeds"),
                    entry.get("test"),
                    str(entry.get("trials", "")),
                )
                for dataset, entry in datasets.items()
            }
            for task, datasets in (row.noise or {}).items()
        },
    )


def cell_values(cell: CellResult, *, run_id: str, position: int) -> dict[str, Any]:
    """Column values of a `run_cells` row."""
    what = f"cell {cell.model}/{cell.task}/{cell.dataset}/{cell.strategy}"
    return {
        "run_id": run_id,
        "position": position,
        "model": cell.model,
        "task": cell.task,
        "dataset": cell.dataset,
        "snapshot": cell.snapshot,
        "strategy": cell.strategy,
        "status": cell.status,
        "score": check_optional_finite(cell.score, f"score of {what}"),
        "seed_scores": [check_finite(s, f"seed score of {what}") for s in cell.seed_scores],
        "error": cell.error,
        "seconds": check_finite(cell.seconds, f"seconds of {what}"),
        "keys": list(cell.keys),
    }


def cell_result(row: Any) -> CellResult:
    """The `CellResult` a `run_cells` row (an ORM object or a plain row) was written from."""
    return CellResult(
        model=row.model,
        task=row.task,
        dataset=row.dataset,
        snapshot=row.snapshot,
        strategy=row.strategy,
        status=cast(CellStatus, row.status),
        score=row.score,
        seed_scores=tuple(float(s) for s in row.seed_scores),
        seconds=row.seconds,
        error=row.error,
        keys=tuple(str(k) for k in row.keys),
    )


def run_record(
    row: RunRow,
    models: list[ModelScore] | None = None,
    cells: list[CellResult] | None = None,
    *,
    plan: dict[str, Any] | None = None,
) -> RunRecord:
    """A `RunRecord`, with the models, cells and plan given (none by default)."""
    return RunRecord(
        id=row.id,
        trigger=row.trigger,
        status=cast(RunState, row.status),
        started_at=row.started_at,
        finished_at=row.finished_at,
        seconds=row.seconds,
        error=row.error,
        config_digest=row.config_digest,
        plan=plan,
        models=models or [],
        cells=cells or [],
        owner=row.owner,
        heartbeat_at=row.heartbeat_at,
    )


def score_point(row: Any) -> ScorePoint:
    """A `ScorePoint` from a row of `run_models`' narrow columns (see `RunLog.persistence_history`)."""
    return ScorePoint(
        run_id=row.run_id,
        started_at=row.started_at,
        finished_at=row.finished_at,
        version=row.version,
        persistence=row.persistence,
        stderr=row.stderr,
        stderr_seeds=row.stderr_seeds,
        coverage=row.coverage,
    )


def snapshot_values(record: SnapshotRecord) -> dict[str, Any]:
    """Column values of a `snapshots` row, without `first_seen_at` (the store sets that)."""
    if record.status not in ("ok", "rejected"):
        raise ValueError(f"snapshot status must be 'ok' or 'rejected', got {record.status!r}")
    if record.status == "rejected" and not record.reason:
        raise ValueError(
            f"snapshot {record.task}/{record.dataset}/{record.snapshot} is rejected without a reason: "
            f"pass the SnapshotRejected reason code"
        )
    if record.skipped < 0:
        raise ValueError(f"skipped must be a count of images, got {record.skipped}")
    return {
        "task": record.task,
        "dataset": record.dataset,
        "snapshot": record.snapshot,
        "digest": record.digest,
        "source": record.source,
        "status": record.status,
        "reason": record.reason,
        "message": record.message,
        "n_train": record.n_train,
        "n_test": record.n_test,
        "n_classes": record.n_classes,
        "skipped": record.skipped,
        "timestamp": record.timestamp,
    }


def snapshot_record(row: SnapshotRow) -> SnapshotRecord:
    """The `SnapshotRecord` of a `snapshots` row, with its `first_seen_at`."""
    return SnapshotRecord(
        task=row.task,
        dataset=row.dataset,
        snapshot=row.snapshot,
        digest=row.digest,
        source=row.source,
        status=cast(SnapshotStatus, row.status),
        reason=row.reason,
        message=row.message,
        n_train=row.n_train,
        n_test=row.n_test,
        n_classes=row.n_classes,
        skipped=row.skipped,
        timestamp=row.timestamp,
        first_seen_at=row.first_seen_at,
    )
