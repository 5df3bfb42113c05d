"""Writes `store-v0.1.sqlite.gz`: a result store as persistence-monitor 0.1.0 wrote it.

Run with the 0.1.0 code (the store at schema revision 0004), from a checkout of that release:

    python tests/data/write_v01_store.py OUT.sqlite && gzip -9 OUT.sqlite

Only the public Store API of that release is used. The history is deterministic, so the test that
upgrades it (`tests/test_store_upgrade.py`) knows every value without reading it back:

    RUNS runs, 6 hours apart from T0; models m0 and m1; 2 datasets x 3 strategies per model;
    run i: P(m0) = 0.9 - i / 10_000, P(m1) = 0.8; status failed when i % 50 == 49 (no scores),
    partial when i % 10 == 9, else completed; seconds = 10 + i % 7.
    trials: dataset a gets a new snapshot every 4 runs (trial `a{i // 4}-...`), dataset b every run.
    the last run is left running (interrupted), with its plan.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

from monitor.store import Store
from monitor.types import CellResult, ModelScore, ModelVersion, TrialResult

T0 = datetime(2025, 6, 1, tzinfo=UTC)
RUNS = 300
MODELS = ("m0", "m1")
STRATEGIES = ("linear", "partial", "full")


def run_id(i: int) -> str:
    return f"{i:032x}"


def key(dataset: str, i: int, model: str, strategy: str, seed: int) -> str:
    snapshot = i // 4 if dataset == "a" else i
    return f"{dataset}{snapshot}-{model}-{strategy}-{seed}".ljust(64, "0")


def status(i: int) -> str:
    return "failed" if i % 50 == 49 else "partial" if i % 10 == 9 else "completed"


def persistence(model: str, i: int) -> float:
    return 0.9 - i / 10_000 if model == "m0" else 0.8


def main(path: str) -> None:
    store = Store.open(f"sqlite:///{path}")
    for model in MODELS:
        store.record_model_version(ModelVersion(model, "python:x:build", model * 32, None))
    for i in range(RUNS):
        started = T0 + timedelta(hours=6 * i)
        cells = []
        for model in MODELS:
            for dataset in ("a", "b"):
                for strategy in STRATEGIES:
                    keys = tuple(key(dataset, i, model, strategy, seed) for seed in (0, 1))
                    cells.append((model, dataset, strategy, keys))
        plan = {"cells": [{"model": m, "dataset": d, "strategy": s, "keys": list(k)} for m, d, s, k in cells]}
        store.begin_run(run_id(i), trigger="schedule", config_digest="c", plan=plan, started_at=started)
        if i == RUNS - 1:
            break  # interrupted: still running, its plan stored
        for model, dataset, strategy, keys in cells:
            for seed, k in enumerate(keys):
                if not store.find_trials([k]):
                    store.save_trial(
                        TrialResult(key=k, seed=seed, status="ok", score=0.8, seconds=1.0),
                        run_id=run_id(i),
                        model=model,
                        task="t",
                        dataset=dataset,
                        snapshot=f"s{i}",
                        strategy=strategy,
                    )
        outcome = status(i)
        scores = (
            []
            if outcome == "failed"
            else [
                ModelScore(
                    model=model,
                    version=(model * 32)[:12],
                    persistence=persistence(model, i),
                    stderr=0.01,
                    spread=0.02,
                    worst_cell=("t", "a", "full"),
                    worst_cell_score=0.7,
                    coverage=1.0,
                    cells_planned=6,
                    cells_scored=6,
                    task_scores={"t": persistence(model, i)},
                    dataset_scores={"t": {"a": 0.8, "b": 0.8}},
                    strategy_scores={s: 0.8 for s in STRATEGIES},
                    stderr_seeds=0.005,
                )
                for model in MODELS
            ]
        )
        results = (
            []
            if outcome == "failed"
            else [
                CellResult(
                    model=model,
                    task="t",
                    dataset=dataset,
                    snapshot=f"s{i}",
                    strategy=strategy,
                    status="ok" if dataset == "b" or i % 4 == 0 else "cached",
                    score=0.8,
                    seed_scores=(0.8, 0.8),
                    seconds=1.0,
                    error=None,
                    keys=keys,
                )
                for model, dataset, strategy, keys in cells
            ]
        )
        store.finish_run(
            run_id(i),
            status=outcome,
            seconds=10.0 + i % 7,
            scores=scores,
            cells=results,
            error="worker lost" if outcome == "failed" else None,
            finished_at=started + timedelta(minutes=10),
        )
    store.close()


if __name__ == "__main__":
    main(sys.argv[1])
