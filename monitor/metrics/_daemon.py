"""Process-local metrics of the daemon itself: scheduler events, evaluation requests, polls.

These describe this process (they restart at zero with it, as Prometheus counters may); the state
of the grid lives in the store and is exported by `StoreCollector`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["DaemonMetrics"]


class DaemonMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.scheduler_events = Counter(
            "persistence_scheduler_events",
            "scheduler job events: executed, error, missed (misfire), skipped (an instance was still running)",
            # `scheduled_job`, not `job`: that name is Prometheus's own target label.
            ["scheduled_job", "event"],
            registry=registry,
        )
        self.evaluations_requested = Counter(
            "persistence_evaluations_requested",
            "evaluation requests by trigger (requests arriving while one is queued join it)",
            ["trigger"],
            registry=registry,
        )
        self.leader = Gauge(
            "persistence_leader",
            "1 on the daemon that schedules and evaluates (it holds the lease), 0 on a standby",
            registry=registry,
        )
        self.evaluation_in_progress = Gauge(
            "persistence_evaluation_in_progress", "1 while an evaluation runs", registry=registry
        )
        self.polls = Counter(
            "persistence_polls",
            "checks of the sources and model weights for something new, by outcome",
            ["outcome"],
            registry=registry,
        )
