"""One evaluation run, start to finish. The only place that knows the order of the stages:

resolve (model versions, snapshots, decoded data) -> plan (cells, trial keys)
-> look up stored trials -> execute the rest by work group (each trial stored as it lands)
-> assemble cells -> score each model -> store the run in one transaction
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from ..engine import (
    EstimateSpec,
    Executor,
    Job,
    PlannedCell,
    PlannedEstimate,
    TrialSpec,
    WorkGroup,
    config_digest,
    plan_estimates,
    plan_grid,
    work_groups,
)
from ..errors import Cancelled, StoreError, StoreGone
from ..scoring import score_model
from ..settings import Settings
from ..store import Store
from ..types import (
    CellResult,
    CellStatus,
    EstimateResult,
    ModelScore,
    ModelVersion,
    RunStatus,
    SnapshotInfo,
    TrialResult,
)
from ._alerting import evaluate_alerts
from ._observer import LoggingObserver, Observer
from ._resolve import Resolution, resolve
from ._tensorboard import TensorBoardLog

__all__ = ["ModelReport", "RunReport", "run_evaluation"]

log = logging.getLogger(__name__)

# A store that refuses writes is retried after this pause, doubled up to the cap, for as long as
# `executor.store_outage` allows.
_RETRY_FIRST_S = 0.5
_RETRY_MAX_S = 5.0


def _outage(exc: StoreError) -> bool:
    """A store error worth waiting out (not a vanished SQLite file: that one does not come back)."""
    return not isinstance(exc, StoreGone)


def _with_retries(call: Callable[[], None], what: str, *, budget: float) -> None:
    """`call()`, retried with a growing pause while the store refuses, for up to `budget` seconds."""
    deadline = time.monotonic() + budget
    pause = _RETRY_FIRST_S
    warned = False
    while True:
        try:
            call()
        except StoreError as exc:
            if not _outage(exc) or time.monotonic() + pause > deadline:
                raise
            if not warned:
                log.warning("%s: the store refused (%s); retrying for up to %.0fs", what, exc, budget)
                warned = True
            time.sleep(pause)
            pause = min(pause * 2, _RETRY_MAX_S)
        else:
            if warned:
                log.info("%s: the store is back", what)
            return


class _Unsaved:
    """Trials that finished while the store refused writes, saved at the next chance."""

    def __init__(self, store: Store, budget: float) -> None:
        self.store = store
        self.budget = budget
        self.waiting: list[Callable[[], None]] = []
        self.warned = False
        self.why = ""

    def add(self, save: Callable[[], None]) -> None:
        self.waiting.append(save)
        self.flush()

    def flush(self) -> None:
        while self.waiting:
            try:
                self.waiting[0]()
            except StoreError as exc:
                if not _outage(exc):
                    raise
                self.why = str(exc)
                if not self.warned:
                    log.warning(
                        "the store refused a finished fine-tune (%s); it is kept in memory and saved "
                        "when the store takes writes again",
                        exc,
                    )
                    self.warned = True
                return
            self.waiting.pop(0)
        if self.warned:
            log.info("the store takes writes again: every finished fine-tune is saved")
            self.warned = False

    def finish(self) -> None:
        """Save what is left, waiting out an outage (raises StoreError when it lasts too long)."""
        _with_retries(self.flush_or_raise, "saving finished fine-tunes", budget=self.budget)

    def flush_or_raise(self) -> None:
        self.flush()
        if self.waiting:
            raise StoreError(f"{len(self.waiting)} finished fine-tune(s) could not be saved: {self.why}")


@dataclass(frozen=True)
class ModelReport:
    score: ModelScore
    cells: list[CellResult]
    estimates: list[EstimateResult] = field(default_factory=list)


@dataclass(frozen=True)
class RunReport:
    run_id: str
    status: RunStatus
    seconds: float
    trigger: str
    models: list[ModelReport]
    trials_run: int
    trials_cached: int
    warnings: list[str] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)  # events: alerts that fired or resolved
    probes: bool = False  # only the cheap cells and the estimates ran: no P(M) (see run_evaluation)


class _Collecting:
    """Wraps the caller's observer to keep the warnings for the report."""

    def __init__(self, inner: Observer) -> None:
        self.inner = inner
        self.warnings: list[str] = []

    def stage(self, text: str) -> None:
        self.inner.stage(text)

    def warn(self, text: str) -> None:
        self.warnings.append(text)
        self.inner.warn(text)

    def planned(self, trials: int, cached: int) -> None:
        self.inner.planned(trials, cached)

    def trial_done(self, trial: TrialSpec, result: TrialResult) -> None:
        self.inner.trial_done(trial, result)


