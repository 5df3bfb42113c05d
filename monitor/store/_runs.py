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
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.orm import Session

from ..errors import RunTakenOver
from ..types import CELL_STATUSES, RUN_STATUSES, CellResult, EstimateResult, ModelScore
from ._checks import check_aware, check_finite, check_unique, is_hex_id
from ._convert import (
    cell_result,
    cell_values,
    model_score,
    model_values,
    run_record,
    score_point,
)
from ._counters import RUN_SECONDS_BUCKETS, add_counts, cumulative_buckets, duration_counts, read_counts
from ._estimates import estimate_rows
from ._records import RUN_TRIGGERS, RunRecord, ScorePoint
from ._schema import (
    RunCellRow,
    RunEstimateRow,
    RunModelRow,
    RunPlanRow,
    RunRequestRow,
    RunRow,
    TrialRow,
    utcnow,
)
from ._sessions import Sessions
from ._trials import chunks

__all__ = ["RunLog", "new_run_id"]

_FINISHED = ("completed", "partial")
_OWNER_LENGTH = 255  # runs.owner is String(255)


# Whole rows as plain tuples, not ORM objects: a 5,000-cell run reads several times faster so.
_CELLS = RunCellRow.__table__
_MODELS = RunModelRow.__table__


def new_run_id() -> str:
    """A fresh run id: 32 lowercase hex digits."""
    return uuid.uuid4().hex


