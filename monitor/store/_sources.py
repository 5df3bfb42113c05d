"""What the sources found: every snapshot version (accepted or rejected) and every model version."""

from __future__ import annotations

from sqlalchemy import ColumnElement, func, select

from ..types import ModelVersion
from ._convert import snapshot_record, snapshot_values
from ._records import ModelVersionRecord, SnapshotRecord
from ._schema import ModelVersionRow, SnapshotRow, utcnow
from ._sessions import Sessions

__all__ = ["UNDECODABLE_IMAGE", "SourceLog"]

# Reason under which skipped (undecodable) images are counted by `snapshot_error_counts`.
UNDECODABLE_IMAGE = "undecodable_image"


class SourceLog(Sessions):
    """Snapshot versions and model versions, as the sources reported them."""

    def record_snapshot(self, record: SnapshotRecord) -> None:
        """Insert or update a snapshot version by (task, dataset, snapshot, digest).

        An update keeps the version's `first_seen_at`.
        """
        values = snapshot_values(record)
        keys = ("task", "dataset", "snapshot", "digest")
        statement = self._insert(SnapshotRow).values(**values, first_seen_at=utcnow())
        statement = statement.on_conflict_do_update(
            index_elements=list(keys),
            set_={name: statement.excluded[name] for name in values if name not in keys},
        )
        with self._writing(f"record snapshot {record.task}/{record.dataset}/{record.snapshot}") as session:
            session.execute(statement)

    def snapshot_record(self, task: str, dataset: str, snapshot: str, digest: str) -> SnapshotRecord | None:
        """The recorded version of a snapshot, or None if it was never recorded."""
        query = select(SnapshotRow).where(
            SnapshotRow.task == task,
            SnapshotRow.dataset == dataset,
            SnapshotRow.snapshot == snapshot,
            SnapshotRow.digest == digest,
        )
        with self._reading(f"read snapshot {task}/{dataset}/{snapshot}") as session:
            row = session.scalar(query)
            return snapshot_record(row) if row is not None else None

    def last_good_snapshot(self, task: str, dataset: str) -> SnapshotRecord | None:
        """The accepted snapshot with the greatest id (the latest), skipping rejected ones."""
        snapshot_id: ColumnElement[str] = SnapshotRow.snapshot.expression
        if self._engine.dialect.name == "postgresql":
            # Ids sort as Python sorts strings (by code point); a PostgreSQL locale collation would
            # ignore punctuation and case. SQLite's default BINARY collation already does this.
            snapshot_id = SnapshotRow.snapshot.collate("C")
        query = (
            select(SnapshotRow)
            .where(SnapshotRow.task == task, SnapshotRow.dataset == dataset, SnapshotRow.status == "ok")
            .order_by(snapshot_id.desc(), SnapshotRow.first_seen_at.desc(), SnapshotRow.id.desc())
            .limit(1)
        )
        with self._reading(f"read the last good snapshot of {task}/{dataset}") as session:
            row = session.scalar(query)
            return snapshot_record(row) if row is not None else None

    def snapshot_error_counts(self) -> dict[tuple[str, str, str], int]:
        """(task, dataset, reason) -> count: rejected snapshots by reason, plus skipped images.

        Skipped (undecodable) images of every recorded version are summed under the reason
        `undecodable_image`. The counts only grow as long as a version's verdict does not change,
        which is what a Prometheus counter needs.
        """
        rejected = (
            select(SnapshotRow.task, SnapshotRow.dataset, SnapshotRow.reason, func.count())
            .where(SnapshotRow.status == "rejected")
            .group_by(SnapshotRow.task, SnapshotRow.dataset, SnapshotRow.reason)
        )
        skipped = (
            select(SnapshotRow.task, SnapshotRow.dataset, func.sum(SnapshotRow.skipped))
            .group_by(SnapshotRow.task, SnapshotRow.dataset)
            .having(func.sum(SnapshotRow.skipped) > 0)
        )
        counts: dict[tuple[str, str, str], int] = {}
        with self._reading("count snapshot errors") as session:
            for task, dataset, reason, count in session.execute(rejected):
                counts[(task, dataset, reason or "unknown")] = int(count)
            for task, dataset, images in session.execute(skipped):
                key = (task, dataset, UNDECODABLE_IMAGE)
                counts[key] = counts.get(key, 0) + int(images)
        return counts

    def record_model_version(self, version: ModelVersion) -> None:
        """Remember a model's weights digest, the first time it is seen."""
        statement = (
            self._insert(ModelVersionRow)
            .values(
                model=version.model,
                digest=version.digest,
                architecture=version.architecture,
                first_seen_at=utcnow(),
            )
            .on_conflict_do_nothing(index_elements=["model", "digest"])
        )
        with self._writing(f"record a version of model {version.model}") as session:
            session.execute(statement)

    def known_model_versions(self, model: str) -> list[ModelVersionRecord]:
        """Every weights digest seen for `model`, the newest first."""
        query = (
            select(ModelVersionRow)
            .where(ModelVersionRow.model == model)
            .order_by(ModelVersionRow.first_seen_at.desc(), ModelVersionRow.id.desc())
        )
        with self._reading(f"list the versions of model {model}") as session:
            return [
                ModelVersionRecord(
                    model=row.model,
                    digest=row.digest,
                    architecture=row.architecture,
                    first_seen_at=row.first_seen_at,
                )
                for row in session.scalars(query)
            ]