def run_evaluation(
    settings: Settings,
    store: Store,
    executor: Executor,
    *,
    trigger: str = "cli",
    observer: Observer | None = None,
    run_id: str | None = None,
    resume: bool = False,
    owner: str | None = None,
    in_transaction: Callable[[Any], None] | None = None,
    probes: bool = False,
) -> RunReport:
    """Evaluate the whole grid once; only trials whose key is not stored are computed.

    `probes`: only the cheap cells (knn, linear probes) and the `early_warning` estimates, for a
    warning between grids (`schedule.on_new_data: probes`). Such a run stores its cells and
    estimates, and judges `estimate_drop` rules, but has no P(M): a partial grid's mean is not
    comparable with the full grid's, so the P(M) history and every P(M) rule wait for a full run.

    `resume` continues the interrupted run `run_id` (still `running` in the store): its finished
    fine-tunes are found by key, the rest is computed. `owner` ("host:pid") says who runs it.
    `in_transaction` runs inside the transaction that stores the run (alert states and the
    notification outbox are written there, atomically with the result). A `Cancelled` run (the
    daemon shutting down) is left `running`, to be resumed; any other failure is recorded.
    """
    started = time.monotonic()
    watcher = _Collecting(observer or LoggingObserver())
    run_id = run_id or uuid.uuid4().hex
    watcher.stage("resolving models and snapshots")
    resolution = resolve(settings, store, watcher)
    cells = plan_grid(settings, resolution.versions, resolution.snapshots, probes_only=probes)
    estimates = plan_estimates(settings, resolution.versions, resolution.snapshots)
    # Two cells can share a key (strategies that differ only by name): count and run it once.
    keys = list(dict.fromkeys([*(t.key for c in cells for t in c.trials), *(e.job.key for e in estimates)]))
    stored = store.find_trials(keys)
    watcher.planned(len(keys), sum(1 for k in keys if k in stored))
    store.begin_run(
        run_id,
        trigger=trigger,
        config_digest=_config_digest(settings),
        plan=_plan_document(cells),
        owner=owner,
        resume=resume,
    )
    fresh: dict[str, TrialResult] = {}
    board = (
        TensorBoardLog(settings.executor.tensorboard_dir, run_id, cells)
        if settings.executor.tensorboard_dir is not None
        else None
    )
    try:
        if board is not None:
            board.write_all(stored)
        todo = {k for k in keys if k not in stored}
        groups = work_groups(settings, cells, todo, resolution.versions, resolution.data, estimates)
        if groups:
            watcher.stage(f"training {len(todo)} fine-tunes in {len(groups)} work groups")
        saver = _TrialSaver(store, run_id, resolution, settings.executor.store_outage, watcher)
        fresh = _execute(executor, groups, saver, board)
        reports = _score(settings, resolution, cells, stored, fresh, estimates)
        if probes:  # no P(M) (nor marginals) from a part of the grid: see above
            reports = [ModelReport(_without_persistence(r.score), r.cells, r.estimates) for r in reports]
        status = _run_status(reports)
        seconds = time.monotonic() - started
        scores = [r.score for r in reports]
        all_cells = [c for r in reports for c in r.cells]
        all_estimates = [e for r in reports for e in r.estimates]
        alerts = evaluate_alerts(
            settings,
            store,
            run_id,
            scores,
            all_cells,
            now=datetime.now(UTC),
            estimates=all_estimates,
            probes=probes,
        )

        def in_the_run_transaction(session: Any) -> None:
            alerts.write(store, session)  # the transactional outbox: states and notifications
            if in_transaction is not None:
                in_transaction(session)

        _with_retries(
            lambda: store.finish_run(
                run_id,
                status=status,
                seconds=seconds,
                scores=scores,
                cells=all_cells,
                extra=in_the_run_transaction,
                owner=owner,
                estimates=all_estimates,
                probes=probes,
            ),
            f"storing run {run_id}",
            budget=settings.executor.store_outage,
        )
    except Cancelled:
        raise  # left "running" on purpose: the next start resumes it
    except BaseException as exc:
        # Never leave a run "running" by accident: record why it stopped (finished trials stay).
        reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
        try:
            store.finish_run(
                run_id,
                status="failed",
                seconds=time.monotonic() - started,
                scores=[],
                cells=[],
                error=reason,
                owner=owner,
            )
        except (
            Exception
        ) as unrecorded:  # the store itself may be what failed; the original error matters more
            log.error(
                "run %s could not be recorded as failed (%s); it stays `running` in the store until "
                "the daemon can mark it failed (or the next start does)",
                run_id,
                unrecorded,
            )
            log.debug("why run %s could not be recorded", run_id, exc_info=True)
        raise
    return RunReport(
        run_id=run_id,
        status=status,
        seconds=seconds,
        trigger=trigger,
        models=reports,
        trials_run=len(fresh),
        trials_cached=sum(1 for k in keys if k in stored),
        alerts=alerts.events,
        warnings=watcher.warnings,
        probes=probes,
    )


