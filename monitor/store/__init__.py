"""The result store: runs, model scores, cells, the trial cache, snapshots, model versions, alert
states, the notification outbox, and the leader lease and run requests of daemons sharing it.

SQLite by default (`sqlite:///<path>`), PostgreSQL with `postgresql+psycopg://…`. `Store.open`
migrates the schema with the Alembic scripts shipped in `migrations/`.
"""

from ._checks import is_hex_id
from ._counters import RUN_SECONDS_BUCKETS
from ._engine import parse_url, render_url
from ._estimates import EstimatePoint
from ._leases import Lease, RunRequest
from ._records import (
    ALERT_STATE_NAMES,
    NOTIFICATION_OUTCOMES,
    OUTBOX_STATUSES,
    RUN_TRIGGERS,
    SEVERITIES,
    AlertState,
    AlertStateName,
    ModelVersionRecord,
    NotificationOutcome,
    OutboxItem,
    OutboxStatus,
    RunRecord,
    RunState,
    RunTrigger,
    ScorePoint,
    SnapshotRecord,
    SnapshotStatus,
)
from ._retention import PRUNED_KINDS, PruneReport, RetentionPolicy
from ._runs import new_run_id
from ._schema import Base
from ._sources import UNDECODABLE_IMAGE
from ._store import Store
from ._trials import TrialPlace

__all__ = [
    "ALERT_STATE_NAMES",
    "NOTIFICATION_OUTCOMES",
    "OUTBOX_STATUSES",
    "PRUNED_KINDS",
    "RUN_SECONDS_BUCKETS",
    "RUN_TRIGGERS",
    "SEVERITIES",
    "UNDECODABLE_IMAGE",
    "AlertState",
    "AlertStateName",
    "Base",
    "EstimatePoint",
    "Lease",
    "ModelVersionRecord",
    "NotificationOutcome",
    "OutboxItem",
    "OutboxStatus",
    "PruneReport",
    "RetentionPolicy",
    "RunRecord",
    "RunRequest",
    "RunState",
    "RunTrigger",
    "ScorePoint",
    "SnapshotRecord",
    "SnapshotStatus",
    "Store",
    "TrialPlace",
    "is_hex_id",
    "new_run_id",
    "redacted_database_url",
]


def redacted_database_url(url: str) -> str:
    """`database_url` as it may be shown: without password or query, or a placeholder."""
    try:
        return render_url(parse_url(url))
    except Exception:
        return "(database_url not shown: it does not parse)"
