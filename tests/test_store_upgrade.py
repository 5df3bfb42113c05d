"""A store written by persistence-monitor 0.1.0 upgrades in place and keeps its whole history.

`data/store-v0.1.sqlite.gz` was written by the 0.1.0 code itself (`data/write_v01_store.py`
documents how, and the history it holds); on PostgreSQL the same rows are copied into a database
at that release's schema revision (0004). Every expectation is computed from the generator's
description, not read back through the code under test.
"""

from __future__ import annotations

import gzip
import logging
import math
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import MetaData, create_engine, inspect, select, text

from monitor.store import RetentionPolicy, Store, new_run_id
from monitor.store._engine import connect_engine, parse_url
from monitor.store._migrate import alembic_config, head_revision
from monitor.store._schema import TrialRow

FIXTURE = Path(__file__).with_name("data") / "store-v0.1.sqlite.gz"
T0 = datetime(2025, 6, 1, tzinfo=UTC)
RUNS = 300
# Tables in foreign-key order, as revision 0004 has them.
TABLES = (
    "model_versions",
    "runs",
    "run_models",
    "run_cells",
    "trials",
    "snapshots",
    "alert_states",
    "outbox",
    "notification_counts",
)


def status(i: int) -> str:
    return "failed" if i % 50 == 49 else "partial" if i % 10 == 9 else "completed"


def started(i: int) -> datetime:
    return T0 + timedelta(hours=6 * i)


SCORED = [i for i in range(RUNS - 1) if status(i) != "failed"]  # the last run is still running


def unpack(tmp_path: Path) -> Path:
    path = tmp_path / "v01.sqlite"
    with gzip.open(FIXTURE, "rb") as packed, path.open("wb") as out:
        shutil.copyfileobj(packed, out)
    return path


def to_postgres(sqlite_path: Path, url: str) -> None:
    """The 0.1.0 store's rows, copied into a PostgreSQL database at revision 0004."""
    engine = connect_engine(parse_url(url))
    source = create_engine(f"sqlite:///{sqlite_path}")
    try:
        with engine.begin() as connection:
            command.upgrade(alembic_config(connection), "0004")
        old = MetaData()
        old.reflect(source)
        target = MetaData()
        target.reflect(engine)
        with source.connect() as reading, engine.begin() as writing:
            for name in TABLES:
                rows = [
                    {
                        k: v.replace(tzinfo=UTC) if isinstance(v, datetime) else v
                        for k, v in row._mapping.items()
                    }
                    for row in reading.execute(select(old.tables[name]))
                ]
                if rows:
                    writing.execute(target.tables[name].insert(), rows)
    finally:
        engine.dispose()
        source.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=[pytest.mark.postgres, pytest.mark.slow])])
def v01_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    path = unpack(tmp_path)
    if request.param == "sqlite":
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("postgres_fresh_url")
    to_postgres(path, url)
    return url


def test_the_fixture_is_a_v01_store(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{unpack(tmp_path)}")
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0004"
            assert "plan" in {c["name"] for c in inspect(connection).get_columns("runs")}
            assert connection.execute(text("SELECT count(*) FROM runs")).scalar() == RUNS
    finally:
        engine.dispose()


def test_a_v01_store_upgrades_in_place_and_keeps_its_history(v01_url: str, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="monitor.store.migrations"), Store.open(v01_url) as store:
        assert any("migrating the store (0005)" in r.getMessage() for r in caplog.records)
        # The whole P(M) history of both models, in order, with its values.
        history = store.persistence_history("m0", limit=10_000)
        assert [p.run_id for p in history] == [f"{i:032x}" for i in SCORED]
        assert [p.persistence for p in history] == pytest.approx([0.9 - i / 10_000 for i in SCORED])
        assert [p.started_at for p in history] == [started(i) for i in SCORED]
        assert all(p.stderr == 0.01 and p.stderr_seeds == 0.005 for p in history)
        assert len(store.score_history("m1", limit=10_000)) == len(SCORED)
        first = store.first_score("m0")
        assert first is not None and first[0].id == f"{0:032x}"
        latest = store.latest_scores(["m0", "m1"])
        assert latest["m0"][0].id == f"{SCORED[-1]:032x}" and latest["m0"][1].persistence == pytest.approx(
            0.9 - SCORED[-1] / 10_000
        )
        assert len(store.latest_cells("m1")) == 6
        # The counters start from the stored history.
        finished = range(RUNS - 1)
        assert store.run_counts() == {
            s: sum(1 for i in finished if status(i) == s) for s in ("completed", "partial", "failed")
        }
        ok = sum(6 + (6 if i % 4 == 0 else 0) for i in SCORED)
        assert store.cell_counts() == {"ok": ok, "cached": 12 * len(SCORED) - ok, "diverged": 0, "failed": 0}
        seconds = [10.0 + i % 7 for i in finished]
        assert store.run_duration_buckets([15.0, 30.0, math.inf]) == (
            [sum(1 for s in seconds if s <= 15.0), len(seconds), len(seconds)],
            len(seconds),
            pytest.approx(sum(seconds)),
        )
        # The interrupted run kept its plan: it can be resumed.
        (unfinished,) = store.unfinished_runs()
        assert unfinished.id == f"{RUNS - 1:032x}" and len(unfinished.plan["cells"]) == 12
        # Each trial knows the newest run that used it: dataset a's snapshot 12 was used by runs
        # 48..51, of which 49 failed (no cells): 51 is the newest.
        with store._reading("test") as session:
            used = dict(session.execute(select(TrialRow.key, TrialRow.last_used_at)).all())
        assert used["a12-m0-full-0".ljust(64, "0")] == started(51)
        assert used["b48-m1-linear-1".ljust(64, "0")] == started(48)
        assert None not in used.values()

        # It goes on as a current store: a new run counts on top, retention prunes it.
        run_id = new_run_id()
        store.begin_run(
            run_id, trigger="cli", config_digest="c", plan={"cells": []}, started_at=started(RUNS)
        )
        store.finish_run(run_id, status="failed", seconds=1.0, scores=[], cells=[])
        assert store.run_counts()["failed"] == 6
        report = store.prune(
            RetentionPolicy(
                cells_before=started(RUNS - 40),
                keep_runs=5,
                history_before=started(100),
                notifications_before=started(0),
                batch=50,
            )
        )
        assert report.cell_runs == len([i for i in SCORED if i < RUNS - 40])
        assert report.runs == len([i for i in range(1, 100)])  # all but run 0, each model's first
        assert len(store.persistence_history("m0", limit=10_000)) == len(SCORED) - len(
            [i for i in SCORED if 0 < i < 100]
        )
        assert store.run_counts()["completed"] == sum(1 for i in finished if status(i) == "completed")


def test_the_upgrade_is_at_head_and_matches_the_models(v01_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from monitor.store import Base

    Store.open(v01_url).close()
    engine = create_engine(v01_url)
    try:
        with engine.connect() as connection:
            assert MigrationContext.configure(connection).get_current_revision() == head_revision()
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()
