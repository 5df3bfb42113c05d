"""The result store, on SQLite in tmp_path and on a real PostgreSQL (see tests/_postgres.py)."""

from __future__ import annotations

import dataclasses
import math
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import JSON, column, insert, inspect, select, table, text, update
from sqlalchemy.orm import Session

from monitor.errors import StoreError
from monitor.store import (
    RUN_TRIGGERS,
    UNDECODABLE_IMAGE,
    Base,
    SnapshotRecord,
    Store,
    new_run_id,
)
from monitor.store._engine import connect_engine, parse_url
from monitor.store._migrate import alembic_config, head_revision
from monitor.store._schema import ModelVersionRow, RunModelRow, RunRow, utcnow
from monitor.types import CellResult, ModelScore, ModelVersion, TrialResult
from tests._store import DIGEST_A, DIGEST_B, T0, cell, model_score, new_run_id_begun, plain_engine, trial


def save(store: Store, result: TrialResult, run_id: str) -> None:
    store.save_trial(
        result, run_id=run_id, model="r18", task="defects", dataset="line-a", snapshot="s1", strategy="linear"
    )


def run(
    store: Store,
    *,
    hours: int,
    scores: list[ModelScore],
    status: str = "completed",
    cells: list[CellResult] | None = None,
) -> str:
    run_id = new_run_id()
    store.begin_run(
        run_id,
        trigger="schedule",
        config_digest="c0ffee",
        plan={"cells": []},
        started_at=T0 + timedelta(hours=hours),
    )
    store.finish_run(run_id, status=status, seconds=12.5, scores=scores, cells=cells or [])
    return run_id


# -- migrations ----------------------------------------------------------------------------------


def test_open_migrates_a_fresh_database_to_head(url: str) -> None:
    with Store.open(url):
        pass
    if url.startswith("sqlite"):
        assert Path(url.removeprefix("sqlite:///")).is_file()
    engine = plain_engine(url)
    try:
        with engine.connect() as connection:
            assert MigrationContext.configure(connection).get_current_revision() == head_revision()
            tables = set(inspect(connection).get_table_names())
        assert {"runs", "run_models", "run_cells", "trials", "snapshots", "model_versions"} <= tables
        assert {"alert_states", "outbox", "notification_counts"} <= tables
        assert {"run_plans", "counters", "leases", "run_requests", "run_estimates"} <= tables
        assert head_revision() == "0007"
        with engine.connect() as connection:
            columns = {c["name"]: c for c in inspect(connection).get_columns("runs")}
        assert {"owner", "heartbeat_at"} <= set(columns) and "plan" not in columns
        assert columns["owner"]["nullable"] and columns["heartbeat_at"]["nullable"]
    finally:
        engine.dispose()


# `runs` as revisions 0001 to 0004 had it (with the plan): what older releases wrote.
OLD_RUNS = table(
    "runs",
    *(column(name) for name in ("id", "trigger", "status", "started_at", "finished_at", "seconds")),
    column("config_digest"),
    column("plan", JSON),
)


def test_runs_written_at_revision_0001_survive_the_upgrade_and_the_downgrade(url: str) -> None:
    run_id = new_run_id()
    # The store's own engine: on SQLite it creates the folder and turns foreign keys on.
    engine = connect_engine(parse_url(url))
    try:
        with engine.begin() as connection:
            command.upgrade(alembic_config(connection), "0001")
            connection.execute(
                insert(OLD_RUNS).values(
                    id=run_id,
                    trigger="schedule",
                    status="completed",
                    started_at=T0,
                    finished_at=T0 + timedelta(minutes=2),
                    seconds=120.0,
                    config_digest="c",
                    plan={},
                )
            )
        with Store.open(url) as store:
            record = store.get_run(run_id)
            assert record is not None
            assert (record.status, record.seconds, record.owner, record.heartbeat_at) == (
                "completed",
                120.0,
                None,
                None,
            )
            begun = new_run_id_begun(store, owner="h:1")
            store.finish_run(
                begun, status="completed", seconds=2.0, scores=[model_score("r18", 0.8)], cells=[]
            )
        with engine.begin() as connection:
            command.downgrade(alembic_config(connection), "0001")
            assert MigrationContext.configure(connection).get_current_revision() == "0001"
            assert {"owner", "heartbeat_at"}.isdisjoint(
                c["name"] for c in inspect(connection).get_columns("runs")
            )
            # Dropping the columns must not cascade into the rows that reference the runs.
            models = connection.execute(select(RunModelRow.model).where(RunModelRow.run_id == begun))
            assert [m for (m,) in models] == ["r18"]
            assert connection.execute(text("SELECT count(*) FROM runs")).scalar() == 2
    finally:
        engine.dispose()


def test_opening_twice_keeps_data_and_migrates_nothing(url: str) -> None:
    with Store.open(url) as first:
        first.record_model_version(ModelVersion("r18", "torchvision:resnet18", DIGEST_A, None))
    with Store.open(url) as second:
        assert [v.digest for v in second.known_model_versions("r18")] == [DIGEST_A]


