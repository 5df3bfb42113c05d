"""The result store: runs, model scores, cells, the trial cache, snapshots and model versions.

SQLite by default (`sqlite:///<path>`), PostgreSQL with `postgresql+psycopg://…`. `Store.open`
migrates the schema with the Alembic scripts shipped in `migrations/`.
"""

from ._records import (
    RUN_TRIGGERS,
    ModelVersionRecord,
    RunRecord,
    RunState,
    RunTrigger,
    SnapshotRecord,
    SnapshotStatus,
)
from ._runs import new_run_id
from ._schema import Base
from ._sources import UNDECODABLE_IMAGE
from ._store import Store

__all__ = [
    "RUN_TRIGGERS",
    "UNDECODABLE_IMAGE",
    "Base",
    "ModelVersionRecord",
    "RunRecord",
    "RunState",
    "RunTrigger",
    "SnapshotRecord",
    "SnapshotStatus",
    "Store",
    "new_run_id",
]