class _TrialSaver:
    """Stores each finished trial as it lands, so a crash loses at most the trials in flight.

    While the store refuses writes, finished trials wait in memory (`_Unsaved`); `finish` saves
    what is left or raises StoreError when the outage outlasts `executor.store_outage`.
    """

    def __init__(
        self, store: Store, run_id: str, resolution: Resolution, budget: float, watcher: Observer
    ) -> None:
        self._store, self._run_id, self._resolution, self._watcher = store, run_id, resolution, watcher
        self._unsaved = _Unsaved(store, budget)

    def __call__(self, trial: Job, result: TrialResult) -> None:
        if result.status != "failed":
            ref = trial.cell
            snapshot = self._resolution.snapshots[(ref.task, ref.dataset)]
            # An estimate is cached like a trial; its "strategy" names the estimator (a name no
            # strategy can have: strategy names hold no colon).
            label = f"estimate:{trial.estimator}" if isinstance(trial, EstimateSpec) else ref.strategy
            self._unsaved.add(
                lambda: self._store.save_trial(
                    result,
                    run_id=self._run_id,
                    model=ref.model,
                    task=ref.task,
                    dataset=ref.dataset,
                    snapshot=snapshot.snapshot if isinstance(snapshot, SnapshotInfo) else "",
                    strategy=label,
                )
            )
        if not self._unsaved.waiting:
            try:
                self._store.touch_run(self._run_id)  # a heartbeat: this run is alive, not interrupted
            except StoreError as exc:
                if not _outage(exc):
                    raise
                log.debug("heartbeat of run %s not stored: %s", self._run_id, exc)
        if isinstance(trial, TrialSpec):
            self._watcher.trial_done(trial, result)
        elif result.status == "failed":
            where = f"{trial.cell.model}/{trial.cell.task}/{trial.cell.dataset}"
            self._watcher.warn(f"{where}: the {trial.estimator} estimate failed: {result.error}")

    def finish(self) -> None:
        self._unsaved.finish()


def _execute(
    executor: Executor, groups: list[WorkGroup], saver: _TrialSaver, board: TensorBoardLog | None
) -> dict[str, TrialResult]:
    """Run the work groups; every result (by trial key) is handed to `saver` (and `board`) as it lands."""
    fresh: dict[str, TrialResult] = {}

    def on_result(trial: Job, result: TrialResult) -> None:
        fresh[trial.key] = result
        saver(trial, result)
        if board is not None:
            board.write(result)

    if groups:
        executor.run(groups, on_result)
    saver.finish()
    return fresh


def _score(
    settings: Settings,
    resolution: Resolution,
    cells: list[PlannedCell],
    stored: dict[str, TrialResult],
    fresh: dict[str, TrialResult],
    estimates: list[PlannedEstimate],
) -> list[ModelReport]:
    """Assemble each model's cells (and estimates) from its trials (stored or fresh), score the model."""
    metrics = {task.name: task.metric for task in settings.tasks}
    reports = []
    for model in settings.models:
        model_estimates = [_estimate(e, stored, fresh) for e in estimates if e.model == model.name]
        model_cells = [c for c in cells if c.cell.model == model.name]
        results = [_assemble(c, stored, fresh) for c in model_cells]
        version = resolution.versions[model.name]
        known = version if isinstance(version, ModelVersion) else None
        score = score_model(
            model.name,
            known.version if known else "unknown",
            results,
            [(c.cell.task, c.cell.dataset, c.cell.strategy) for c in model_cells],
            metrics,
            digest=known.digest if known else "",
        )
        reports.append(ModelReport(score, results, model_estimates))
    return reports