def test_models_match_the_migrated_schema(store: Store, url: str) -> None:
    # alembic `check`: autogenerate against the migrated database must find nothing to do.
    engine = plain_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path / 'monitor.db'}") as store, store._reading("test") as session:
        assert session.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert session.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_store_does_not_import_torch() -> None:
    code = "import sys, monitor.store; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# -- trials --------------------------------------------------------------------------------------


def test_trials_are_found_by_key_and_the_first_result_wins(store: Store) -> None:
    run_id = new_run_id()
    store.begin_run(run_id, trigger="cli", config_digest="c", plan={})
    save(store, trial("k1", score=0.9), run_id)
    save(
        store,
        trial("k2", seed=1, score=0.1, status="diverged", loss=math.nan, epochs=3, note="nan at epoch 2"),
        run_id,
    )
    save(store, trial("k1", score=0.2), run_id)  # computed twice (a resumed run): ignored

    found = store.find_trials(["k1", "k2", "missing", "k1"])

    assert set(found) == {"k1", "k2"}
    assert found["k1"] == trial("k1", score=0.9)
    diverged = found["k2"]
    assert (diverged.status, diverged.score, diverged.seed) == ("diverged", 0.1, 1)
    assert math.isnan(diverged.details["loss"])  # type: ignore[arg-type]
    assert {k: v for k, v in diverged.details.items() if k != "loss"} == {
        "epochs": 3,
        "note": "nan at epoch 2",
    }


