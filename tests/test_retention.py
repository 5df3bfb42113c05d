"""Retention with a frozen clock: what goes, what stays, and that caching and resume still work.

The history: 12 runs of two models, six hours apart (T0 .. T0+66h), each with two cells per model
whose trials are shared with the run before (a cached cell) or new (a new snapshot). Every
expectation below is worked out by hand from that history, not from the code.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from monitor.store import RetentionPolicy, Store, new_run_id
from monitor.store._schema import RunCellRow, RunModelRow, RunRow, TrialRow
from monitor.types import CellResult
from tests._store import T0, model_score, trial

# The `store` fixture (SQLite and PostgreSQL) is tests/_store.py's; `workspace` is tests/_pipeline.py's.

HOURS = 6
RUNS = 12


def history_cell(model: str, dataset: str, keys: tuple[str, ...]) -> CellResult:
    return CellResult(
        model=model,
        task="defects",
        dataset=dataset,
        snapshot="s",
        strategy="linear",
        status="ok",
        score=0.8,
        seed_scores=(0.8,) * len(keys),
        seconds=1.0,
        error=None,
        keys=keys,
    )


def write_history(store: Store) -> list[str]:
    """Run i uses trial `a-{i // 4}` (dataset a: a new snapshot every 4th run, cached between) and
    `b-{i}` (dataset b: new every run). Returns the run ids, oldest first."""
    ids = []
    for i in range(RUNS):
        run_id = new_run_id()
        started = T0 + timedelta(hours=HOURS * i)
        store.begin_run(run_id, trigger="schedule", config_digest="c", plan={"cells": []}, started_at=started)
        for key in (f"a-{i // 4}", f"b-{i}"):
            if not store.find_trials([key]):
                store.save_trial(
                    trial(key),
                    run_id=run_id,
                    model="r18",
                    task="defects",
                    dataset=key[0],
                    snapshot="s",
                    strategy="linear",
                )
        cells = [history_cell(m, "a", (f"a-{i // 4}",)) for m in ("r18", "vit")]
        cells += [history_cell(m, "b", (f"b-{i}",)) for m in ("r18", "vit")]
        store.finish_run(
            run_id,
            status="completed",
            seconds=10.0,
            scores=[model_score("r18", 0.8 - i / 100), model_score("vit", 0.7)],
            cells=cells,
            finished_at=started + timedelta(minutes=5),
        )
        ids.append(run_id)
    return ids


def policy(**fields: object) -> RetentionPolicy:
    values: dict[str, object] = {
        "cells_before": T0 + timedelta(hours=HOURS * 8),  # runs 0..7 are past the cell window
        "keep_runs": 2,
        "history_before": T0 + timedelta(hours=HOURS * 3),  # runs 0..2 are past the history window
        "notifications_before": T0,
        "batch": 2,
    }
    values.update(fields)
    return RetentionPolicy(**values)  # type: ignore[arg-type]


def cells_of(store: Store) -> dict[str, int]:
    with store._reading("test") as session:
        rows = session.execute(select(RunCellRow.run_id, func.count()).group_by(RunCellRow.run_id))
        return dict(rows.all())


def trial_keys(store: Store) -> set[str]:
    with store._reading("test") as session:
        return set(session.scalars(select(TrialRow.key)))


def run_ids(store: Store) -> set[str]:
    with store._reading("test") as session:
        return set(session.scalars(select(RunRow.id)))


def test_a_prune_keeps_the_window_the_latest_runs_and_p_m_history(store: Store) -> None:
    ids = write_history(store)
    before_counts = (store.cell_counts(), store.run_counts())
    dry = store.prune(policy(), dry_run=True)
    assert cells_of(store) == {run_id: 4 for run_id in ids} and len(trial_keys(store)) == 3 + 12  # untouched

    report = store.prune(policy())
    # Cells: runs 0..7 started before the window; none of them is among the latest 2 (10, 11), but
    # run 0 is each model's first run (the `first` baseline)... which keeps its P(M), not its cells.
    assert cells_of(store) == {run_id: 4 for run_id in ids[8:]}
    assert (report.cell_runs, report.cells) == (8, 32)
    # Trials: the runs that keep cells (8..11) started at T0+48h and use a-2 and b-8..b-11; every
    # other trial was last used before T0+48h.
    assert trial_keys(store) == {"a-2", "b-8", "b-9", "b-10", "b-11"}
    assert report.trials == 15 - 5
    # Runs: 0..2 started before the history window and have no cells left, but run 0 is the first
    # run of both models: runs 1 and 2 go, with their P(M).
    assert run_ids(store) == set(ids) - {ids[1], ids[2]}
    assert report.runs == 2
    # The dry run said the same, and the counters only grew.
    assert (dry.cell_runs, dry.cells, dry.trials, dry.runs) == (8, 32, 10, 2) and dry.dry_run
    assert (store.cell_counts(), store.run_counts()) == before_counts
    assert store.pruned_counts() == {"cells": 32, "trials": 10, "runs": 2, "notifications": 0}
    # P(M) history: run 0, then 3..11, with their scores.
    history = store.persistence_history("r18", limit=100)
    assert [p.run_id for p in history] == [ids[0], *ids[3:]]
    assert history[1].persistence == pytest.approx(0.8 - 3 / 100)
    first = store.first_score("r18")
    assert first is not None and first[0].id == ids[0]
    assert store.latest_cells("r18") and store.latest_scores(["r18"])["r18"][0].id == ids[-1]
    # A second pass finds nothing to do.
    again = store.prune(policy())
    assert again.nothing and store.pruned_counts()["cells"] == 32


def test_the_latest_runs_keep_their_cells_however_old(store: Store) -> None:
    ids = write_history(store)
    report = store.prune(policy(cells_before=T0 + timedelta(days=365), keep_runs=3, history_before=None))
    assert cells_of(store) == {run_id: 4 for run_id in ids[-3:]}
    assert report.runs == 0 and run_ids(store) == set(ids)  # history_before None: P(M) forever
    assert trial_keys(store) == {"a-2", "b-9", "b-10", "b-11"}


def test_pinned_runs_keep_everything_and_running_runs_keep_their_plans_trials(store: Store) -> None:
    ids = write_history(store)
    # A run interrupted mid-way (still running) planned cells that reuse the old trials b-0 and a-0.
    running = new_run_id()
    store.begin_run(
        running,
        trigger="schedule",
        config_digest="c",
        plan={"cells": [{"keys": ["b-0", "a-0"]}, {"keys": ["b-1"]}]},
        started_at=T0 + timedelta(hours=HOURS * RUNS),
    )
    store.prune(policy(protect=frozenset({ids[1]})))
    assert ids[1] in cells_of(store) and ids[1] in run_ids(store)  # pinned: cells and P(M)
    assert running in run_ids(store)
    # b-1 is the pinned run's; b-0 and a-0 are the running run's plan: resuming finds them cached.
    assert {"a-0", "b-0", "b-1"} <= trial_keys(store)
    assert set(store.find_trials(["b-0", "a-0", "b-1"])) == {"b-0", "a-0", "b-1"}
    (unfinished,) = store.unfinished_runs()
    assert unfinished.id == running and unfinished.plan == {
        "cells": [{"keys": ["b-0", "a-0"]}, {"keys": ["b-1"]}]
    }
    store.finish_run(running, status="completed", seconds=1.0, scores=[model_score("r18", 0.5)], cells=[])


def test_a_trial_used_again_by_a_new_run_is_kept(store: Store) -> None:
    ids = write_history(store)
    # Run 12 reuses b-0 (a dataset went back to an old snapshot): b-0 is in use again.
    run_id = new_run_id()
    started = T0 + timedelta(hours=HOURS * RUNS)
    store.begin_run(run_id, trigger="schedule", config_digest="c", plan={"cells": []}, started_at=started)
    store.finish_run(
        run_id,
        status="completed",
        seconds=1.0,
        scores=[model_score("r18", 0.5)],
        cells=[history_cell("r18", "b", ("b-0",))],
    )
    with store._reading("test") as session:
        used = session.scalar(select(TrialRow.last_used_at).where(TrialRow.key == "b-0"))
    assert used == started
    store.prune(policy())
    assert "b-0" in trial_keys(store) and ids[0] in run_ids(store)


def test_nothing_is_pruned_when_everything_is_young(store: Store) -> None:
    write_history(store)
    report = store.prune(policy(cells_before=T0, history_before=T0))
    assert report.nothing and len(trial_keys(store)) == 15


def test_notifications_are_pruned_by_their_own_clock(store: Store) -> None:
    write_history(store)
    store.write_alerts(
        [],
        [
            (f"{i:032x}", "hook", {"kind": "firing", "model": "r18", "alert": "Drop", "severity": "warning"})
            for i in range(3)
        ],
    )
    for item in store.claim_due(now=T0 + timedelta(days=1000), limit=10):
        store.mark_delivered(item.id, attempts=1)
    later = T0 + timedelta(days=1000)
    assert store.prune(policy(notifications_before=later), dry_run=True).notifications == 3
    assert store.prune(policy(notifications_before=later)).notifications == 3
    assert store.pruned_counts()["notifications"] == 3
    assert store.notification_counts()[("hook", "delivered")] == 3  # the delivery counter stays


def test_policy_arguments_are_checked() -> None:
    from datetime import datetime

    with pytest.raises(ValueError, match="timezone"):
        policy(cells_before=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="keep_runs"):
        policy(keep_runs=0)


def test_run_models_carry_their_runs_times(store: Store) -> None:
    ids = write_history(store)
    with store._reading("test") as session:
        row = session.execute(
            select(RunModelRow.started_at, RunModelRow.finished_at, RunModelRow.finished).where(
                RunModelRow.run_id == ids[3], RunModelRow.model == "vit"
            )
        ).one()
    assert tuple(row) == (T0 + timedelta(hours=18), T0 + timedelta(hours=18, minutes=5), True)


# -- with the real pipeline ----------------------------------------------------------------------


@pytest.mark.slow
def test_after_a_prune_the_next_run_is_still_all_cached_and_the_cli_shows_the_plan(
    workspace,
    capsys,
) -> None:
    from datetime import UTC, datetime

    from monitor.cli import main
    from tests._pipeline import evaluate
    from tests._workspace import write_snapshot

    root, config = workspace
    first, _, store = evaluate(root, config)
    write_snapshot(root / "data" / "b" / "2026-01-03T00", (5, 6, 7), per_class=24, offset=60)
    second, _, _ = evaluate(root, config)
    assert second.trials_run == 4 * 2  # dataset b's new snapshot
    now = datetime.now(UTC)
    everything_old = policy(cells_before=now + timedelta(days=1), keep_runs=1, history_before=None)

    config_path = root / "persistence-monitor.yaml"
    assert main(["prune", "--config", str(config_path), "--dry-run"]) == 0
    shown = capsys.readouterr().out
    assert "dry run" in shown and "cells" in shown and "trials" in shown
    assert len(store.get_run(first.run_id).cells) == 8  # a dry run removes nothing

    dry = store.prune(everything_old, dry_run=True)
    report = store.prune(everything_old)
    assert (dry.cell_runs, dry.cells, dry.trials) == (report.cell_runs, report.cells, report.trials)
    # The first run's cells go, and the trials only it used (dataset b's first snapshot); the
    # second run keeps its cells and every trial they use.
    assert (report.cell_runs, report.cells, report.trials) == (1, 8, 4 * 2)
    assert store.get_run(first.run_id).cells == [] and len(store.get_run(second.run_id).cells) == 8
    third, recorder, _ = evaluate(root, config)
    assert third.trials_run == 0 and recorder.trials == 0
    assert {c.status for c in third.models[0].cells} == {"cached"}
    assert third.models[0].score.persistence == second.models[0].score.persistence
