"""The daemon: a scheduler and an evaluation queue around the pipeline (DESIGN.md §2).

    scheduler thread   evaluate (cron, UTC) ─┐
                       poll (interval) ──────┼─► EvaluationQueue ─► runner thread ─► run_evaluation
    HTTP API           POST /api/v1/runs ────┘    (one at a time,       (workers do the training,
                                                   waiting ones join)    in their own processes)

Jobs only enqueue and return, so they never overlap an evaluation; `max_instances=1` and
`coalesce` still guard them, and every scheduler event is counted. The daemon process never
imports torch.

Several daemons may share one PostgreSQL store (DESIGN.md §2, high availability). The one that
holds the lease "leader" (`_leader`) schedules, polls, judges the clock rules and evaluates; the
others are standbys that serve the pages, the API and `/metrics` from the shared store, and queue
`POST /api/v1/runs` through the store for the leader. When the leader's lease lapses (SIGKILL, a
lost host) a standby takes it, resumes the run the leader left, and runs what was queued. A
SQLite store takes one daemon: a second one is refused at start. Every daemon delivers the
outbox: its claims keep two dispatchers from sending the same notification.
"""

from __future__ import annotations

import functools
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

from ..engine import Executor, build_executor
from ..errors import Cancelled, MonitorError, StoreError, StoreGone
from ..metrics import DaemonMetrics, ExtraGauges, StoreCollector
from ..notifiers import AlertmanagerNotifier, Dispatcher, Notifier
from ..pipeline import LoggingObserver, RunReport, evaluate_time_rules, prune_store, run_evaluation
from ..settings import Settings
from ..store import Lease, Store, new_run_id
from ._fingerprint import changes, inputs_fingerprint
from ._leader import Leadership
from ._owner import current_owner, is_interrupted
from ._queue import PROBES, EvaluationQueue

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
# How often the leader looks for runs queued through the store (by a standby).
_CLAIM_SECONDS = 2.0


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
        make_executor: Callable[[], Executor] | None = None,
    ) -> None:
        """`make_executor` builds a fresh executor when this daemon leads again after it lost the
        lead (the old one was cancelled); the default builds the configured one."""
        self.settings = settings
        self.notifiers = notifiers or {}
        # Built even without notifiers: it drops what earlier configurations left in the outbox.
        self.dispatcher: Dispatcher | None = Dispatcher(store, self.notifiers)
        self.store = store
        self.executor = executor
        self._make_executor = make_executor or (lambda: build_executor(settings))
        self._executor_spent = False  # cancelled when this daemon lost the lead
        self.owner = current_owner()
        self.leadership = Leadership(store, self.owner, settings.schedule.lease_ttl)
        self.leading = threading.Event()
        self._transition = threading.Lock()  # promotion and stepping down, one at a time
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
        self._seen: tuple[Hashable, ...] | None = None  # the inputs the latest evaluation started from
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
        """Take the lead if nobody has it (else stand by), start the scheduler, the runner and delivery.

        Raises StoreError when the store is SQLite and another daemon runs on it.
        """
        lease = self._first_lease()
        poll = self.settings.schedule.poll
        leading = self._leader_only
        self.scheduler.add_job(
            leading(self._evaluate_job),
            CronTrigger.from_crontab(self.settings.schedule.evaluate, timezone=UTC),
            id="evaluate",
            misfire_grace_time=_EVALUATE_MISFIRE_GRACE,
        )
        # A late poll is fine, two in a row pointless: the grace is one interval.
        self.scheduler.add_job(
            leading(self.poll),
            IntervalTrigger(seconds=poll, timezone=UTC),
            id="poll",
            misfire_grace_time=max(1, int(poll)),
        )
        self.scheduler.add_job(
            self._heartbeat, IntervalTrigger(seconds=_HEARTBEAT_SECONDS, timezone=UTC), id="heartbeat"
        )
        # Rules that change with the clock (stale) are judged every minute, runs or not.
        self.scheduler.add_job(
            leading(self.check_time_rules), IntervalTrigger(seconds=60, timezone=UTC), id="alerts-clock"
        )
        if any(isinstance(n, AlertmanagerNotifier) for n in self.notifiers.values()):
            # Alertmanager forgets a firing alert that is not re-sent (resolve_timeout).
            self.scheduler.add_job(
                leading(self._refresh_alertmanager),
                IntervalTrigger(seconds=60, timezone=UTC),
                id="alertmanager-refresh",
            )
        if self.settings.retention.enabled:
            # A pool thread of its own: batches of milliseconds each, never in a scrape's or a run's way.
            self.scheduler.add_job(
                leading(self.prune),
                IntervalTrigger(seconds=self.settings.retention.interval, timezone=UTC),
                id="retention",
                next_run_time=datetime.now(UTC) + _PRUNE_FIRST_DELAY,
            )
        for func, trigger, job_id in self._extra_jobs:
            self.scheduler.add_job(leading(func), trigger, id=job_id)
        ttl = self.leadership.ttl
        self.scheduler.add_job(
            self._keep_lease,
            IntervalTrigger(seconds=self.leadership.renew_every, timezone=UTC),
            id="lease",
            misfire_grace_time=max(1, int(ttl)),
        )
        # Stepping down must not wait for a store call that hangs: this one makes none.
        self.scheduler.add_job(self._watch_lease, IntervalTrigger(seconds=1, timezone=UTC), id="lease-watch")
        if self.store.shared:
            self.scheduler.add_job(
                leading(self._claim_requests),
                IntervalTrigger(seconds=_CLAIM_SECONDS, timezone=UTC),
                id="run-requests",
            )
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
        if lease.mine:
            self._promote(lease)
        else:
            self.metrics.leader.set(0)
            log.info(
                "standing by: %s leads (term %d); this daemon serves reads and takes over if its lease "
                "lapses (schedule.lease_ttl %gs)",
                lease.holder,
                lease.term,
                ttl,
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
        if self.leading.is_set():
            self.leading.clear()
            try:
                if self.leadership.release():
                    log.info("lead released: a standby takes over now")
            except StoreError as exc:
                log.warning("lead not released (a standby takes over when it lapses): %s", exc)
        if self._delivery is not None:
            self._delivery.join(10)  # undelivered notifications stay in the outbox for the next start

    # -- leadership ---------------------------------------------------------------------------

    def _first_lease(self) -> Lease:
        """The lease at start; on SQLite, wait one TTL for a lapsed holder, then refuse to start."""
        lease = self.leadership.attempt()
        if lease.mine or self.store.shared:
            return lease
        ttl = self.leadership.ttl
        log.warning(
            "another daemon (%s) holds this SQLite store; waiting up to %.0fs in case it is gone",
            lease.holder,
            ttl,
        )
        deadline = time.monotonic() + ttl + 1
        while time.monotonic() < deadline:
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            lease = self.leadership.attempt()
            if lease.mine:
                return lease
        raise StoreError(
            f"another daemon ({lease.holder}) is running on the SQLite store {self.store.url}, and "
            f"SQLite takes one daemon: stop the other one (or point this one at another state_dir), "
            f"or move both to one PostgreSQL database_url to run a leader and a standby"
        )

    def _leader_only(self, func: Callable[[], None]) -> Callable[[], None]:
        @functools.wraps(func)
        def job() -> None:
            if self.leading.is_set():
                func()

        return job

    def _keep_lease(self) -> None:
        """Renew the lease (leader) or try to take it (standby): the `lease` job."""
        if self._stop.is_set():
            return
        try:
            lease = self.leadership.attempt()
        except StoreError as exc:
            if self.leading.is_set() and self.store.shared:
                log.warning("lease not renewed (the lead is kept until it lapses): %s", exc)
            self._watch_lease()
            return
        if lease.mine and not self.leading.is_set():
            self._promote(lease)
        elif not lease.mine and self.leading.is_set():
            self._step_down(f"{lease.holder} holds the lease now (term {lease.term})")

    def _watch_lease(self) -> None:
        """Step down once the lease may have lapsed (no renewal for too long): the `lease-watch` job.

        Only on a shared store: a lone daemon on SQLite whose store refuses writes keeps its run
        (it completes once the store is back, within executor.store_outage); no one else could
        take the lease meanwhile, since taking it is a write too.
        """
        if self.leading.is_set() and self.store.shared and not self.leadership.holds():
            self._step_down(
                f"the lease could not be renewed for {self.leadership.ttl - self.leadership.margin:.0f}s, "
                f"so another daemon may lead by now"
            )

    def _promote(self, lease: Lease) -> None:
        """Lead: start the executor, resume what the previous leader left, evaluate at once."""
        with self._transition:
            if self.leading.is_set() or self._stop.is_set():
                return
            if lease.previous is not None:
                log.warning("leading now (term %d), taken over from %s", lease.term, lease.previous)
            elif self.store.shared:
                log.info("leading (term %d)", lease.term)
            if self._executor_spent:
                self.executor.close(timeout=5)
                self.executor = self._make_executor()
                self._executor_spent = False
            self.executor.start(wait=False)  # the worker imports torch while the first run resolves
            self.leading.set()
            self.metrics.leader.set(1)
            try:
                self._forget_old_alert_states()
                resumed = self._resume_interrupted(previous=lease.previous)
            except StoreError as exc:
                log.error("could not look for interrupted runs (looked for again at the next start): %s", exc)
                resumed = False
            if not resumed:
                self.request("startup")  # a new leader evaluates at once (cheap when nothing changed)
            if self.store.shared:
                self._claim_requests()

    def _step_down(self, reason: str) -> None:
        """Stop leading: drop what waits, cancel the running evaluation (the new leader resumes it)."""
        with self._transition:
            if not self.leading.is_set():
                return
            self.leading.clear()
            self.leadership.lapsed()
            self.metrics.leader.set(0)
            dropped = self.queue.clear()
            running = self.queue.running
            log.error(
                "no longer leading: %s. Standing by; %s%d queued evaluation(s) dropped (the leader "
                "evaluates at once)",
                reason,
                f"run {running.run_id} is stopped (the leader resumes it); " if running else "",
                len(dropped),
            )
            self.executor.cancel()
            self.executor.abandon()  # someone else does the work now: free the devices at once
            self._executor_spent = True

    def _claim_requests(self) -> None:
        """Queue the runs requested through the store (the leader's `run-requests` job)."""
        try:
            waiting_ones = self.store.waiting_run_requests()
            begun = {w.id for w in waiting_ones if self.store.get_run(w.id) is not None}
            for run_id in begun:
                self.store.drop_run_request(run_id)  # begun already, by a leader that then died
        except StoreError as exc:
            log.warning("queued runs not read (read again in %gs): %s", _CLAIM_SECONDS, exc)
            return
        for waiting in waiting_ones:
            if waiting.id in begun:
                continue
            _, joined = self.queue.request(waiting.trigger, run_id=waiting.id)
            if not joined:
                log.info(
                    "evaluation %s queued (%s, asked of %s)",
                    waiting.id,
                    waiting.trigger,
                    waiting.requested_by,
                )

    def _forget_old_alert_states(self) -> None:
        configured = {
            (m.name, r.name)
            for m in self.settings.models
            for r in self.settings.alerts.rules
            if r.applies_to(m.name, m.role)
        }
        if removed := self.store.delete_alert_states(configured):
            log.info("forgot %d alert state(s) of rules or models no longer configured", removed)

    # -- requests -----------------------------------------------------------------------------

    def request(self, trigger: str) -> tuple[str, bool]:
        """Queue an evaluation; returns (run id, joined an already waiting request).

        On a shared store an API request goes through the store, whoever leads: it survives the
        loss of this daemon, and a standby's request reaches the leader.
        """
        if trigger == "api" and self.store.shared:
            run_id, joined = self.store.request_run(new_run_id(), trigger=trigger, by=self.owner)
            self.metrics.evaluations_requested.labels(trigger).inc()
            if not joined:
                log.info("evaluation %s queued for the leader (%s)", run_id, trigger)
            if self.leading.is_set():
                self._claim_requests()
            return run_id, joined
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
        log.info("poll: %s", changes(self._seen, current))
        self.metrics.polls.labels("changed").inc()
        # probes: the cheap cells and the estimates now, the full grid at the `evaluate` schedule
        self.request(PROBES if self.settings.schedule.on_new_data == "probes" else "poll")

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

    def _resume_interrupted(self, previous: str | None = None) -> bool:
        """Queue the interrupted runs for resumption; those a newer run has overtaken are failed.

        A run interrupted (a crash, a kill, a store that stopped taking writes) after which another
        run finished is history, not work: resuming it would record an old plan as the newest result.
        The runs of `previous`, the leader whose lapsed lease this daemon took, are interrupted
        too, whatever their heartbeat says: that leader stepped down before its lease lapsed.
        """
        unfinished = self.store.unfinished_runs()
        newest = self.store.list_runs(limit=len(unfinished) + 1) if unfinished else []
        resumed = False
        for run in unfinished:
            if not (is_interrupted(run, me=self.owner) or (previous is not None and run.owner == previous)):
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
            if not self.leading.is_set():
                log.info("run %s not started: this daemon no longer leads", request.run_id)
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
                    probes=request.trigger == PROBES and not request.resume,
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
            except Cancelled as exc:
                if self._stop.is_set():
                    log.info("run %s cancelled by shutdown; it resumes at the next start", request.run_id)
                    break
                log.warning("run %s stopped: %s", request.run_id, exc)  # the lead was lost
                continue
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
            if self.store.shared and request.trigger == "api":
                self._drop_request(request.run_id)

    def _drop_request(self, run_id: str) -> None:
        """A queued run that failed before it began is not retried for ever: forget its request."""
        try:
            self.store.drop_run_request(run_id)
        except StoreError as exc:
            log.warning("run request %s not dropped: %s", run_id, exc)

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
            "instance": self.owner,
            "role": "leader" if self.leading.is_set() else "standby",
            "leader": self.leadership.leader()[0],
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