def _aware(value: datetime | None, what: str) -> datetime:
    """`value` (timezone-aware), or now when it is None."""
    return utcnow() if value is None else check_aware(value, what)


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
        if not is_hex_id(run_id):
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
                run.config_digest, run.owner = config_digest, owner
                run.heartbeat_at = utcnow()
                session.merge(RunPlanRow(run_id=run_id, plan=plan))
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
            owner=owner,
            heartbeat_at=utcnow(),
        )
        with self._writing(f"begin run {run_id}") as session:
            if session.get(RunRow, run_id) is not None:
                raise ValueError(f"run {run_id} exists already: every run needs a new id")
            # A run asked of a standby (run_requests) is claimed by beginning it: one transaction,
            # so a leader that dies in between leaves either the request or the run, never neither.
            session.execute(delete(RunRequestRow).where(RunRequestRow.id == run_id))
            session.add(row)
            session.flush()
            session.add(RunPlanRow(run_id=run_id, plan=plan))

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
        query = (
            select(RunRow, RunPlanRow.plan)
            .outerjoin(RunPlanRow, RunPlanRow.run_id == RunRow.id)
            .where(RunRow.status == "running")
            .order_by(RunRow.started_at, RunRow.id)
        )
        with self._reading("list unfinished runs") as session:
            return [run_record(row, plan=plan or {}) for row, plan in session.execute(query)]

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
        owner: str | None = None,
        estimates: Sequence[EstimateResult] = (),
        probes: bool = False,
    ) -> None:
        """Write a run's outcome, its model scores, its cells (in the order given) and its
        transferability estimates atomically.

        `extra(session)` runs in the same transaction after those rows are flushed, so that alert
        states and outbox rows commit together with the run. If anything raises, nothing is
        written and the run stays `running`; the hook's own exception propagates unchanged.

        The same transaction drops the run's plan (its cells now say the same), counts the run and
        its cells into the `_total` counters, and marks the trials its cells (and the estimates
        its estimates) use as used by it. A `probes` run's model rows are in no model's history:
        they hold no P(M) (`latest_scores`, `score_history` and the P(M) rules skip them).

        With `owner`, the run must still be that owner's: a daemon that lost the lead, whose run
        the new leader resumed, gets `RunTakenOver` and writes nothing (a fencing check).
        """
        if status not in RUN_STATUSES:
            raise ValueError(f"a run finishes as one of {', '.join(RUN_STATUSES)}, got {status!r}")
        seconds = check_finite(seconds, f"seconds of run {run_id}")
        finished = _aware(finished_at, "finished_at")
        check_unique([s.model for s in scores], "model score", "in one run")
        check_unique([(c.model, c.task, c.dataset, c.strategy) for c in cells], "cell", "in one run")
        cell_rows = [cell_values(cell, run_id=run_id, position=i) for i, cell in enumerate(cells)]
        model_rows = [model_values(score, run_id=run_id, position=i) for i, score in enumerate(scores)]
        with self._writing(f"finish run {run_id}") as session:
            run = session.get(RunRow, run_id, with_for_update=True)
            if run is None:
                raise ValueError(f"no run {run_id} in the store: call begin_run first")
            if run.status != "running":
                raise ValueError(f"run {run_id} is already {run.status}: a run is finished once")
            if owner is not None and run.owner is not None and run.owner != owner:
                raise RunTakenOver(
                    f"run {run_id} is now run by {run.owner} (this daemon, {owner}, lost the lead): "
                    f"its outcome is left to that daemon"
                )
            run.status, run.finished_at, run.seconds, run.error = status, finished, seconds, error
            for row in model_rows:
                row.update(
                    started_at=run.started_at,
                    finished_at=finished,
                    # a probe run (cheap cells only) has no P(M): it is in no model's history
                    finished=status in _FINISHED and not probes,
                )
            if model_rows:
                session.execute(self._insert(RunModelRow), model_rows)
            if cell_rows:
                session.execute(self._insert(RunCellRow), cell_rows)
            if estimates:
                rows = estimate_rows(estimates, run_id=run_id, started_at=run.started_at)
                session.execute(self._insert(RunEstimateRow), rows)
            session.execute(delete(RunPlanRow).where(RunPlanRow.run_id == run_id))
            add_counts(session, self._insert, "runs", {status: 1})
            add_counts(session, self._insert, "cells", Counter(c.status for c in cells))
            add_counts(session, self._insert, "run_seconds", duration_counts(seconds))
            used = [k for c in cells for k in c.keys] + [e.key for e in estimates if e.key]
            _mark_used(session, used, run.started_at)
            session.flush()
            if extra is not None:
                extra(session)

    def get_run(self, run_id: str) -> RunRecord | None:
        """One run with its model scores and cells, both in plan order; None if unknown."""
        with self._reading(f"read run {run_id}") as session:
            row = session.get(RunRow, run_id)
            if row is None:
                return None
            models = session.execute(
                select(_MODELS).where(RunModelRow.run_id == run_id).order_by(RunModelRow.position)
            )
            cells = session.execute(
                select(_CELLS).where(RunCellRow.run_id == run_id).order_by(RunCellRow.position)
            )
            plan = session.scalar(select(RunPlanRow.plan).where(RunPlanRow.run_id == run_id))
            return run_record(
                row, [model_score(m) for m in models], [cell_result(c) for c in cells], plan=plan
            )

    def run_cells(self, run_id: str, *, model: str | None = None) -> list[CellResult]:
        """The cells of one run (of one model when given), in plan order ([] for an unknown run)."""
        query = select(_CELLS).where(RunCellRow.run_id == run_id).order_by(RunCellRow.position)
        if model is not None:
            query = query.where(RunCellRow.model == model)
        with self._reading(f"read the cells of run {run_id}") as session:
            return [cell_result(row) for row in session.execute(query)]

    def run_score(self, run_id: str, model: str) -> tuple[RunRecord, ModelScore] | None:
        """One model's score in one run, with the run (without models or cells); None if absent."""
        query = (
            select(RunRow, RunModelRow)
            .join(RunModelRow, RunModelRow.run_id == RunRow.id)
            .where(RunRow.id == run_id, RunModelRow.model == model)
        )
        with self._reading(f"read the score of {model} in run {run_id}") as session:
            found = session.execute(query).first()
            return (run_record(found[0]), model_score(found[1])) if found is not None else None

    def list_runs(
        self, *, limit: int = 50, status: str | None = None, with_models: bool = True
    ) -> list[RunRecord]:
        """The newest runs first, with their model scores (unless `with_models` is false), never
        with cells."""
        query = select(RunRow).order_by(RunRow.started_at.desc(), RunRow.id.desc()).limit(limit)
        if status is not None:
            query = query.where(RunRow.status == status)
        with self._reading("list runs") as session:
            runs = list(session.scalars(query))
            models: dict[str, list[ModelScore]] = {run.id: [] for run in runs}
            for chunk in chunks(list(models) if with_models else []):
                rows = session.execute(
                    select(_MODELS)
                    .where(RunModelRow.run_id.in_(chunk))
                    .order_by(RunModelRow.run_id, RunModelRow.position)
                )
                for row in rows:
                    models[row.run_id].append(model_score(row))
            return [run_record(run, models[run.id]) for run in runs]

    def latest_scores(self, models: Iterable[str] | None = None) -> dict[str, tuple[RunRecord, ModelScore]]:
        """Per model (sorted by name): its score in its latest completed or partial run.

        With `models`, only those (one index lookup each: what the caller shows, whatever the
        history holds); without, every model the store has scores for. The runs in these pairs
        carry neither models nor cells: the pair's score is the one asked for.
        """
        with self._reading("read the latest scores") as session:
            if models is not None:
                found: dict[str, tuple[RunRecord, ModelScore]] = {}
                for model in sorted(set(models)):
                    row = session.execute(self._history(model).limit(1)).first()
                    if row is not None:
                        found[model] = (run_record(row[0]), model_score(row[1]))
                return found
            rank = (
                func.row_number()
                .over(
                    partition_by=RunModelRow.model,
                    order_by=(RunModelRow.started_at.desc(), RunModelRow.run_id.desc()),
                )
                .label("rank")
            )
            ranked = (
                select(RunModelRow.run_id, RunModelRow.model, rank).where(RunModelRow.finished).subquery()
            )
            query = (
                select(RunRow, RunModelRow)
                .join(RunModelRow, RunModelRow.run_id == RunRow.id)
                .join(
                    ranked, and_(ranked.c.run_id == RunModelRow.run_id, ranked.c.model == RunModelRow.model)
                )
                .where(ranked.c.rank == 1)
                .order_by(RunModelRow.model)
            )
            return {m.model: (run_record(run), model_score(m)) for run, m in session.execute(query)}

    @staticmethod
    def _history(model: str, *, oldest_first: bool = False) -> Any:
        """The model's scores in its completed or partial runs, newest first: one index range."""
        order = (
            (RunModelRow.started_at, RunModelRow.run_id)
            if oldest_first
            else (RunModelRow.started_at.desc(), RunModelRow.run_id.desc())
        )
        return (
            select(RunRow, RunModelRow)
            .join(RunRow, RunRow.id == RunModelRow.run_id)
            .where(RunModelRow.model == model, RunModelRow.finished)
            .order_by(*order)
        )

    def score_history(self, model: str, *, limit: int = 100) -> list[tuple[RunRecord, ModelScore]]:
        """The model's scores in its last `limit` completed or partial runs, oldest first."""
        with self._reading(f"read the score history of {model}") as session:
            rows = session.execute(self._history(model).limit(limit))
            newest_first = [(run_record(run), model_score(m)) for run, m in rows]
        return newest_first[::-1]

    def first_score(self, model: str) -> tuple[RunRecord, ModelScore] | None:
        """The model's score in its first completed or partial run still stored (None if none)."""
        with self._reading(f"read the first score of {model}") as session:
            row = session.execute(self._history(model, oldest_first=True).limit(1)).first()
            return (run_record(row[0]), model_score(row[1])) if row is not None else None

    def persistence_history(self, model: str, *, limit: int = 100) -> list[ScorePoint]:
        """P(M) of the model's last `limit` completed or partial runs, oldest first: a few numbers
        a point, read from one index range (what plots and trends need, without the marginals)."""
        query = (
            select(
                RunModelRow.run_id,
                RunModelRow.started_at,
                RunModelRow.finished_at,
                RunModelRow.version,
                RunModelRow.persistence,
                RunModelRow.stderr,
                RunModelRow.stderr_seeds,
                RunModelRow.coverage,
            )
            .where(RunModelRow.model == model, RunModelRow.finished)
            .order_by(RunModelRow.started_at.desc(), RunModelRow.run_id.desc())
            .limit(limit)
        )
        with self._reading(f"read the P(M) history of {model}") as session:
            newest_first = [score_point(row) for row in session.execute(query)]
        return newest_first[::-1]

    def latest_cells(self, model: str) -> list[CellResult]:
        """The model's cells in its latest completed or partial run, in plan order ([] if none)."""
        latest = (
            select(RunModelRow.run_id)
            .where(RunModelRow.model == model, RunModelRow.finished)
            .order_by(RunModelRow.started_at.desc(), RunModelRow.run_id.desc())
            .limit(1)
        )
        with self._reading(f"read the latest cells of {model}") as session:
            run_id = session.scalar(latest)
            if run_id is None:
                return []
            rows = session.execute(
                select(_CELLS)
                .where(RunCellRow.run_id == run_id, RunCellRow.model == model)
                .order_by(RunCellRow.position)
            )
            return [cell_result(row) for row in rows]

    def run_counts(self) -> dict[str, int]:
        """Finished runs by status, ever (every status present, zero included; pruning keeps these)."""
        with self._reading("count runs") as session:
            counts = read_counts(session, "runs")
        return {status: int(counts.get(status, 0)) for status in RUN_STATUSES}

    def cell_counts(self) -> dict[str, int]:
        """Cells of finished runs by status, ever (every status present, zero included)."""
        with self._reading("count cells") as session:
            counts = read_counts(session, "cells")
        return {status: int(counts.get(status, 0)) for status in CELL_STATUSES}

    def run_duration_buckets(self, bounds: Sequence[float]) -> tuple[list[int], int, float]:
        """A histogram of finished runs' seconds (completed, partial or failed), ever.

        Returns the cumulative count of runs with seconds <= each bound (in the order of `bounds`),
        the count of all of them and the sum of their seconds: a Prometheus histogram's buckets,
        `_count` and `_sum`. The store keeps the buckets of `RUN_SECONDS_BUCKETS` (and infinity);
        another bound is a ValueError, as is a NaN.
        """
        for bound in bounds:
            if math.isnan(bound) or (math.isfinite(bound) and float(bound) not in RUN_SECONDS_BUCKETS):
                raise ValueError(
                    f"histogram bounds must be among the stored buckets {RUN_SECONDS_BUCKETS}, got "
                    f"{list(bounds)!r}"
                )
        with self._reading("read the run duration histogram") as session:
            counts = read_counts(session, "run_seconds")
        return cumulative_buckets(counts, bounds), int(counts.get("count", 0)), float(counts.get("sum", 0.0))

    def last_run_time(self) -> datetime | None:
        """When the last run finished, whatever its outcome (None if no run has finished)."""
        return self._last_finished(RUN_STATUSES, "read the time of the last run")

    def last_success_time(self) -> datetime | None:
        """When the last completed or partial run finished (None if none has)."""
        return self._last_finished(_FINISHED, "read the time of the last successful run")

    def _last_finished(self, statuses: Sequence[str], what: str) -> datetime | None:
        # One index lookup per status (status, finished_at), whatever the history holds.
        with self._reading(what) as session:
            times = [
                session.scalar(select(func.max(RunRow.finished_at)).where(RunRow.status == status))
                for status in statuses
            ]
        known = [t for t in times if t is not None]
        return max(known) if known else None


def _mark_used(session: Session, keys: list[str], started_at: datetime) -> None:
    """Record that a run started at `started_at` uses the trials `keys` (see trials.last_used_at)."""
    for chunk in chunks(sorted(set(keys))):
        session.execute(
            update(TrialRow)
            .where(
                TrialRow.key.in_(chunk),
                or_(TrialRow.last_used_at.is_(None), TrialRow.last_used_at < started_at),
            )
            .values(last_used_at=started_at)
            .execution_options(synchronize_session=False)
        )
