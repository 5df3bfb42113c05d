"""The run log: runs, the model scores and cells they produced, and the queries over them.

A run is `running` from `begin_run` until `finish_run` writes its outcome, its model scores and
its cells in one transaction; a run still `running` after a crash is found by `unfinished_runs`
and resumed from its plan (`begin_run(..., resume=True)`). While it runs, its owner ("hostname:pid")
calls `touch_run` now and then: a `heartbeat_at` long past says the owner is gone. "Latest" always
means the latest *finished* run (completed or partial) by start time: a failed run says nothing
about a model's persistence.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, select, update
from sqlalchemy.orm import Session

from ..types import CELL_STATUSES, RUN_STATUSES, CellResult, ModelScore
from ._convert import cell_result, cell_values, check_finite, model_score, model_values, run_record
from ._records import RUN_TRIGGERS, RunRecord
from ._schema import ModelVersionRow, RunCellRow, RunModelRow, RunRow, utcnow
from ._sessions import Sessions
from ._trials import chunks

__all__ = ["RunLog", "new_run_id"]

_FINISHED = ("completed", "partial")
_OWNER_LENGTH = 255  # runs.owner is String(255)
_RUN_ID = re.compile(r"[0-9a-f]{32}")


def new_run_id() -> str:
    """A fresh run id: 32 lowercase hex digits."""
    return uuid.uuid4().hex


def _aware(value: datetime | None, what: str) -> datetime:
    if value is None:
        return utcnow()
    if value.tzinfo is None:
        raise ValueError(f"{what} must be timezone-aware (UTC), got the naive {value.isoformat()}")
    return value


class RunLog(Sessions):
    """Runs and their results."""

    def begin_run(
        self,
        run_id: str,
        *,
        trigger: str,
        config_digest: str,
        plan: dict[str, Any],
        owner: str | None = None,
        started_at: datetime | None = None,
        resume: bool = False,
    ) -> None:
        """Record a run as `running`, with the plan that lets it be resumed after a crash.

        `owner` is the "hostname:pid" of the process running it; `heartbeat_at` starts now. With
        `resume=True` the run must exist and still be `running` (an unfinished run taken over): its
        plan, config_digest and owner are replaced and its heartbeat set to now, while its trigger
        and started_at stay. Without it, an id that exists already is a ValueError.
        """
        if not _RUN_ID.fullmatch(run_id):
            raise ValueError(f"run id must be 32 lowercase hex digits (see new_run_id()), got {run_id!r}")
        if trigger not in RUN_TRIGGERS:
            raise ValueError(f"run trigger must be one of {', '.join(RUN_TRIGGERS)}, got {trigger!r}")
        if owner is not None and not 0 < len(owner) <= _OWNER_LENGTH:
            raise ValueError(
                f"the owner of run {run_id} must be 1 to {_OWNER_LENGTH} characters "
                f"(hostname:pid), got {len(owner)}"
            )
        try:
            json.dumps(plan, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"the plan of run {run_id} must be plain JSON: {exc}") from None
        started = _aware(started_at, "started_at")
        if resume:
            with self._writing(f"resume run {run_id}") as session:
                run = session.get(RunRow, run_id, with_for_update=True)
                if run is None:
                    raise ValueError(f"no run {run_id} to resume: only an unfinished run can be resumed")
                if run.status != "running":
                    raise ValueError(
                        f"run {run_id} is already {run.status}: only a running (unfinished) run can be resumed"
                    )
                run.plan, run.config_digest, run.owner = plan, config_digest, owner
                run.heartbeat_at = utcnow()
            return
        row = RunRow(
            id=run_id,
            trigger=trigger,
            status="running",
            started_at=started,
            finished_at=None,
            seconds=None,
            config_digest=config_digest,
            error=None,
            plan=plan,
            owner=owner,
            heartbeat_at=utcnow(),
        )
        with self._writing(f"begin run {run_id}") as session:
            if session.get(RunRow, run_id) is not None:
                raise ValueError(f"run {run_id} exists already: every run needs a new id")
            session.add(row)

    def touch_run(self, run_id: str) -> None:
        """Set the run's `heartbeat_at` to now (one UPDATE by primary key: cheap enough to call often).

        An id not in the store is left alone rather than refused: a heartbeat may fire for a run
        that is still being planned, before its `begin_run`. A finished run may be touched too (a
        heartbeat racing `finish_run`): the time only says that its process was alive then.
        """
        statement = (
            update(RunRow)
            .where(RunRow.id == run_id)
            .values(heartbeat_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        with self._writing(f"touch run {run_id}") as session:
            session.execute(statement)

    def unfinished_runs(self) -> list[RunRecord]:
        """Runs still marked `running` (a crash or a kill left them so), oldest first."""
        with self._reading("list unfinished runs") as session:
            rows = session.scalars(
                select(RunRow).where(RunRow.status == "running").order_by(RunRow.started_at, RunRow.id)
            )
            return [run_record(row) for row in rows]

    def finish_run(
        self,
        run_id: str,
        *,
        status: str,
        seconds: float,
        scores: list[ModelScore],
        cells: list[CellResult],
        error: str | None = None,
        extra: Callable[[Session], None] | None = None,
        finished_at: datetime | None = None,
    ) -> None:
        """Write a run's outcome, its model scores and its cells (in the order given) atomically.

        `extra(session)` runs in the same transaction after those rows are flushed, so that alert
        states and outbox rows commit together with the run. If anything raises, nothing is
        written and the run stays `running`; the hook's own exception propagates unchanged.
        """
        if status not in RUN_STATUSES:
            raise ValueError(f"a run finishes as one of {', '.join(RUN_STATUSES)}, got {status!r}")
        seconds = check_finite(seconds, f"seconds of run {run_id}")
        finished = _aware(finished_at, "finished_at")
        _refuse_duplicates([s.model for s in scores], "model score")
        _refuse_duplicates([(c.model, c.task, c.dataset, c.strategy) for c in cells], "cell")
        cell_rows = [cell_values(cell, run_id=run_id, position=i) for i, cell in enumerate(cells)]
        # The digest is filled in below, once the transaction can look up the model versions.
        model_rows = [
            model_values(score, run_id=run_id, position=i, digest="") for i, score in enumerate(scores)
        ]
        with self._writing(f"finish run {run_id}") as session:
            run = session.get(RunRow, run_id, with_for_update=True)
            if run is None:
                raise ValueError(f"no run {run_id} in the store: call begin_run first")
            if run.status != "running":
                raise ValueError(f"run {run_id} is already {run.status}: a run is finished once")
            run.status, run.finished_at, run.seconds, run.error = status, finished, seconds, error
            digests = _digests(session, scores)
            for row in model_rows:
                row["digest"] = digests[row["model"]]
            if model_rows:
                session.execute(self._insert(RunModelRow), model_rows)
            if cell_rows:
                session.execute(self._insert(RunCellRow), cell_rows)
            session.flush()
            if extra is not None:
                extra(session)

    def get_run(self, run_id: str) -> RunRecord | None:
        """One run with its model scores and cells, both in plan order; None if unknown."""
        with self._reading(f"read run {run_id}") as session:
            row = session.get(RunRow, run_id)
            if row is None:
                return None
            models = session.scalars(
                select(RunModelRow).where(RunModelRow.run_id == run_id).order_by(RunModelRow.position)
            )
            cells = session.scalars(
                select(RunCellRow).where(RunCellRow.run_id == run_id).order_by(RunCellRow.position)
            )
            return run_record(row, [model_score(m) for m in models], [cell_result(c) for c in cells])

    def list_runs(self, *, limit: int = 50, status: str | None = None) -> list[RunRecord]:
        """The newest runs first, with their model scores but without cells."""
        query = select(RunRow).order_by(RunRow.started_at.desc(), RunRow.id.desc()).limit(limit)
        if status is not None:
            query = query.where(RunRow.status == status)
        with self._reading("list runs") as session:
            runs = list(session.scalars(query))
            models: dict[str, list[ModelScore]] = {run.id: [] for run in runs}
            for chunk in chunks(list(models)):
                rows = session.scalars(
                    select(RunModelRow)
                    .where(RunModelRow.run_id.in_(chunk))
                    .order_by(RunModelRow.run_id, RunModelRow.position)
                )
                for row in rows:
                    models[row.run_id].append(model_score(row))
            return [run_record(run, models[run.id]) for run in runs]

    def latest_scores(self) -> dict[str, tuple[RunRecord, ModelScore]]:
        """Per model (sorted by name): its score in its latest completed or partial run.

        The runs in these pairs carry neither models nor cells: the pair's score is the one asked for.
        """
        rank = (
            func.row_number()
            .over(partition_by=RunModelRow.model, order_by=(RunRow.started_at.desc(), RunRow.id.desc()))
            .label("rank")
        )
        ranked = (
            select(RunModelRow.run_id, RunModelRow.model, rank)
            .join(RunRow, RunRow.id == RunModelRow.run_id)
            .where(RunRow.status.in_(_FINISHED))
            .subquery()
        )
        query = (
            select(RunRow, RunModelRow)
            .join(RunModelRow, RunModelRow.run_id == RunRow.id)
            .join(ranked, and_(ranked.c.run_id == RunModelRow.run_id, ranked.c.model == RunModelRow.model))
            .where(ranked.c.rank == 1)
            .order_by(RunModelRow.model)
        )
        with self._reading("read the latest scores") as session:
            return {m.model: (run_record(run), model_score(m)) for run, m in session.execute(query)}

    def score_history(self, model: str, *, limit: int = 100) -> list[tuple[RunRecord, ModelScore]]:
        """The model's scores in its last `limit` completed or partial runs, oldest first."""
        query = (
            select(RunRow, RunModelRow)
            .join(RunModelRow, RunModelRow.run_id == RunRow.id)
            .where(RunModelRow.model == model, RunRow.status.in_(_FINISHED))
            .order_by(RunRow.started_at.desc(), RunRow.id.desc())
            .limit(limit)
        )
        with self._reading(f"read the score history of {model}") as session:
            newest_first = [(run_record(run), model_score(m)) for run, m in session.execute(query)]
        return newest_first[::-1]

    def latest_cells(self, model: str) -> list[CellResult]:
        """The model's cells in its latest completed or partial run, in plan order ([] if none)."""
        latest = (
            select(RunRow.id)
            .join(RunModelRow, RunModelRow.run_id == RunRow.id)
            .where(RunModelRow.model == model, RunRow.status.in_(_FINISHED))
            .order_by(RunRow.started_at.desc(), RunRow.id.desc())
            .limit(1)
        )
        with self._reading(f"read the latest cells of {model}") as session:
            run_id = session.scalar(latest)
            if run_id is None:
                return []
            rows = session.scalars(
                select(RunCellRow)
                .where(RunCellRow.run_id == run_id, RunCellRow.model == model)
                .order_by(RunCellRow.position)
            )
            return [cell_result(row) for row in rows]

    def run_counts(self) -> dict[str, int]:
        """Finished runs by status (every status present, zero included)."""
        query = (
            select(RunRow.status, func.count()).where(RunRow.status.in_(RUN_STATUSES)).group_by(RunRow.status)
        )
        with self._reading("count runs") as session:
            counts = {status: count for status, count in session.execute(query)}
        return {status: counts.get(status, 0) for status in RUN_STATUSES}

    def cell_counts(self) -> dict[str, int]:
        """Cells of all runs by status (every status present, zero included)."""
        query = select(RunCellRow.status, func.count()).group_by(RunCellRow.status)
        with self._reading("count cells") as session:
            counts = {status: count for status, count in session.execute(query)}
        return {status: counts.get(status, 0) for status in CELL_STATUSES}

    def run_duration_buckets(self, bounds: Sequence[float]) -> tuple[list[int], int, float]:
        """A histogram of finished runs' seconds (completed, partial or failed), in one query.

        Returns the cumulative count of runs with seconds <= each bound (in the order of `bounds`),
        the count of all of them and the sum of their seconds: a Prometheus histogram's buckets,
        `_count` and `_sum`. Raises ValueError for a NaN bound.
        """
        for bound in bounds:
            if math.isnan(bound):
                raise ValueError(f"histogram bounds must be numbers, got {list(bounds)!r}")
        # Infinite bounds are counted here, not bound as parameters: not every driver takes them.
        finite = [float(b) for b in bounds if math.isfinite(b)]
        columns: list[ColumnElement[Any]] = [func.count(), func.coalesce(func.sum(RunRow.seconds), 0.0)]
        columns += [
            func.coalesce(func.sum(case((RunRow.seconds <= bound, 1), else_=0)), 0) for bound in finite
        ]
        query = select(*columns).where(RunRow.status.in_(RUN_STATUSES), RunRow.seconds.is_not(None))
        with self._reading("read the run duration histogram") as session:
            total, seconds, *counts = session.execute(query).one()
        by_bound = dict(zip(finite, counts, strict=True))
        cumulative = [
            int(by_bound[b]) if math.isfinite(b) else (int(total) if b > 0 else 0) for b in map(float, bounds)
        ]
        return cumulative, int(total), float(seconds)

    def last_run_time(self) -> datetime | None:
        """When the last run finished, whatever its outcome (None if no run has finished)."""
        query = select(func.max(RunRow.finished_at)).where(RunRow.status.in_(RUN_STATUSES))
        with self._reading("read the time of the last run") as session:
            return session.scalar(query)

    def last_success_time(self) -> datetime | None:
        """When the last completed or partial run finished (None if none has)."""
        query = select(func.max(RunRow.finished_at)).where(RunRow.status.in_(_FINISHED))
        with self._reading("read the time of the last successful run") as session:
            return session.scalar(query)


def _refuse_duplicates(names: list[Any], what: str) -> None:
    seen: set[Any] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{what} {name!r} appears twice in one run")
        seen.add(name)


def _digests(session: Session, scores: list[ModelScore]) -> dict[str, str]:
    """The full weights digest behind each score's short version, from the recorded model versions.

    A version that was never recorded keeps its short form: it is a prefix of the digest.
    """
    models = {score.model for score in scores}
    known: dict[tuple[str, str], str] = {}
    if models:
        rows = session.execute(
            select(ModelVersionRow.model, ModelVersionRow.digest).where(ModelVersionRow.model.in_(models))
        )
        for model, digest in rows:
            known[(model, digest[:12] if digest else "factory")] = digest
    return {
        score.model: known.get(
            (score.model, score.version), "" if score.version == "factory" else score.version
        )
        for score in scores
    }
