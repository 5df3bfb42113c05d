"""Prometheus state metrics, read from the store at scrape time (DESIGN.md §3.5).

Nothing here is kept in process memory: every scrape asks the store, so the values survive
restarts, never go stale in a long-lived process, and label sets disappear as soon as a model,
task, dataset or strategy leaves the configuration (labels come only from config names: bounded
cardinality). Counters (`*_total`) are counters the store keeps as it writes, so they only grow,
and pruning old runs never lowers them. A scrape costs what it exports: each configured model's
latest scores and cells, a few counter rows, one index lookup per "last" time.

Series: per model about 8 + tasks + datasets + strategies, plus one `persistence_cell_score` per
cell (`metrics.cell_series`: all, only the `metrics.worst_cells` worst, or none), plus one
`persistence_transferability_score` per dataset and `early_warning` estimator.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .. import __version__
from ..errors import MonitorError
from ..settings import Settings
from ..store import RUN_SECONDS_BUCKETS, Store
from ..types import CELL_STATUSES, RUN_STATUSES

__all__ = ["RUN_DURATION_BUCKETS", "StoreCollector"]

log = logging.getLogger(__name__)

# A grid takes seconds (all cached) to hours (large models on a CPU): the store keeps these buckets.
RUN_DURATION_BUCKETS = RUN_SECONDS_BUCKETS

# Per-model gauges that other components own (the alert rules export the drop rule's baseline).
ExtraGauges = Callable[[], Iterable[Metric]]


def _ts(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


class StoreCollector(Collector):
    """Yields every state metric of §3.5 from the store; `settings` bounds the label sets."""

    def __init__(self, store: Store, settings: Settings, *, extra: Iterable[ExtraGauges] = ()) -> None:
        self._store = store
        self._settings = settings
        self._extra = list(extra)

    def describe(self) -> Iterable[Metric]:
        return []  # unchecked collector: the metrics depend on the store's content

    def collect(self) -> Iterable[Metric]:
        info = GaugeMetricFamily(
            "persistence_monitor_build_info", "persistence-monitor build", labels=["version"]
        )
        info.add_metric([__version__], 1.0)
        yield info
        up = GaugeMetricFamily("persistence_store_up", "1 when the result store answered this scrape")
        try:
            families = list(self._state())
        except MonitorError as exc:
            log.warning("metrics: the store did not answer: %s", exc)
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        yield up
        yield from families
        for provider in self._extra:
            try:
                yield from provider()
            except MonitorError as exc:
                log.warning("metrics: %s", exc)

    # -- state ---------------------------------------------------------------------------------

    def _state(self) -> Iterable[Metric]:
        settings, store = self._settings, self._store
        models = {m.name for m in settings.models}
        tasks = {t.name: {d.name for d in t.datasets} for t in settings.tasks}
        strategies = {s.name for s in settings.strategies}

        gauges = {
            name: GaugeMetricFamily(f"persistence_{name}", text, labels=["model"])
            for name, text in (
                ("score", "P(M) of the latest run: the nested mean of the grid (DESIGN.md §1)"),
                ("score_stderr", "standard error of P(M): the seed replicates and the test samples' noise"),
                ("score_stderr_seeds", "standard error of P(M) from the seed replicates alone"),
                ("score_spread", "standard deviation of the cell scores"),
                ("worst_cell_score", "the lowest cell score of the latest run"),
                ("grid_coverage_ratio", "scored cells / planned cells of the latest run"),
            )
        }
        # `role` (deployed | candidate) follows the config: one series per model, whatever it is.
        model_info = GaugeMetricFamily(
            "persistence_model_info",
            "the model version in use, and its role",
            labels=["model", "version", "role"],
        )
        task_score = GaugeMetricFamily(
            "persistence_task_score", "P(M) restricted to one task", labels=["model", "task"]
        )
        dataset_score = GaugeMetricFamily(
            "persistence_dataset_score",
            "mean over strategies of one dataset",
            labels=["model", "task", "dataset"],
        )
        strategy_score = GaugeMetricFamily(
            "persistence_strategy_score", "P(M) restricted to one strategy", labels=["model", "strategy"]
        )
        cell_score = GaugeMetricFamily(
            "persistence_cell_score",
            "a cell's score: the metric after fine-tuning, mean over seeds",
            labels=["model", "task", "dataset", "strategy"],
        )
        in_use: dict[tuple[str, str], str] = {}
        cell_series = settings.metrics.cell_series
        for model, (_run, score) in store.latest_scores(sorted(models)).items():
            values = {
                "score": score.persistence,
                "score_stderr": score.stderr,
                "score_stderr_seeds": score.stderr_seeds,
                "score_spread": score.spread,
                "worst_cell_score": score.worst_cell_score,
                "grid_coverage_ratio": score.coverage,
            }
            for name, value in values.items():
                if value is not None:
                    gauges[name].add_metric([model], value)
            model_info.add_metric([model, score.version, settings.model(model).role], 1.0)
            for task, value in score.task_scores.items():
                if task in tasks:
                    task_score.add_metric([model, task], value)
            for task, per_dataset in score.dataset_scores.items():
                for dataset, value in per_dataset.items():
                    if dataset in tasks.get(task, ()):
                        dataset_score.add_metric([model, task, dataset], value)
            for strategy, value in score.strategy_scores.items():
                if strategy in strategies:
                    strategy_score.add_metric([model, strategy], value)
            shown = []
            for cell in store.latest_cells(model):
                if cell.dataset not in tasks.get(cell.task, ()) or cell.strategy not in strategies:
                    continue
                if cell.snapshot:
                    in_use.setdefault((cell.task, cell.dataset), cell.snapshot)
                if cell.score is not None:
                    shown.append(cell)
            if cell_series == "worst":
                # Lowest first; ties in plan order, so the same cells are exported scrape after scrape.
                shown = sorted(shown, key=lambda c: c.score if c.score is not None else 0.0)
                shown = shown[: settings.metrics.worst_cells]
            elif cell_series == "none":
                shown = []
            for cell in shown:
                assert cell.score is not None
                cell_score.add_metric([model, cell.task, cell.dataset, cell.strategy], cell.score)
        yield from gauges.values()
        yield from (model_info, task_score, dataset_score, strategy_score, cell_score)
        yield self._transferability(models, tasks)
        yield from self._snapshots(tasks, in_use)
        yield from self._runs()
        yield from self._alerts(models)

    def _transferability(self, models: set[str], tasks: dict[str, set[str]]) -> Metric:
        """The latest estimates of each model (a probe run's or a grid's, whichever is newer)."""
        estimators = set(self._settings.early_warning.estimators)
        family = GaugeMetricFamily(
            "persistence_transferability_score",
            "a transferability estimate on the frozen features (early_warning; not in P(M), not in [0, 1])",
            labels=["model", "task", "dataset", "estimator"],
        )
        if not estimators:
            return family
        for model, estimates in self._store.latest_estimates(sorted(models)).items():
            for e in estimates:
                if e.value is not None and e.estimator in estimators and e.dataset in tasks.get(e.task, ()):
                    family.add_metric([model, e.task, e.dataset, e.estimator], e.value)
        return family

    def _snapshots(self, tasks: dict[str, set[str]], in_use: dict[tuple[str, str], str]) -> Iterable[Metric]:
        store = self._store
        snapshot_info = GaugeMetricFamily(
            "persistence_snapshot_info", "1 for the snapshot in use", labels=["task", "dataset", "snapshot"]
        )
        snapshot_time = GaugeMetricFamily(
            "persistence_snapshot_timestamp_seconds",
            "when the snapshot in use became complete (unix time)",
            labels=["task", "dataset"],
        )
        for task, datasets in tasks.items():
            for dataset in sorted(datasets):
                good = store.last_good_snapshot(task, dataset)
                snapshot = in_use.get((task, dataset)) or (good.snapshot if good else None)
                if snapshot is None:
                    continue
                snapshot_info.add_metric([task, dataset, snapshot], 1.0)
                if good is not None and good.snapshot == snapshot and good.timestamp is not None:
                    snapshot_time.add_metric([task, dataset], good.timestamp.timestamp())
        errors = CounterMetricFamily(
            "persistence_snapshot_errors",
            "snapshots rejected, and images that could not be decoded, by reason",
            labels=["task", "dataset", "reason"],
        )
        for (task, dataset, reason), count in sorted(store.snapshot_error_counts().items()):
            if dataset in tasks.get(task, ()):
                errors.add_metric([task, dataset, reason], float(count))
        yield from (snapshot_info, snapshot_time, errors)

    def _runs(self) -> Iterable[Metric]:
        store = self._store
        runs = CounterMetricFamily(
            "persistence_runs", "finished evaluation runs by outcome", labels=["outcome"]
        )
        counts = store.run_counts()
        for outcome in RUN_STATUSES:
            runs.add_metric([outcome], float(counts.get(outcome, 0)))
        cells = CounterMetricFamily(
            "persistence_cells", "cells of finished runs by outcome", labels=["outcome"]
        )
        cell_counts = store.cell_counts()
        for cell_outcome in CELL_STATUSES:
            cells.add_metric([cell_outcome], float(cell_counts.get(cell_outcome, 0)))
        cumulative, count, total = store.run_duration_buckets(RUN_DURATION_BUCKETS)
        duration = HistogramMetricFamily("persistence_run_duration_seconds", "wall time of finished runs")
        duration.add_metric(
            [],
            [
                *((str(b), float(c)) for b, c in zip(RUN_DURATION_BUCKETS, cumulative, strict=True)),
                ("+Inf", float(count)),
            ],
            total,
        )
        last_run = GaugeMetricFamily(
            "persistence_last_run_timestamp_seconds", "when the last run finished (any outcome)"
        )
        last_success = GaugeMetricFamily(
            "persistence_last_success_timestamp_seconds", "when the last run that produced scores finished"
        )
        for family, value in (
            (last_run, _ts(store.last_run_time())),
            (last_success, _ts(store.last_success_time())),
        ):
            if value is not None:
                family.add_metric([], value)
        pruned = CounterMetricFamily(
            "persistence_store_pruned",
            "rows the retention settings removed from the store, by kind (cells, trials, runs, notifications)",
            labels=["what"],
        )
        for what, count in store.pruned_counts().items():
            pruned.add_metric([what], float(count))
        yield from (runs, cells, duration, last_run, last_success, pruned)

    def _alerts(self, models: set[str]) -> Iterable[Metric]:
        store, settings = self._store, self._settings
        firing = GaugeMetricFamily(
            "persistence_alert_firing",
            "1 while the alert fires for the model, else 0",
            labels=["model", "alert"],
        )
        baseline = GaugeMetricFamily(
            "persistence_baseline_score",
            "what the drop rule compares P(M) with (its baseline)",
            labels=["model"],
        )
        states = {(s.model, s.rule): s for s in store.alert_states()}
        drop_rules = [r.name for r in settings.alerts.rules if r.kind == "drop"]
        roles = {m.name: m.role for m in settings.models}
        for model in sorted(models):
            for rule in settings.alerts.rules:
                if not rule.applies_to(model, roles[model]):
                    continue
                state = states.get((model, rule.name))
                firing.add_metric(
                    [model, rule.name], 1.0 if state is not None and state.state == "firing" else 0.0
                )
            for name in drop_rules[:1]:  # the first drop rule's baseline is the model's baseline
                state = states.get((model, name))
                if state is not None and state.baseline is not None:
                    baseline.add_metric([model], state.baseline)
        notifications = CounterMetricFamily(
            "persistence_notifications",
            "notification deliveries by notifier and outcome: delivered, retried (an attempt failed and "
            "will be retried), dropped (given up: rejected, too old, or no longer configured)",
            labels=["notifier", "outcome"],
        )
        counts = store.notification_counts()
        configured = [n.name for n in settings.alerts.notifiers]
        # A notifier removed from the config keeps its series while the store has counts for it,
        # so that the drops of its leftover notifications are seen.
        gone = sorted({name for name, _ in counts} - set(configured))
        for name in configured + gone:
            for outcome in ("delivered", "retried", "dropped"):
                notifications.add_metric([name, outcome], float(counts.get((name, outcome), 0)))
        pending = GaugeMetricFamily(
            "persistence_notification_outbox_pending", "notifications waiting in the outbox for delivery"
        )
        pending.add_metric([], float(store.outbox_pending()))
        yield from (firing, baseline, notifications, pending)