def _without_persistence(score: ModelScore) -> ModelScore:
    """A probe run's model score: its coverage and version, but no P(M) nor anything made from it."""
    return dataclasses.replace(
        score,
        persistence=None,
        stderr=None,
        stderr_seeds=None,
        spread=None,
        worst_cell=None,
        worst_cell_score=None,
        task_scores={},
        dataset_scores={},
        strategy_scores={},
        noise={},
    )


def _estimate(
    planned: PlannedEstimate, stored: dict[str, TrialResult], fresh: dict[str, TrialResult]
) -> EstimateResult:
    key = planned.job.key
    result = stored.get(key) or fresh.get(key)
    status: Literal["ok", "cached", "failed"] = "cached" if key in stored else "ok"
    if result is None or result.status == "failed" or result.score is None:
        status = "failed"
    return EstimateResult(
        model=planned.model,
        task=planned.task,
        dataset=planned.dataset,
        snapshot=planned.snapshot.snapshot,
        estimator=planned.estimator,
        value=result.score if status != "failed" and result is not None else None,
        status=status,
        key=key,
        error=None
        if status != "failed"
        else (result.error if result else "no result (the run was interrupted)"),
        stderr=_stderr_of(result) if status != "failed" else None,
    )


def _stderr_of(result: TrialResult | None) -> float | None:
    value = result.details.get("stderr") if result is not None else None
    return float(value) if isinstance(value, int | float) else None


def _assemble(
    planned: PlannedCell, stored: dict[str, TrialResult], fresh: dict[str, TrialResult]
) -> CellResult:
    ref = planned.cell
    snapshot = planned.snapshot.snapshot if planned.snapshot is not None else ""
    base: dict[str, Any] = {
        "model": ref.model,
        "task": ref.task,
        "dataset": ref.dataset,
        "snapshot": snapshot,
        "strategy": ref.strategy,
    }
    keys = tuple(t.key for t in planned.trials)
    if planned.problem is not None:
        return CellResult(
            **base, status="failed", score=None, seed_scores=(), seconds=0.0, error=planned.problem, keys=keys
        )
    results = [stored.get(t.key) or fresh.get(t.key) for t in planned.trials]
    seconds = sum((fresh[t.key].seconds for t in planned.trials if t.key in fresh), 0.0)
    missing = [t for t, r in zip(planned.trials, results, strict=True) if r is None]
    failed = [r for r in results if r is not None and r.status == "failed"]
    scored = [r for r in results if r is not None and r.status != "failed" and r.score is not None]
    ok_scores = tuple(r.score for r in scored if r.score is not None)
    # Test predictions of every scored seed, or none (a trial of an old release has none)
    known = [r.predictions for r in scored if r.predictions is not None]
    predictions = tuple(known) if len(known) == len(scored) else ()
    if missing or failed:
        errors = [r.error or "failed" for r in failed] + ["no result (the run was interrupted)"] * len(
            missing
        )
        count = f" ({len(errors)} of {len(planned.trials)} seeds)" if len(planned.trials) > 1 else ""
        return CellResult(
            **base,
            status="failed",
            score=None,
            seed_scores=ok_scores,
            seconds=seconds,
            error=errors[0] + count,
            keys=keys,
        )
    assert all(r is not None for r in results)
    # A divergence stays visible even when its result comes from the store.
    status: CellStatus
    if any(r is not None and r.status == "diverged" for r in results):
        status = "diverged"
    elif all(t.key in stored for t in planned.trials):
        status = "cached"
    else:
        status = "ok"
    return CellResult(
        **base,
        status=status,
        score=statistics.fmean(ok_scores),
        seed_scores=ok_scores,
        seconds=seconds,
        keys=keys,
        predictions=predictions,
    )


def _run_status(reports: list[ModelReport]) -> RunStatus:
    cells = [c for r in reports for c in r.cells]
    scored = [c for c in cells if c.status != "failed"]
    if not scored:
        return "failed"
    return "partial" if len(scored) < len(cells) else "completed"


def _config_digest(settings: Settings) -> str:
    return config_digest(settings.model_dump(mode="json", exclude={"config_dir"}))


def _plan_document(cells: list[PlannedCell]) -> dict[str, Any]:
    return {
        "cells": [
            {
                "model": c.cell.model,
                "task": c.cell.task,
                "dataset": c.cell.dataset,
                "strategy": c.cell.strategy,
                "snapshot": c.snapshot.snapshot if c.snapshot else None,
                "keys": [t.key for t in c.trials],
                "problem": c.problem,
            }
            for c in cells
        ]
    }
