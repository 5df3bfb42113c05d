"""The daemon: a scheduler and an evaluation queue around the pipeline (DESIGN.md §2).

    scheduler thread   evaluate (cron, UTC) ─┐
                       poll (interval) ──────┼─► EvaluationQueue ─► runner thread ─► run_evaluation
    HTTP API           POST /api/v1/runs ────┘    (one at a time,       (workers do the training,
                                                   waiting ones join)    in their own processes)

Jobs only enqueue and return, so they never overlap an evaluation; `max_instances=1` and
`coalesce` still guard them, and every scheduler event is counted. The daemon process never
imports torch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    JobEvent,
)
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from prometheus_client import CollectorRegistry

from ..engine import Executor
from ..errors import Cancelled, MonitorError, StoreError, StoreGone
from ..metrics import DaemonMetrics, ExtraGauges, StoreCollector
from ..notifiers import AlertmanagerNotifier, Dispatcher, Notifier
from ..pipeline import LoggingObserver, RunReport, evaluate_time_rules, prune_store, run_evaluation
from ..settings import Settings
from ..store import Store
from ._fingerprint import inputs_fingerprint
from ._owner import current_owner, is_interrupted
from ._queue import EvaluationQueue

__all__ = ["Daemon"]

log = logging.getLogger(__name__)

_EVENTS = {
    EVENT_JOB_EXECUTED: "executed",
    EVENT_JOB_ERROR: "error",
    EVENT_JOB_MISSED: "missed",
    EVENT_JOB_MAX_INSTANCES: "skipped",
}
# A full re-evaluation that is late (the host slept, the process was starved) is still worth
# running within this window; several late ones coalesce into one.
_EVALUATE_MISFIRE_GRACE = 3600
_HEARTBEAT_SECONDS = 60
# The first retention pass waits for the start-up evaluation to get going, then runs every interval.
_PRUNE_FIRST_DELAY = timedelta(minutes=2)


class Daemon:
    """Schedules evaluations, runs them one at a time, and reports its health."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        executor: Executor,
        *,
        registry: CollectorRegistry,
        notifiers: dict[str, Notifier] | None = None,
        extra_metrics: list[ExtraGauges] | None = None,
    ) -> None:
        self.settings = settings
        self.notifiers = notifiers or {}
        # Built even without notifiers: it drops what earlier configurations left in the outbox.
        self.dispatcher: Dispatcher | None = Dispatcher(store, self.notifiers)
        self.store = store
        self.executor = executor
        self.owner = current_owner()
        self.metrics = DaemonMetrics(registry)
        registry.register(StoreCollector(store, settings, extra=extra_metrics or []))
        self.queue = EvaluationQueue()
        self.scheduler = BackgroundScheduler(
            timezone=UTC, job_defaults={"coalesce": True, "max_instances": 1}
        )
        self.scheduler.add_listener(
            self._on_job_event,
            EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES,
        )
        self.started_at = datetime.now(UTC)
        self.last_report: RunReport | None = None
        self.last_error: str | None = None
        self._seen: Hashable | None = None  # the inputs the latest evaluation started from
        self._stop = threading.Event()
        self._runner = threading.Thread(target=self._run_loop, name="pm-runner", daemon=True)
        self._delivery: threading.Thread | None = None
        self._extra_jobs: list[tuple[Callable[[], None], BaseTrigger, str]] = []
        # Runs that failed while the store could not take their outcome: marked failed once it can.
        self._unsettled: dict[str, str] = {}
        # Set when the database file went away under the daemon: no more work until a restart.
        self.halted: str | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def add_job(self, func: Callable[[], None], trigger: BaseTrigger, job_id: str) -> None:
        """An extra scheduled job (the demo's data feed); added when the daemon starts."""
        self._extra_jobs.append((func, trigger, job_id))

    def start(self) -> None:
        self.executor.start(wait=False)  # the worker imports torch while the first run resolves
        configured = {
            (m.name, r.name)
            for m in self.settings.models
            for r in self.settings.alerts.rules
            if r.models is None or m.name in r.models
        }
        if removed := self.store.delete_alert_states(configured):
            log.info("forgot %d alert state(s) of rules or models no longer configured", removed)
        if not self._resume_interrupted():
            self.request("startup")  # a new daemon evaluates at once (cheap when nothing changed)
        poll = self.settings.schedule.poll
        self.scheduler.add_job(
            self._evaluate_job,
            CronTrigger.from_crontab(self.settings.schedule.evaluate, timezone=UTC),
            id="evaluate",
            misfire_grace_time=_EVALUATE_MISFIRE_GRACE,
        )
        # A late poll is fine, two in a row pointless: the grace is one interval.
        self.scheduler.add_job(
            self.poll,
            IntervalTrigger(seconds=poll, timezone=UTC),
            id="poll",
            misfire_grace_time=max(1, int(poll)),
        )
        self.scheduler.add_job(
            self._heartbeat, IntervalTrigger(seconds=_HEARTBEAT_SECONDS, timezone=UTC), id="heartbeat"
        )
        # Rules that change with the clock (stale) are judged every minute, runs or not.
        self.scheduler.add_job(
            self.check_time_rules, IntervalTrigger(seconds=60, timezone=UTC), id="alerts-clock"
        )
        if any(isinstance(n, AlertmanagerNotifier) for n in self.notifiers.values()):
            # Alertmanager forgets a firing alert that is not re-sent (resolve_timeout).
            self.scheduler.add_job(
                self._refresh_alertmanager,
                IntervalTrigger(seconds=60, timezone=UTC),
                id="alertmanager-refresh",
            )
        if self.settings.retention.enabled:
            # A pool thread of its own: batches of milliseconds each, never in a scrape's or a run's way.
            self.scheduler.add_job(
                self.prune,
                IntervalTrigger(seconds=self.settings.retention.interval, timezone=UTC),
                id="retention",
                next_run_time=datetime.now(UTC) + _PRUNE_FIRST_DELAY,
            )
        for func, trigger, job_id in self._extra_jobs:
            self.scheduler.add_job(func, trigger, id=job_id)
        self.scheduler.start()
        self._runner.start()
        if self.dispatcher is not None:
            dispatcher = self.dispatcher
            self._delivery = threading.Thread(
                target=lambda: dispatcher.run(self._stop), name="pm-notifications", daemon=True
            )
            self._delivery.start()
        log.info(
            "daemon started as %s: evaluate %r (UTC), poll every %gs",
            self.owner,
            self.settings.schedule.evaluate,
            poll,
        )

    def stop(self, grace: float) -> None:
        """Stop scheduling, let the running fine-tune finish within `grace` seconds, then leave.

        The interrupted run stays `running` in the store; the next start resumes it.
        """
        log.info("stopping: no new evaluations; waiting up to %.0fs for the running fine-tune", grace)
        self._stop.set()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        self.executor.cancel()
        self._runner.join(grace)
        if self._runner.is_alive():
            log.warning("grace period over: abandoning the running fine-tune (it is redone on resume)")
            self.executor.abandon()
            self._runner.join(30)
        self.executor.close(timeout=5)
        if self._delivery is not None:
            self._delivery.join(10)  # undelivered notifications stay in the outbox for the next start

    # -- requests -----------------------------------------------------------------------------

    def request(self, trigger: str) -> tuple[str, bool]:
        """Queue an evaluation; returns (run id, joined an already waiting request)."""
        run_id, joined = self.queue.request(trigger)
        self.metrics.evaluations_requested.labels(trigger).inc()
        if not joined:
            log.info("evaluation %s queued (%s)", run_id, trigger)
        return run_id, joined

    def poll(self) -> None:
        """Queue an evaluation when a dataset has a newer complete snapshot or a model new weights."""
        if any(not r.resume for r in self.queue.waiting):
            self.metrics.polls.labels("queued").inc()  # the waiting evaluation will see it anyway
            return
        try:
            current = inputs_fingerprint(self.settings)
        except Exception:
            self.metrics.polls.labels("error").inc()
            raise
        if current == self._seen:
            self.metrics.polls.labels("unchanged").inc()
            return
        self.metrics.polls.labels("changed").inc()
        self.request("poll")

    def check_time_rules(self) -> None:
        """Judge the clock-driven rules (stale) now and queue their notifications."""
        writes = evaluate_time_rules(self.settings, self.store, now=datetime.now(UTC))
        writes.write(self.store)
        for event in writes.events:
            log.warning(
                "alert %s %s for %s: %s", event["alert"], event["kind"], event["model"], event["summary"]
            )

    def prune(self) -> None:
        """Apply the retention settings (the `retention` job); a store error is one log line."""
        if self.halted is not None:
            return
        try:
            prune_store(self.settings, self.store, now=datetime.now(UTC))
        except StoreError as exc:
            log.warning("retention pass skipped: %s", exc)

    def _refresh_alertmanager(self) -> None:
        firing = [
            {
                "kind": "firing",
                "model": s.model,
                "alert": s.rule,
                "severity": s.severity,
                "summary": s.summary or f"{s.rule} firing for {s.model}",
                "description": s.summary or "",
                "started_at": s.since.isoformat(),
                "at": datetime.now(UTC).isoformat(),
                "status_url": self.settings.alerts.status_url,
            }
            for s in self.store.alert_states()
            if s.state == "firing"
        ]
        for notifier in self.notifiers.values():
            if isinstance(notifier, AlertmanagerNotifier):
                notifier.refresh([e for e in firing if notifier.wants(e)])

    def _evaluate_job(self) -> None:
        self.request("schedule")

    def _heartbeat(self) -> None:
        running = self.queue.running
        try:
            if running is not None:
                self.store.touch_run(running.run_id)
        except StoreError as exc:  # one line, not the scheduler's traceback: the message says what to do
            log.warning("heartbeat of run %s not stored: %s", running.run_id if running else "-", exc)
            return
        self._settle()

    def _settle(self) -> None:
        """Mark failed the runs whose failure could not be stored when it happened."""
        running = self.queue.running
        for run_id, reason in list(self._unsettled.items()):
            if running is not None and running.run_id == run_id:
                continue
            try:
                run = self.store.get_run(run_id)
                if run is not None and run.status == "running":
                    self.store.finish_run(
                        run_id, status="failed", seconds=0.0, scores=[], cells=[], error=reason
                    )
                    log.warning("run %s recorded as failed now that the store takes writes again", run_id)
            except (StoreError, ValueError) as exc:
                log.debug("run %s still cannot be recorded as failed: %s", run_id, exc)
                continue
            del self._unsettled[run_id]

    def _resume_interrupted(self) -> bool:
        """Queue the interrupted runs for resumption; those a newer run has overtaken are failed.

        A run interrupted (a crash, a kill, a store that stopped taking writes) after which another
        run finished is history, not work: resuming it would record an old plan as the newest result.
        """
        unfinished = self.store.unfinished_runs()
        newest = self.store.list_runs(limit=len(unfinished) + 1) if unfinished else []
        resumed = False
        for run in unfinished:
            if not is_interrupted(run, me=self.owner):
                continue
            overtaken = next(
                (r for r in newest if r.status != "running" and r.started_at > run.started_at), None
            )
            if overtaken is not None:
                try:
                    self.store.finish_run(
                        run.id,
                        status="failed",
                        seconds=0.0,
                        scores=[],
                        cells=[],
                        error=f"interrupted, and overtaken by run {overtaken.id}; not resumed",
                    )
                except ValueError:  # another daemon settled it first
                    continue
                log.warning(
                    "run %s was interrupted and a newer run (%s) has finished since: recorded as failed, "
                    "not resumed",
                    run.id,
                    overtaken.id,
                )
                continue
            log.warning("resuming run %s, interrupted at %s", run.id, run.heartbeat_at or run.started_at)
            self.queue.resume(run.id)
            self.metrics.evaluations_requested.labels("resume").inc()
            resumed = True
        return resumed

    # -- the runner ---------------------------------------------------------------------------

    def _run_loop(self) -> None:
        while not self._stop.is_set():
            request = self.queue.take(timeout=0.5)
            if request is None:
                continue
            if self._stop.is_set():
                break
            if self.halted is not None:
                log.error("run %s not started: %s", request.run_id, self.halted)
                self.queue.done()
                continue
            self._settle()
            self.metrics.evaluation_in_progress.set(1)
            try:
                try:
                    self._seen = inputs_fingerprint(self.settings)
                except Exception:
                    log.exception("cannot read the inputs before evaluating; evaluating anyway")
                self.last_report = run_evaluation(
                    self.settings,
                    self.store,
                    self.executor,
                    trigger=request.trigger,
                    observer=LoggingObserver(),
                    run_id=request.run_id,
                    resume=request.resume,
                    owner=self.owner,
                )
                self.last_error = None
                report = self.last_report
                log.info(
                    "run %s %s in %.1fs: %d fine-tunes run, %d from the store",
                    report.run_id,
                    report.status,
                    report.seconds,
                    report.trials_run,
                    report.trials_cached,
                )
                for event in report.alerts:
                    log.warning(
                        "alert %s %s for %s: %s",
                        event["alert"],
                        event["kind"],
                        event["model"],
                        event["summary"],
                    )
            except Cancelled:
                log.info("run %s cancelled by shutdown; it resumes at the next start", request.run_id)
                break
            except StoreGone as exc:
                self.last_error = self.halted = str(exc)
                log.critical("run %s failed, and no more runs start until a restart: %s", request.run_id, exc)
            except MonitorError as exc:
                self.last_error = str(exc)
                self._unsettled[request.run_id] = f"{type(exc).__name__}: {exc}"
                log.error("run %s failed: %s", request.run_id, exc)
            except Exception as exc:  # the daemon must outlive any single run
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._unsettled[request.run_id] = self.last_error
                log.exception("run %s failed unexpectedly", request.run_id)
            finally:
                self.metrics.evaluation_in_progress.set(0)
                self.queue.done()

    def _on_job_event(self, event: JobEvent) -> None:
        self.metrics.scheduler_events.labels(event.job_id, _EVENTS.get(event.code, str(event.code))).inc()
        if event.code == EVENT_JOB_ERROR:
            log.error("scheduled job %s failed: %s", event.job_id, getattr(event, "exception", "?"))
        elif event.code == EVENT_JOB_MISSED:
            log.warning("scheduled job %s missed its time (beyond its misfire grace)", event.job_id)

    # -- health -------------------------------------------------------------------------------

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Liveness: the scheduler and the runner thread are alive."""
        scheduler = bool(self.scheduler.running)
        runner = self._runner.is_alive()
        running = self.queue.running
        return scheduler and runner, {
            "status": "ok" if scheduler and runner else "unhealthy",
            "scheduler": "running" if scheduler else "stopped",
            "runner": "alive" if runner else "dead",
            "evaluating": running.run_id if running else None,
            "queued": [r.run_id for r in self.queue.waiting],
            "uptime_seconds": round(time.time() - self.started_at.timestamp(), 1),
            "last_error": self.last_error,
            "halted": self.halted,
        }

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """Readiness: the configuration is loaded and the store answers."""
        if self.halted is not None:
            return False, {"status": "not ready", "store": self.halted}
        try:
            self.store.ping(write=True)
        except StoreGone as exc:
            self.halted = str(exc)
            log.critical("%s", exc)
            return False, {"status": "not ready", "store": str(exc)}
        except MonitorError as exc:
            return False, {"status": "not ready", "store": str(exc)}
        return True, {"status": "ready", "store": "ok", "models": [m.name for m in self.settings.models]}