def test_trials_keep_their_test_predictions(store: Store) -> None:
    from monitor.types import Predictions

    run_id = new_run_id()
    store.begin_run(run_id, trigger="cli", config_digest="c", plan={})
    labels = struct.pack("<640H", *[i // 64 for i in range(640)])
    predicted = struct.pack("<640H", *[(i // 64 + (i % 7 == 0)) % 10 for i in range(640)])
    with_predictions = TrialResult("kp", 0, "ok", 0.85, 1.0, predictions=Predictions(labels, predicted, 10))
    save(store, with_predictions, run_id)
    save(store, trial("kn"), run_id)
    found = store.find_trials(["kp", "kn"])
    assert found["kp"].predictions == Predictions(labels, predicted, 10)
    assert found["kn"].predictions is None
    with store._engine.connect() as connection:  # zlib keeps it small: 2.5 KB raw
        size = connection.execute(text("SELECT length(predictions) FROM trials WHERE key = 'kp'")).scalar()
    assert size is not None and size < 500


def test_a_score_keeps_its_seed_only_stderr_and_the_noise_of_each_dataset(store: Store) -> None:
    from monitor.types import DatasetNoise

    noise = {"defects": {"line-a": DatasetNoise("s1", 1e-5, 4e-5), "line-b": DatasetNoise("s2", 2e-5, None)}}
    score = dataclasses.replace(model_score("r18", 0.8), stderr=0.0089, stderr_seeds=0.0055, noise=noise)
    run_id = run(store, hours=1, scores=[score])
    (stored,) = store.get_run(run_id).models
    assert (stored.stderr, stored.stderr_seeds, stored.noise) == (0.0089, 0.0055, noise)


def test_scores_written_before_revision_0004_read_their_stderr_as_seed_only(url: str) -> None:
    engine = connect_engine(parse_url(url))
    run_id = new_run_id()
    try:
        with engine.begin() as connection:
            command.upgrade(alembic_config(connection), "0003")
            connection.execute(
                insert(OLD_RUNS).values(
                    id=run_id,
                    trigger="cli",
                    status="completed",
                    started_at=T0,
                    finished_at=T0,
                    seconds=1.0,
                    config_digest="c",
                    plan={},
                )
            )
            connection.execute(
                text(
                    "INSERT INTO run_models (run_id, model, position, version, digest, persistence, stderr, "
                    "coverage, cells_planned, cells_scored, task_scores, dataset_scores, strategy_scores) "
                    "VALUES (:run, 'r18', 0, 'v', 'd', 0.8, 0.01, 1.0, 1, 1, '{}', '{}', '{}')"
                ),
                {"run": run_id},
            )
        with Store.open(url) as store:
            (score,) = store.get_run(run_id).models
            assert (score.stderr, score.stderr_seeds, score.noise) == (0.01, 0.01, {})
        with engine.begin() as connection:
            command.downgrade(alembic_config(connection), "0003")
            assert "noise" not in {c["name"] for c in inspect(connection).get_columns("run_models")}
            assert "predictions" not in {c["name"] for c in inspect(connection).get_columns("trials")}
            assert connection.execute(text("SELECT count(*) FROM run_models")).scalar() == 1
    finally:
        engine.dispose()


def test_trial_lookup_is_chunked_below_the_bound_variable_limits(store: Store) -> None:
    # 70,000 keys: above SQLite's 32,766 and PostgreSQL's 65,535 bound parameters per statement.
    keys = [f"{i:064x}" for i in range(70_000)]
    run_id = new_run_id()
    store.begin_run(run_id, trigger="cli", config_digest="c", plan={})
    stored = [keys[0], keys[499], keys[500], keys[1000], keys[33_000], keys[69_999]]
    for key in stored:
        save(store, trial(key), run_id)

    assert sorted(store.find_trials(keys)) == sorted(stored)
    assert store.find_trials([]) == {}


def test_failed_or_non_finite_trials_are_refused(store: Store) -> None:
    run_id = new_run_id()
    store.begin_run(run_id, trigger="cli", config_digest="c", plan={})
    with pytest.raises(ValueError, match="only 'ok' and 'diverged'"):
        save(store, trial("k1", score=None, status="failed"), run_id)
    with pytest.raises(ValueError, match="finite"):
        save(store, trial("k2", score=math.nan), run_id)
    assert store.find_trials(["k1", "k2"]) == {}


# -- runs ----------------------------------------------------------------------------------------


def test_a_run_round_trips_with_models_and_cells_in_plan_order(store: Store) -> None:
    run_id = new_run_id()
    plan = {
        "cells": [["r18", "defects", "line-b", "full"], ["r18", "defects", "line-a", "linear"]],
        "seeds": [0, 1],
    }
    store.begin_run(run_id, trigger="api", config_digest="c0ffee", plan=plan)
    running = store.get_run(run_id)
    assert running is not None and (running.status, running.plan) == ("running", plan)

    scores = [model_score("vit", 0.61, version="factory"), model_score("r18", None)]
    cells = [
        cell("vit", "line-b", "full", 0.5),
        cell("vit", "line-a", "linear", 1.0 / 3.0, status="cached"),
        cell("r18", "line-a", "linear", 0.25, status="diverged"),
        cell("r18", "line-b", "full", None, status="failed"),
    ]
    store.finish_run(run_id, status="partial", seconds=42.5, scores=scores, cells=cells, error=None)

    record = store.get_run(run_id)
    assert record is not None
    assert (record.id, record.trigger, record.status, record.config_digest) == (
        run_id,
        "api",
        "partial",
        "c0ffee",
    )
    assert record.plan is None  # a finished run's plan is gone: its cells say the same
    assert record.seconds == 42.5
    assert record.models == scores
    assert record.cells == cells
    assert (
        record.started_at.tzinfo is UTC
        and record.finished_at is not None
        and record.finished_at.tzinfo is UTC
    )
    assert record.started_at <= record.finished_at
    assert store.get_run(new_run_id()) is None


def test_finish_run_is_one_transaction_with_the_extra_hook(store: Store) -> None:
    def failing_hook(session: Session) -> None:
        session.add(ModelVersionRow(model="hook", digest="d", architecture="a", first_seen_at=T0))
        session.flush()
        raise RuntimeError("alert evaluation crashed")

    run_id = new_run_id()
    store.begin_run(run_id, trigger="schedule", config_digest="c", plan={"cells": []})
    with pytest.raises(RuntimeError, match="alert evaluation crashed"):
        store.finish_run(
            run_id,
            status="completed",
            seconds=1.0,
            scores=[model_score("r18", 0.8)],
            cells=[cell("r18", "line-a", "linear", 0.8)],
            extra=failing_hook,
        )
    record = store.get_run(run_id)
    assert record is not None
    assert (record.status, record.models, record.cells, record.finished_at) == ("running", [], [], None)
    assert store.known_model_versions("hook") == []
    assert store.cell_counts() == {"ok": 0, "cached": 0, "diverged": 0, "failed": 0}
    assert [r.id for r in store.unfinished_runs()] == [run_id]

    # The same run can still be finished, and the hook's writes commit with it.
    def hook(session: Session) -> None:
        session.add(ModelVersionRow(model="hook", digest="d", architecture="a", first_seen_at=T0))

    store.finish_run(
        run_id, status="completed", seconds=1.0, scores=[model_score("r18", 0.8)], cells=[], extra=hook
    )
    assert [v.digest for v in store.known_model_versions("hook")] == ["d"]
    assert store.get_run(run_id).status == "completed"  # type: ignore[union-attr]


def test_finish_run_refuses_bad_input_before_writing(store: Store) -> None:
    run_id = new_run_id()
    store.begin_run(run_id, trigger="cli", config_digest="c", plan={})
    with pytest.raises(ValueError, match="finite"):
        store.finish_run(
            run_id, status="completed", seconds=1.0, scores=[model_score("r18", math.nan)], cells=[]
        )
    with pytest.raises(ValueError, match="finite"):
        store.finish_run(
            run_id,
            status="completed",
            seconds=1.0,
            scores=[],
            cells=[cell("r18", "line-a", "full", math.inf)],
        )
    with pytest.raises(ValueError, match="one of completed, partial, failed"):
        store.finish_run(run_id, status="running", seconds=1.0, scores=[], cells=[])
    with pytest.raises(ValueError, match="appears twice"):
        store.finish_run(
            run_id,
            status="completed",
            seconds=1.0,
            scores=[model_score("r18", 0.8), model_score("r18", 0.7)],
            cells=[],
        )
    assert store.get_run(run_id).status == "running"  # type: ignore[union-attr]

    store.finish_run(run_id, status="failed", seconds=1.0, scores=[], cells=[], error="no snapshot usable")
    with pytest.raises(ValueError, match="already failed"):
        store.finish_run(run_id, status="completed", seconds=1.0, scores=[], cells=[])
    with pytest.raises(ValueError, match="call begin_run first"):
        store.finish_run(new_run_id(), status="completed", seconds=1.0, scores=[], cells=[])
    assert store.get_run(run_id).error == "no snapshot usable"  # type: ignore[union-attr]


def test_begin_run_refuses_bad_ids_triggers_plans_and_naive_times(store: Store) -> None:
    with pytest.raises(ValueError, match="32 lowercase hex"):
        store.begin_run("run-1", trigger="cli", config_digest="c", plan={})
    with pytest.raises(ValueError, match="trigger"):
        store.begin_run(new_run_id(), trigger="cron", config_digest="c", plan={})
    with pytest.raises(ValueError, match="plain JSON"):
        store.begin_run(new_run_id(), trigger="cli", config_digest="c", plan={"lr": math.nan})
    with pytest.raises(ValueError, match="timezone-aware"):
        store.begin_run(
            new_run_id(), trigger="cli", config_digest="c", plan={}, started_at=datetime(2026, 1, 1)
        )
    run_id = new_run_id()
    store.begin_run(run_id, trigger="cli", config_digest="c", plan={})
    with pytest.raises(ValueError, match="exists already"):
        store.begin_run(run_id, trigger="cli", config_digest="c", plan={})
    assert store.list_runs() != [] and len(store.list_runs()) == 1


def test_the_triggers_include_startup(store: Store) -> None:
    assert set(RUN_TRIGGERS) == {"cli", "schedule", "poll", "api", "resume", "demo", "startup", "probes"}
    run_id = new_run_id_begun(store, trigger="startup")
    assert store.get_run(run_id).trigger == "startup"  # type: ignore[union-attr]


def test_begin_run_records_the_owner_and_a_first_heartbeat(store: Store) -> None:
    before = utcnow()
    owned = new_run_id_begun(store, owner="daemon-host:4242", started_at=T0)
    anonymous = new_run_id_begun(store, started_at=T0 + timedelta(hours=1))
    after = utcnow()

    record = store.get_run(owned)
    assert record is not None and record.owner == "daemon-host:4242"
    assert record.heartbeat_at is not None and record.heartbeat_at.tzinfo is UTC
    assert before <= record.heartbeat_at <= after  # now, not started_at
    assert [(r.id, r.owner, r.heartbeat_at) for r in store.unfinished_runs()] == [
        (owned, "daemon-host:4242", record.heartbeat_at),
        (anonymous, None, store.get_run(anonymous).heartbeat_at),  # type: ignore[union-attr]
    ]
    with pytest.raises(ValueError, match="owner"):
        new_run_id_begun(store, owner="h" * 256)
    with pytest.raises(ValueError, match="owner"):
        new_run_id_begun(store, owner="")


def test_resume_replaces_plan_digest_and_owner_of_a_running_run(store: Store) -> None:
    run_id = new_run_id_begun(
        store, trigger="poll", config_digest="c1", plan={"cells": [1]}, owner="old-host:1", started_at=T0
    )
    with store._writing("test") as session:  # as if the old owner died long ago
        session.execute(update(RunRow).where(RunRow.id == run_id).values(heartbeat_at=T0))
    before = utcnow()

    store.begin_run(
        run_id,
        trigger="resume",
        config_digest="c2",
        plan={"cells": [2]},
        owner="new-host:2",
        started_at=T0 + timedelta(hours=5),
        resume=True,
    )

    record = store.get_run(run_id)
    assert record is not None
    assert (record.status, record.trigger, record.started_at) == ("running", "poll", T0)
    assert (record.plan, record.config_digest, record.owner) == ({"cells": [2]}, "c2", "new-host:2")
    assert record.heartbeat_at is not None and record.heartbeat_at >= before
    assert [r.id for r in store.unfinished_runs()] == [run_id]


def test_resume_needs_a_run_that_is_still_running(store: Store) -> None:
    unknown = new_run_id()
    with pytest.raises(ValueError, match=f"no run {unknown} to resume"):
        store.begin_run(unknown, trigger="resume", config_digest="c", plan={}, resume=True)
    assert store.get_run(unknown) is None  # resuming never creates a run
    done = new_run_id_begun(store)
    store.finish_run(done, status="completed", seconds=1.0, scores=[], cells=[])
    with pytest.raises(ValueError, match="already completed: only a running"):
        store.begin_run(done, trigger="resume", config_digest="c", plan={"x": 1}, owner="h:1", resume=True)
    record = store.get_run(done)
    assert record is not None and (record.plan, record.owner) == (None, None)
    with pytest.raises(ValueError, match="exists already"):  # without resume, as before
        store.begin_run(done, trigger="cli", config_digest="c", plan={})


def test_touch_run_moves_the_heartbeat_forward(store: Store) -> None:
    run_id = new_run_id_begun(store, owner="h:1", plan={"cells": [1]})
    with store._writing("test") as session:
        session.execute(update(RunRow).where(RunRow.id == run_id).values(heartbeat_at=T0))
    before = utcnow()

    store.touch_run(run_id)

    record = store.get_run(run_id)
    assert record is not None and record.heartbeat_at is not None
    assert record.heartbeat_at >= before > T0
    assert (record.status, record.plan, record.owner) == ("running", {"cells": [1]}, "h:1")
    previous = record.heartbeat_at
    store.touch_run(run_id)
    assert store.get_run(run_id).heartbeat_at >= previous  # type: ignore[union-attr, operator]
    unknown = new_run_id()
    store.touch_run(unknown)  # not begun yet (still planning): nothing to touch, nothing created
    assert store.get_run(unknown) is None


def finished(store: Store, status: str, seconds: float, *, minutes: int) -> str:
    run_id = new_run_id_begun(store, started_at=T0)
    store.finish_run(
        run_id,
        status=status,
        seconds=seconds,
        scores=[],
        cells=[],
        finished_at=T0 + timedelta(minutes=minutes),
    )
    return run_id


def test_run_duration_buckets(store: Store) -> None:
    assert store.run_duration_buckets([1.0, 15.0]) == ([0, 0], 0, 0.0)
    finished(store, "completed", 1.0, minutes=1)
    finished(store, "partial", 5.0, minutes=2)
    finished(store, "failed", 30.0, minutes=3)
    finished(store, "completed", 120.0, minutes=4)
    new_run_id_begun(store)  # running: no seconds yet, not counted

    assert store.run_duration_buckets([1.0, 15.0, 60.0, math.inf]) == ([1, 2, 3, 4], 4, 156.0)
    assert store.run_duration_buckets([60.0, 5.0, 1.0]) == ([3, 2, 1], 4, 156.0)  # in bounds order
    assert store.run_duration_buckets([]) == ([], 4, 156.0)
    with pytest.raises(ValueError, match="bounds"):
        store.run_duration_buckets([1.0, math.nan])
    with pytest.raises(ValueError, match="stored buckets"):  # the store keeps only its own bounds
        store.run_duration_buckets([0.5])


def test_last_run_and_last_success_times(store: Store) -> None:
    assert (store.last_run_time(), store.last_success_time()) == (None, None)
    finished(store, "failed", 1.0, minutes=30)
    assert (store.last_run_time(), store.last_success_time()) == (T0 + timedelta(minutes=30), None)
    finished(store, "completed", 1.0, minutes=10)
    finished(store, "partial", 1.0, minutes=20)
    finished(store, "failed", 1.0, minutes=40)
    new_run_id_begun(store)  # running: not finished

    last_run, last_success = store.last_run_time(), store.last_success_time()
    assert (last_run, last_success) == (T0 + timedelta(minutes=40), T0 + timedelta(minutes=20))
    assert last_run is not None and last_run.tzinfo is UTC
    assert last_success is not None and last_success.tzinfo is UTC


def test_unfinished_runs_are_the_running_ones_oldest_first(store: Store) -> None:
    older, newer, done = new_run_id(), new_run_id(), new_run_id()
    store.begin_run(
        newer, trigger="schedule", config_digest="c", plan={"cells": [1]}, started_at=T0 + timedelta(hours=2)
    )
    store.begin_run(older, trigger="schedule", config_digest="c", plan={"cells": [2]}, started_at=T0)
    store.begin_run(done, trigger="cli", config_digest="c", plan={}, started_at=T0 + timedelta(hours=1))
    store.finish_run(done, status="completed", seconds=1.0, scores=[], cells=[])

    unfinished = store.unfinished_runs()

    assert [(r.id, r.plan) for r in unfinished] == [(older, {"cells": [2]}), (newer, {"cells": [1]})]
    assert all(r.status == "running" and r.finished_at is None for r in unfinished)


def test_latest_scores_and_history_skip_failed_and_unfinished_runs(store: Store) -> None:
    first = run(store, hours=0, scores=[model_score("r18", 0.9), model_score("vit", 0.7)])
    second = run(store, hours=6, scores=[model_score("r18", 0.85)], status="partial")
    run(store, hours=12, scores=[model_score("r18", 0.1)], status="failed")
    store.begin_run(
        new_run_id(), trigger="schedule", config_digest="c", plan={}, started_at=T0 + timedelta(hours=18)
    )

    latest = store.latest_scores()

    assert list(latest) == ["r18", "vit"]
    assert (latest["r18"][0].id, latest["r18"][1].persistence) == (second, 0.85)
    assert (latest["vit"][0].id, latest["vit"][1].persistence) == (first, 0.7)
    assert latest["r18"][0].status == "partial"
    history = store.score_history("r18")
    assert [(r.id, s.persistence) for r, s in history] == [(first, 0.9), (second, 0.85)]
    assert [r.id for r, _ in store.score_history("r18", limit=1)] == [second]
    assert store.score_history("nobody") == []


def test_history_keeps_order_across_many_runs(store: Store) -> None:
    # Inserted out of order: the order comes from started_at, not from insertion.
    for hours in (5, 1, 4, 2, 3):
        run(store, hours=hours, scores=[model_score("r18", hours / 10)])
    assert [s.persistence for _, s in store.score_history("r18")] == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert [s.persistence for _, s in store.score_history("r18", limit=2)] == [0.4, 0.5]
    assert [r.started_at for r in store.list_runs(limit=2)] == [
        T0 + timedelta(hours=5),
        T0 + timedelta(hours=4),
    ]


def test_latest_cells_come_from_the_models_latest_finished_run(store: Store) -> None:
    old = [cell("r18", "line-a", "linear", 0.9)]
    new = [
        cell("r18", "line-b", "full", 0.7),
        cell("vit", "line-b", "full", 0.6),
        cell("r18", "line-a", "linear", 0.8),
    ]
    run(store, hours=0, scores=[model_score("r18", 0.9)], cells=old)
    run(store, hours=1, scores=[model_score("r18", 0.75), model_score("vit", 0.6)], cells=new)
    run(
        store,
        hours=2,
        scores=[model_score("r18", 0.0)],
        cells=[cell("r18", "line-a", "linear", None, "failed")],
        status="failed",
    )

    assert store.latest_cells("r18") == [new[0], new[2]]
    assert store.latest_cells("vit") == [new[1]]
    assert store.latest_cells("nobody") == []


def test_list_runs_newest_first_with_models_without_cells(store: Store) -> None:
    ids = [
        run(
            store,
            hours=h,
            scores=[model_score("r18", 0.8)],
            cells=[cell("r18", "a", "b", 0.8)],
            status=status,
        )
        for h, status in enumerate(["completed", "failed", "partial"])
    ]
    runs = store.list_runs()
    assert [r.id for r in runs] == ids[::-1]
    assert all(r.cells == [] and [m.model for m in r.models] == ["r18"] for r in runs)
    assert [r.id for r in store.list_runs(limit=1)] == [ids[2]]
    assert [r.id for r in store.list_runs(status="failed")] == [ids[1]]


def test_run_and_cell_counts(store: Store) -> None:
    assert store.run_counts() == {"completed": 0, "partial": 0, "failed": 0}
    run(store, hours=0, scores=[], cells=[cell("r18", "a", "x", 0.8), cell("r18", "a", "y", 0.8, "cached")])
    run(store, hours=1, scores=[], cells=[cell("r18", "a", "x", None, "failed")], status="partial")
    run(store, hours=2, scores=[], cells=[cell("r18", "a", "x", 0.8, "cached")])
    store.begin_run(new_run_id(), trigger="cli", config_digest="c", plan={})

    assert store.run_counts() == {"completed": 2, "partial": 1, "failed": 0}
    assert store.cell_counts() == {"ok": 1, "cached": 2, "diverged": 0, "failed": 1}


def test_run_models_keep_the_full_digest_the_score_carries(store: Store, url: str) -> None:
    # The digest travels with the score (`ModelScore.digest`, set by the pipeline from the
    # resolved version): the store keeps what it is given and derives nothing.
    store.record_model_version(ModelVersion("r18", "torchvision:resnet18", DIGEST_B, None))  # not this one
    full = dataclasses.replace(model_score("r18", 0.8), version=DIGEST_A[:12], digest=DIGEST_A)
    unknown = model_score("vit", 0.5, version="unknown")  # a model whose version could not be resolved
    run_id = run(store, hours=0, scores=[full, unknown])
    engine = plain_engine(url)
    try:
        with Session(engine) as session:
            rows = session.scalars(select(RunModelRow).where(RunModelRow.run_id == run_id))
            assert {row.model: row.digest for row in rows} == {"r18": DIGEST_A, "vit": ""}
    finally:
        engine.dispose()
    record = store.get_run(run_id)
    assert record is not None and [m.digest for m in record.models] == [DIGEST_A, ""]
    assert record.models[0] == full  # a stored score reads back as it was written, digest included


# -- snapshots and model versions ----------------------------------------------------------------


def snapshot(snapshot_id: str, digest: str = DIGEST_A, **fields: object) -> SnapshotRecord:
    values: dict[str, object] = {
        "task": "defects",
        "dataset": "line-a",
        "snapshot": snapshot_id,
        "digest": digest,
        "source": "/srv/snapshots/line-a",
        "status": "ok",
        "n_train": 640,
        "n_test": 160,
        "n_classes": 10,
        "timestamp": T0,
    }
    values.update(fields)
    return SnapshotRecord(**values)  # type: ignore[arg-type]


def test_snapshots_upsert_and_the_last_good_one_skips_rejected(store: Store) -> None:
    store.record_snapshot(snapshot("2026-11-01T00"))
    first_seen = store.snapshot_record("defects", "line-a", "2026-11-01T00", DIGEST_A).first_seen_at  # type: ignore[union-attr]
    store.record_snapshot(snapshot("2026-11-01T00", skipped=2, message="2 images skipped"))
    store.record_snapshot(snapshot("2026-11-01T06", DIGEST_B))
    store.record_snapshot(
        snapshot(
            "2026-11-01T12",
            status="rejected",
            reason="too_few_images",
            message="2 images in class cat",
            n_train=None,
        )
    )
    store.record_snapshot(snapshot("2026-11-02T00", dataset="line-b"))

    updated = store.snapshot_record("defects", "line-a", "2026-11-01T00", DIGEST_A)
    assert updated is not None
    assert (updated.skipped, updated.message, updated.first_seen_at) == (2, "2 images skipped", first_seen)
    assert (
        updated.timestamp == T0 and updated.first_seen_at is not None and updated.first_seen_at.tzinfo is UTC
    )
    good = store.last_good_snapshot("defects", "line-a")
    assert good is not None and (good.snapshot, good.digest) == ("2026-11-01T06", DIGEST_B)
    assert store.last_good_snapshot("defects", "nowhere") is None
    assert store.snapshot_record("defects", "line-a", "2026-11-01T00", DIGEST_B) is None


def test_snapshot_records_are_validated(store: Store) -> None:
    with pytest.raises(ValueError, match="without a reason"):
        store.record_snapshot(snapshot("s1", status="rejected"))
    with pytest.raises(ValueError, match="'ok' or 'rejected'"):
        store.record_snapshot(snapshot("s1", status="broken"))


def test_snapshot_error_counts_by_reason_and_skipped_images(store: Store) -> None:
    assert store.snapshot_error_counts() == {}
    store.record_snapshot(snapshot("s1", skipped=3))
    store.record_snapshot(snapshot("s2", skipped=4))
    store.record_snapshot(snapshot("s3", status="rejected", reason="too_few_images"))
    store.record_snapshot(snapshot("s4", status="rejected", reason="too_few_images"))
    store.record_snapshot(snapshot("s4", DIGEST_B, status="rejected", reason="checksum_mismatch"))
    store.record_snapshot(snapshot("s5", dataset="line-b", status="rejected", reason="no_images"))
    store.record_snapshot(snapshot("s1", skipped=3))  # seen again: counted once

    assert store.snapshot_error_counts() == {
        ("defects", "line-a", UNDECODABLE_IMAGE): 7,
        ("defects", "line-a", "too_few_images"): 2,
        ("defects", "line-a", "checksum_mismatch"): 1,
        ("defects", "line-b", "no_images"): 1,
    }


def test_model_versions_are_recorded_once_newest_first(store: Store) -> None:
    store.record_model_version(ModelVersion("r18", "torchvision:resnet18", DIGEST_A, Path("/m/a.pt")))
    store.record_model_version(ModelVersion("r18", "torchvision:resnet18", DIGEST_B, Path("/m/b.pt")))
    store.record_model_version(ModelVersion("r18", "torchvision:resnet18", DIGEST_A, Path("/m/a.pt")))
    store.record_model_version(ModelVersion("vit", "torchvision:vit_b_16", "", None))

    versions = store.known_model_versions("r18")

    assert [(v.digest, v.version) for v in versions] == [(DIGEST_B, DIGEST_B[:12]), (DIGEST_A, DIGEST_A[:12])]
    assert versions[0].first_seen_at >= versions[1].first_seen_at
    assert [(v.version, v.architecture) for v in store.known_model_versions("vit")] == [
        ("factory", "torchvision:vit_b_16")
    ]


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql+psycopg://monitor:s3cret-pw@127.0.0.1:1/monitor", "monitor:***@127.0.0.1:1"),
        (
            "postgresql://monitor:s3cret-pw@127.0.0.1:1/monitor?connect_timeout=2",
            "postgresql+psycopg://monitor:***@",
        ),
        ("mysql://monitor:s3cret-pw@db/monitor", "unsupported database 'mysql'"),
        ("not a url at all s3cret-pw", "not a database URL"),
        ("postgresql+nodriver://monitor:s3cret-pw@db/monitor", "unknown database driver 'nodriver'"),
    ],
)
def test_bad_or_unreachable_databases_raise_store_errors_without_the_password(
    url: str, expected: str
) -> None:
    with pytest.raises(StoreError) as caught:
        Store.open(url)
    message = str(caught.value)
    assert "s3cret-pw" not in message
    assert expected in message
    assert "database_url" in message


def test_an_unusable_sqlite_path_raises_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(StoreError, match="cannot create its directory"):
        Store.open(f"sqlite:///{tmp_path / 'a-file' / 'monitor.db'}")
    (tmp_path / "garbage.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="cannot open the result store"):
        Store.open(f"sqlite:///{tmp_path / 'garbage.db'}")


def test_a_schema_from_a_newer_version_is_refused(url: str) -> None:
    with Store.open(url):
        pass
    engine = plain_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    finally:
        engine.dispose()
    with pytest.raises(
        StoreError, match="revision 9999, which this version of persistence-monitor does not know"
    ):
        Store.open(url)


def test_ping_survives_connections_the_server_dropped(store: Store, url: str) -> None:
    store.ping()
    if url.startswith("postgresql"):
        engine = plain_engine(url)
        try:
            with engine.begin() as connection:
                # A server restart or a proxy timeout kills pooled connections: pre-ping heals them.
                connection.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE pid <> pg_backend_pid() AND datname = current_database()"
                    )
                )
        finally:
            engine.dispose()
    store.ping()
    assert store.run_counts()["completed"] == 0


def test_an_unreachable_server_fails_ping_with_a_store_error() -> None:
    url = parse_url("postgresql+psycopg://monitor:s3cret-pw@127.0.0.1:1/monitor?connect_timeout=2")
    unreachable = Store(connect_engine(url), url)  # as if the server went away after Store.open
    with pytest.raises(StoreError) as caught:
        unreachable.ping()
    message = str(caught.value)
    assert "s3cret-pw" not in message
    assert "could not answer a ping" in message and "running and reachable" in message
    assert "s3cret-pw" not in repr(caught.value.__cause__)


def test_database_errors_at_run_time_become_store_errors(store: Store, url: str) -> None:
    engine = plain_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(text("DROP TABLE counters"))
    finally:
        engine.dispose()
    with pytest.raises(StoreError, match=r"could not count cells: .*counters"):
        store.cell_counts()


# -- concurrency ---------------------------------------------------------------------------------


def test_processes_starting_together_migrate_once(url: str) -> None:
    # A daemon and its workers start at the same time on a fresh database.
    opened: list[Store] = []
    errors: list[BaseException] = []

    def open_store() -> None:
        try:
            opened.append(Store.open(url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    try:
        assert errors == [], "; ".join(f"{type(exc).__name__}: {exc}" for exc in errors)
        assert len(opened) == 4
        opened[0].record_model_version(ModelVersion("r18", "arch", DIGEST_A, None))
        assert [v.digest for v in opened[3].known_model_versions("r18")] == [DIGEST_A]
    finally:
        for store in opened:
            store.close()


def test_opening_a_new_database_waits_while_another_connection_holds_its_lock(tmp_path: Path) -> None:
    # The first open switches a new file to WAL; SQLite does not wait (busy timeout) for that switch
    # when another connection holds the lock, it fails at once. Here the other connection is a raw
    # one, still in rollback-journal mode, that lets go a moment after the open started.
    path = tmp_path / "monitor.db"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    opened: list[Store] = []
    errors: list[BaseException] = []

    def open_store() -> None:
        try:
            opened.append(Store.open(f"sqlite:///{path}"))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=open_store)
    thread.start()
    time.sleep(0.3)
    other.execute("ROLLBACK")
    other.close()
    thread.join(timeout=60)
    try:
        assert errors == [], "; ".join(f"{type(exc).__name__}: {exc}" for exc in errors)
        assert len(opened) == 1
        with opened[0]._reading("read the journal mode") as session:
            assert session.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    finally:
        for store in opened:
            store.close()


def test_two_stores_write_concurrently_without_lock_errors(url: str) -> None:
    # The daemon and a worker: two processes, two engines, one database, interleaved writes.
    daemon, worker = Store.open(url), Store.open(url)
    errors: list[BaseException] = []
    run_ids = [new_run_id() for _ in range(20)]
    for run_id in run_ids:
        daemon.begin_run(run_id, trigger="schedule", config_digest="c", plan={})

    def as_daemon() -> None:
        try:
            for i, run_id in enumerate(run_ids):
                daemon.record_snapshot(snapshot(f"s{i:03d}", skipped=1))
                daemon.finish_run(
                    run_id,
                    status="completed",
                    seconds=1.0,
                    scores=[model_score("r18", 0.5)],
                    cells=[cell("r18", f"d{j}", "linear", 0.5) for j in range(10)],
                )
        except BaseException as exc:
            errors.append(exc)

    def as_worker(offset: int) -> None:
        try:
            for i in range(60):
                key = f"{offset}-{i}"
                if not worker.find_trials([key]):  # read, then write: the stale-snapshot case
                    save(worker, trial(key), run_ids[i % len(run_ids)])
                worker.record_model_version(ModelVersion("r18", "arch", f"{offset}-{i % 5}", None))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=as_daemon)] + [
        threading.Thread(target=as_worker, args=(n,)) for n in range(3)
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert errors == []
        assert daemon.run_counts()["completed"] == 20
        assert daemon.cell_counts()["ok"] == 200
        assert len(worker.find_trials(f"{n}-{i}" for n in range(3) for i in range(60))) == 180
        assert len(daemon.known_model_versions("r18")) == 15
    finally:
        daemon.close()
        worker.close()


def test_trials_of_one_run_can_be_saved_in_one_transaction(store: Store) -> None:
    from monitor.store import TrialPlace

    run_id = new_run_id_begun(store)
    save(store, trial("k0", score=0.1), run_id)
    place = TrialPlace("r18", "defects", "line-a", "s1", "linear")
    with pytest.raises(ValueError, match="only 'ok' and 'diverged'"):
        store.save_trials(
            [(trial("k1"), place), (trial("k2", status="failed", score=None), place)], run_id=run_id
        )
    assert store.find_trials(["k1", "k2"]) == {}  # all or none
    store.save_trials(
        [(trial("k0", score=0.9), place), (trial("k1"), place), (trial("k2"), place)], run_id=run_id
    )
    found = store.find_trials(["k0", "k1", "k2"])
    assert set(found) == {"k0", "k1", "k2"} and found["k0"].score == 0.1  # the first result stays
    store.save_trials([], run_id=run_id)
