"""Retention: what the store lets go, in small batches, and what it never does.

Four things age out, each by its own clock (`RetentionPolicy`):

    cells          a finished run's cells (its per-cell detail) once the run started before
                   `cells_before`, unless it is among the latest `keep_runs` or protected
    trials         cached fine-tunes that no run still holding its cells, and no plan of a run
                   still running, can be using: those last used before the oldest such run
    runs           a run with its P(M) (run_models) once it started before `history_before` and its
                   cells are gone, unless it is among the latest, protected, or some model's first
                   stored run (what the `first` baseline compares with)
    notifications  delivered and dropped outbox rows created before `notifications_before`

A run still running is never touched, nor are its plan's trials, so resuming it still finds
them; the latest runs keep their cells and their trials, so the next run's cache still hits.
Each batch is its own short transaction, counted in `counters` (name `pruned`) as it commits:
a prune that stops half-way has removed only whole batches and counted exactly those.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, Select, delete, exists, func, or_, select
from sqlalchemy.orm import Session

from ._checks import check_aware
from ._counters import add_counts, read_counts
from ._outbox import ended_before
from ._schema import OutboxRow, RunCellRow, RunModelRow, RunPlanRow, RunRow, TrialRow
from ._sessions import Sessions
from ._trials import chunks

__all__ = ["PRUNED_KINDS", "PruneReport", "Retention", "RetentionPolicy"]

PRUNED_KINDS = ("cells", "trials", "runs", "notifications")
_TRIALS_PER_RUN = 1000  # a trial batch is this many times the run batch


@dataclass(frozen=True)
class RetentionPolicy:
    """Absolute cut-offs (timezone-aware) and the runs that are never pruned."""

    cells_before: datetime
    keep_runs: int
    history_before: datetime | None  # None: P(M) history is kept forever
    notifications_before: datetime
    batch: int = 5
    protect: frozenset[str] = field(default_factory=frozenset)  # run ids (pinned baselines)

    def __post_init__(self) -> None:
        check_aware(self.cells_before, "cells_before")
        check_aware(self.notifications_before, "notifications_before")
        if self.history_before is not None:
            check_aware(self.history_before, "history_before")
        if self.keep_runs < 1:
            raise ValueError(f"keep_runs must be at least 1 (the latest run), got {self.keep_runs}")
        if self.batch < 1:
            raise ValueError(f"batch must be at least 1, got {self.batch}")


@dataclass(frozen=True)
class PruneReport:
    """What a prune removed (or, dry, would remove)."""

    cell_runs: int  # runs whose cells went
    cells: int
    trials: int
    runs: int  # runs deleted with their P(M)
    notifications: int
    seconds: float
    dry_run: bool = False

    @property
    def nothing(self) -> bool:
        return not (self.cells or self.cell_runs or self.trials or self.runs or self.notifications)


def _has_cells() -> Any:
    return exists().where(RunCellRow.run_id == RunRow.id)


class Retention(Sessions):
    """Pruning by a `RetentionPolicy`."""

    def prune(self, policy: RetentionPolicy, *, dry_run: bool = False) -> PruneReport:
        """Apply `policy` in batches (or, with `dry_run`, count what it would remove)."""
        started = time.monotonic()
        if dry_run:
            return self._count(policy, started)
        with self._reading("find the runs retention keeps") as session:
            kept, kept_runs = self._latest(session, policy)
        cell_runs = cells = 0
        for run_ids in self._batches(
            self._aged(policy.cells_before, kept, with_cells=True).limit(policy.batch)
        ):
            removed = self._prune_batch(
                "prune the cells of old runs",
                lambda s, ids=run_ids: _rowcount(s, delete(RunCellRow).where(RunCellRow.run_id.in_(ids))),
                "cells",
            )
            cell_runs, cells = cell_runs + len(run_ids), cells + removed
        trials = 0
        horizon, planned = self._trial_horizon(policy)
        size = policy.batch * _TRIALS_PER_RUN
        for keys in self._batches(self._trial_candidates(horizon).limit(size), exclude=planned):
            trials += self._prune_batch(
                "prune unused trials",
                lambda s, keys=keys: _rowcount(
                    s, delete(TrialRow).where(TrialRow.key.in_(keys), TrialRow.last_used_at < horizon)
                ),
                "trials",
            )
        runs = 0
        if (history_before := policy.history_before) is not None:
            aged = self._aged(history_before, kept_runs, with_cells=False).limit(policy.batch)
            for run_ids in self._batches(aged):
                runs += self._prune_batch(
                    "prune old runs",
                    lambda s, ids=run_ids: _rowcount(s, delete(RunRow).where(RunRow.id.in_(ids))),
                    "runs",
                )
        notifications = self._prune_batch(
            "prune old notifications",
            lambda s: _rowcount(s, delete(OutboxRow).where(*ended_before(policy.notifications_before))),
            "notifications",
        )
        return PruneReport(cell_runs, cells, trials, runs, notifications, time.monotonic() - started)

    def pruned_counts(self) -> dict[str, int]:
        """Rows retention has deleted, ever, by kind (every kind present, zero included)."""
        with self._reading("count pruned rows") as session:
            counts = read_counts(session, "pruned")
        return {kind: int(counts.get(kind, 0)) for kind in PRUNED_KINDS}

    # -- the candidates -----------------------------------------------------------------------

    def _latest(self, session: Session, policy: RetentionPolicy) -> tuple[set[str], set[str]]:
        """The runs that keep their cells (the latest `keep_runs` finished runs and the protected
        ones), and those that keep their P(M) as well: these and each model's first run."""
        latest = session.scalars(
            select(RunRow.id)
            .where(RunRow.status != "running")
            .order_by(RunRow.started_at.desc(), RunRow.id.desc())
            .limit(policy.keep_runs)
        )
        kept = set(latest) | set(policy.protect)
        firsts = set()
        for model in session.scalars(select(RunModelRow.model).distinct()):
            first = session.scalar(
                select(RunModelRow.run_id)
                .where(RunModelRow.model == model, RunModelRow.finished)
                .order_by(RunModelRow.started_at, RunModelRow.run_id)
                .limit(1)
            )
            if first is not None:
                firsts.add(first)
        return kept, kept | firsts

    @staticmethod
    def _aged(before: datetime, kept: Collection[str], *, with_cells: bool) -> Select[Any]:
        """Finished runs started before `before`, not kept, with (or without) cells; oldest first."""
        return (
            select(RunRow.id)
            .where(
                RunRow.status != "running",
                RunRow.started_at < before,
                RunRow.id.not_in(sorted(kept)),
                _has_cells() if with_cells else ~_has_cells(),
            )
            .order_by(RunRow.started_at, RunRow.id)
        )

    def _trial_horizon(
        self, policy: RetentionPolicy, *, leaving: Collection[str] = ()
    ) -> tuple[datetime, set[str]]:
        """Trials last used before the horizon are unused; the keys planned by running runs stay.

        The horizon is the start of the oldest run that keeps its cells (or is running), and never
        later than the cell window's edge. `leaving`: runs that lose their cells (for a dry run).
        """
        with self._reading("find the oldest run that keeps its cells") as session:
            holding = (
                select(func.min(RunRow.started_at))
                .where(or_(RunRow.status == "running", _has_cells()))
                .where(RunRow.id.not_in(sorted(leaving)))
            )
            oldest = session.scalar(holding)
            planned: set[str] = set()
            for plan in session.scalars(
                select(RunPlanRow.plan)
                .join(RunRow, RunRow.id == RunPlanRow.run_id)
                .where(RunRow.status == "running")
            ):
                for cell in plan.get("cells", []) if isinstance(plan, dict) else []:
                    planned.update(k for k in cell.get("keys", []) if isinstance(k, str))
        horizon = policy.cells_before if oldest is None else min(oldest, policy.cells_before)
        return horizon, planned

    @staticmethod
    def _trial_candidates(horizon: datetime) -> Select[Any]:
        return (
            select(TrialRow.key)
            .where(TrialRow.last_used_at < horizon)
            .order_by(TrialRow.last_used_at, TrialRow.key)
        )

    # -- batches ------------------------------------------------------------------------------

    def _batches(self, query: Select[Any], *, exclude: Collection[str] = ()) -> Iterator[list[str]]:
        """The candidates of `query` a batch at a time, until none is left.

        Each batch is read afresh after the previous one was deleted, so a batch is never stale by
        more than one transaction. Excluded candidates (the planned trials) are skipped for good.
        """
        skipped: set[str] = set()
        while True:
            statement = query
            if skipped:
                statement = statement.where(statement.selected_columns[0].not_in(sorted(skipped)))
            with self._reading("list what to prune") as session:
                found = list(session.scalars(statement))
            if not found:
                return
            wanted = [x for x in found if x not in exclude]
            skipped.update(x for x in found if x in exclude)
            if wanted:
                yield wanted

    def _prune_batch(self, what: str, remove: Any, kind: str) -> int:
        with self._writing(what) as session:
            removed = int(remove(session))
            if removed:
                add_counts(session, self._insert, "pruned", {kind: removed})
        return removed

    # -- dry run ------------------------------------------------------------------------------

    def _count(self, policy: RetentionPolicy, started: float) -> PruneReport:
        with self._reading("count what retention would prune") as session:
            kept, kept_runs = self._latest(session, policy)
        cell_query = self._aged(policy.cells_before, kept, with_cells=True)
        with self._reading("count what retention would prune") as session:
            leaving = list(session.scalars(cell_query))
            cells = sum(
                session.scalar(select(func.count()).where(RunCellRow.run_id.in_(chunk))) or 0
                for chunk in chunks(leaving)
            )
        horizon, planned = self._trial_horizon(policy, leaving=leaving)
        with self._reading("count what retention would prune") as session:
            trials = session.scalar(select(func.count()).where(TrialRow.last_used_at < horizon)) or 0
            for chunk in chunks(sorted(planned)):
                trials -= (
                    session.scalar(
                        select(func.count()).where(TrialRow.last_used_at < horizon, TrialRow.key.in_(chunk))
                    )
                    or 0
                )
            runs = 0
            if policy.history_before is not None:
                leaving_set = set(leaving)
                old = session.execute(
                    select(RunRow.id, _has_cells().label("has_cells")).where(
                        RunRow.status != "running",
                        RunRow.started_at < policy.history_before,
                        RunRow.id.not_in(sorted(kept_runs)),
                    )
                )
                runs = sum(1 for run_id, has_cells in old if not has_cells or run_id in leaving_set)
            notifications = (
                session.scalar(
                    select(func.count())
                    .select_from(OutboxRow)
                    .where(*ended_before(policy.notifications_before))
                )
                or 0
            )
        return PruneReport(
            len(leaving), int(cells), int(trials), runs, int(notifications), time.monotonic() - started, True
        )


def _rowcount(session: Session, statement: Any) -> int:
    return int(
        cast(
            CursorResult[Any], session.execute(statement.execution_options(synchronize_session=False))
        ).rowcount
    )
