"""The retention settings applied to the store: what `serve` does every `retention.interval` and
`persistence-monitor prune` does on demand."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from ..settings import Settings
from ..store import PruneReport, RetentionPolicy, Store

__all__ = ["describe_prune", "prune_store", "retention_policy"]

log = logging.getLogger(__name__)


def retention_policy(settings: Settings, *, now: datetime) -> RetentionPolicy:
    """The cut-offs of `settings.retention` as of `now`; a pinned baseline run is never pruned."""
    retention = settings.retention
    pinned = {
        str(run)
        for rule in settings.alerts.rules
        if getattr(rule, "baseline", None) == "pinned" and (run := getattr(rule, "pinned_run", None))
    }
    return RetentionPolicy(
        cells_before=now - timedelta(days=retention.cells_days),
        keep_runs=retention.keep_runs,
        history_before=None
        if retention.history_days is None
        else now - timedelta(days=retention.history_days),
        notifications_before=now - timedelta(days=retention.notifications_days),
        batch=retention.batch,
        protect=frozenset(pinned),
    )


def describe_prune(report: PruneReport) -> str:
    """One line for the log: what went (or would go)."""
    verb = "would prune" if report.dry_run else "pruned"
    return (
        f"retention: {verb} the cells of {report.cell_runs} run(s) ({report.cells} cells), "
        f"{report.trials} unused trial(s), {report.runs} run(s) with their P(M) and "
        f"{report.notifications} notification(s) in {report.seconds:.1f}s"
    )


def prune_store(settings: Settings, store: Store, *, now: datetime, dry_run: bool = False) -> PruneReport:
    """Apply the retention settings now (or count what they would remove) and log one line."""
    report = store.prune(retention_policy(settings, now=now), dry_run=dry_run)
    if dry_run or not report.nothing:
        log.info("%s", describe_prune(report))
    return report
