"""The history benchmark: the read paths and the run write as the store fills up to 1,000 runs.

    python -m benchmarks.history                                    # 10 models × 500 cells; N = 10, 100, 1000
    python -m benchmarks.history --runs 2,5 --models 2 --cells 20   # a quick look (seconds)
    python -m benchmarks.history --backend sqlite                   # leave PostgreSQL out
    python -m benchmarks.history --postgres postgresql+psycopg://user:password@host/db
    python -m benchmarks.history --json history.json                # also write the raw figures

The store is filled through the public Store API as a daemon fills it, one run every 6 hours of
simulated time, the last one ending near now: `begin_run` with the plan a real run writes (every
cell with its trial keys, 64 hex digits each), the new trials saved with `save_trials`, a cell's
seeds a transaction (test predictions included), the run's alerts judged by `evaluate_alerts` with the default rules
and written by `finish_run` in the run's transaction (heartbeats, `touch_run`, are left out: they
change nothing stored). The grid, by default: 10 models × (2 tasks × 10 datasets × 25 strategies
= 500 cells) × 3 seeds. Each run one dataset per task (`--new-snapshots`) has a new snapshot
(`record_snapshot`): its cells are trained again (status ok, new trials), every other cell is
`cached` (its trials are an earlier run's). Model scores carry what a real run's do (marginals,
stderr, the noise per dataset): each dataset is scored by the real `score_model` when it gets a
new snapshot, and the model's score is put together from its datasets' (`assemble_score`, which
the smoke test holds to `score_model` of the whole grid). Filling takes time: at the default size
a few seconds a run (progress goes to stderr).

Measured once the store holds N runs, in seconds, the best of `--repeat`:

- GET /, GET /metrics, GET /api/v1/runs?limit=50, GET /api/v1/models, GET /api/v1/alerts, served
  in process by the real app (`create_app`, the store collector on its registry);
- /metrics after a restart: a fresh Python process opens the store and serves one /metrics; its
  time is taken inside that process (interpreter, imports and opening the store left out);
- `evaluate_alerts` and `finish_run` of the next runs (N+1 … N+repeat, which then count towards
  the next N), as the daemon calls them;
- the DB size: the SQLite file with its -wal, or `pg_database_size`.

On PostgreSQL the store is vacuumed and analyzed (`VACUUM (ANALYZE)`) before each measurement, as
autovacuum keeps a store in service; a store just filled in bulk would otherwise be measured
against its own pending autovacuum and stale planner statistics.

Backends: SQLite in a temporary folder; PostgreSQL at `--postgres URL` (a database of its own is
created there, and dropped at the end) or else a throwaway cluster started from the server
binaries (on PATH, or /usr/lib/postgresql/*/bin) when they are found.

Targets: every path ≤ 1 s at the largest N, and within 1.5× of its time at the smallest N (flat
in the history's length).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import pwd
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from prometheus_client import CollectorRegistry
from sqlalchemy import create_engine, make_url, text

from monitor.api import create_app
from monitor.metrics import StoreCollector
from monitor.pipeline import evaluate_alerts
from monitor.scoring import score_model
from monitor.settings import Settings, settings_from_mapping
from monitor.store import SnapshotRecord, Store, TrialPlace, new_run_id, redacted_database_url
from monitor.types import CellResult, ModelScore, ModelVersion, Predictions, TrialResult

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

READS = {
    "GET /": "/",
    "/metrics": "/metrics",
    "/api/v1/runs?limit=50": "/api/v1/runs?limit=50",
    "/api/v1/models": "/api/v1/models",
    "/api/v1/alerts": "/api/v1/alerts",
}
RESTART = "/metrics after restart"
COLUMNS = ["GET /", "/metrics", RESTART, *list(READS)[2:], "evaluate_alerts", "finish_run"]
TARGET_SECONDS = 1.0
TARGET_RATIO = 1.5
RUN_EVERY = timedelta(hours=6)  # the default schedule's interval
TRIAL_SECONDS = (0.5, 1.5)  # simulated time per fine-tune: the first run (everything new) stays under 6 h
CONFIG_DIGEST = hashlib.sha256(b"one configuration for the whole history").hexdigest()
_REPO = Path(__file__).resolve().parents[1]


# -- the grid and its configuration ----------------------------------------------------------------


@dataclass(frozen=True)
class Grid:
    """The monitored grid: the same datasets in every task, every model on every cell."""

    models: tuple[str, ...]
    tasks: tuple[str, ...]
    datasets: tuple[str, ...]
    strategies: tuple[str, ...]
    seeds: int
    classes: int
    test_per_class: int

    @classmethod
    def shaped(cls, *, models: int, cells: int, seeds: int, classes: int, test_per_class: int) -> Grid:
        """`cells` per model as 2 tasks (1 if odd) × up to 10 datasets × strategies: 500 = 2 × 10 × 25."""
        tasks = 2 if cells % 2 == 0 else 1
        per_task = cells // tasks
        datasets = max(d for d in range(1, 11) if per_task % d == 0)
        return cls(
            models=tuple(f"model-{i:02d}" for i in range(models)),
            tasks=tuple(f"task-{i}" for i in range(tasks)),
            datasets=tuple(f"dataset-{i:02d}" for i in range(datasets)),
            strategies=tuple(f"strategy-{i:02d}" for i in range(per_task // datasets)),
            seeds=seeds,
            classes=classes,
            test_per_class=test_per_class,
        )

    @property
    def cells(self) -> int:
        return len(self.tasks) * len(self.datasets) * len(self.strategies)

    def describe(self) -> str:
        return (
            f"{len(self.models)} models × ({len(self.tasks)} tasks × {len(self.datasets)} datasets × "
            f"{len(self.strategies)} strategies = {self.cells} cells) × {self.seeds} seeds; "
            f"{self.classes * self.test_per_class} test images per dataset"
        )


def config_mapping(grid: Grid, workspace: Path) -> dict[str, Any]:
    """A configuration whose names are the grid's, so that every page shows what the store holds."""
    (workspace / "w.safetensors").write_bytes(b"never loaded: no model is trained here")
    (workspace / "src").mkdir(exist_ok=True)
    return {
        "state_dir": str(workspace / "state"),
        "models": [
            {"name": m, "architecture": "torchvision:resnet18", "weights": str(workspace / "w.safetensors")}
            for m in grid.models
        ],
        "tasks": [
            {
                "name": t,
                "test_per_class": grid.test_per_class,
                "datasets": [{"name": d, "source": str(workspace / "src")} for d in grid.datasets],
            }
            for t in grid.tasks
        ],
        "strategies": [{"name": s, "mode": "linear", "lr": 0.01, "epochs": 1} for s in grid.strategies],
        "seeds": list(range(grid.seeds)),
    }


# -- model scores ----------------------------------------------------------------------------------


def assemble_score(
    model: str, version: str, datasets: dict[tuple[str, str], ModelScore], cells: list[CellResult]
) -> ModelScore:
    """A complete rectangular grid's score from `score_model` of each of its datasets alone.

    What `score_model` gives the whole grid (the smoke test checks it) at a fraction of its cost,
    since a dataset is scored once, when it gets a new snapshot, and not again every run. It needs
    ≥ 2 seeds per cell: a single seed would be pooled over the model's cells, not a dataset's.
    """
    dataset_scores: dict[str, dict[str, float]] = {}
    noise: dict[str, dict[str, Any]] = {}
    for (task, dataset), part in datasets.items():
        assert part.persistence is not None
        dataset_scores.setdefault(task, {})[dataset] = part.persistence
        noise.setdefault(task, {})[dataset] = part.noise[task][dataset]
    task_scores = {task: statistics.fmean(by.values()) for task, by in dataset_scores.items()}
    by_strategy: dict[str, dict[str, list[float]]] = {}
    scores: list[float] = []
    for cell in cells:
        assert cell.score is not None
        by_strategy.setdefault(cell.strategy, {}).setdefault(cell.task, []).append(cell.score)
        scores.append(cell.score)
    seed_var = test_var = 0.0
    for by_dataset in noise.values():
        weight = 1.0 / (len(noise) * len(by_dataset))  # every task weighs the same, then every dataset
        for part_noise in by_dataset.values():
            seed_var += weight**2 * (part_noise.seeds or 0.0)
            test_var += weight**2 * (part_noise.test or 0.0)
    worst = min(range(len(cells)), key=scores.__getitem__)  # the first of equal scores, as score_model
    return ModelScore(
        model=model,
        version=version,
        persistence=statistics.fmean(task_scores.values()),
        stderr=math.sqrt(seed_var + test_var),
        spread=float(np.std(scores)),
        worst_cell=(cells[worst].task, cells[worst].dataset, cells[worst].strategy),
        worst_cell_score=scores[worst],
        coverage=1.0,
        cells_planned=len(cells),
        cells_scored=len(cells),
        task_scores=task_scores,
        dataset_scores=dataset_scores,
        strategy_scores={
            s: statistics.fmean(statistics.fmean(v) for v in by_task.values())
            for s, by_task in by_strategy.items()
        },
        stderr_seeds=math.sqrt(seed_var),
        noise=noise,
    )


# -- the history -----------------------------------------------------------------------------------


def trial_key(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()


@dataclass
class History:
    """What the daemon finds, trains and stores run after run; `run` writes one more run."""

    grid: Grid
    settings: Settings
    new_snapshots: int  # datasets per task with a new snapshot each run
    start: datetime  # when the first run started
    rng: np.random.Generator
    runs: int = 0
    truth: dict[tuple[str, str, str, str], float] = field(default_factory=dict)
    snapshots: dict[tuple[str, str], str] = field(default_factory=dict)
    fresh: dict[tuple[str, str, str], list[CellResult]] = field(default_factory=dict)  # (m, t, d)
    cached: dict[tuple[str, str, str], list[CellResult]] = field(default_factory=dict)
    scored: dict[tuple[str, str, str], ModelScore] = field(default_factory=dict)

    def __post_init__(self) -> None:
        g = self.grid
        self.sources = {(t.name, d.name): d.source for t in self.settings.tasks for d in t.datasets}
        self.versions = {
            m: ModelVersion(m, "torchvision:resnet18", trial_key("weights", m), None) for m in g.models
        }
        for key in (
            (m, t, d, s) for m in g.models for t in g.tasks for d in g.datasets for s in g.strategies
        ):
            self.truth[key] = float(self.rng.uniform(0.7, 0.95))

    def begin(self, store: Store) -> None:
        for version in self.versions.values():
            store.record_model_version(version)

    def run(self, store: Store) -> dict[str, float]:
        """One run as `run_evaluation` stores it; returns the seconds of its alert evaluation and write."""
        g = self.grid
        started = self.start + RUN_EVERY * self.runs
        run_id = new_run_id()
        renewed = self._renewed()
        for task, dataset in renewed:
            self._new_snapshot(store, task, dataset, started)
        store.begin_run(
            run_id, trigger="schedule", config_digest=CONFIG_DIGEST, plan=self._plan(), started_at=started
        )
        trials = sum(self._train(store, run_id, m, t, d) for m in g.models for t, d in renewed)
        seconds = 60.0 + trials * statistics.fmean(TRIAL_SECONDS)
        finished = started + timedelta(seconds=seconds)
        new = set(renewed)
        cells, scores = [], []
        for model in g.models:
            model_cells = [
                c
                for t in g.tasks
                for d in g.datasets
                for c in (self.fresh if (t, d) in new else self.cached)[(model, t, d)]
            ]
            parts = {(t, d): self.scored[(model, t, d)] for t in g.tasks for d in g.datasets}
            scores.append(assemble_score(model, self.versions[model].version, parts, model_cells))
            cells += model_cells
        begin = time.perf_counter()
        alerts = evaluate_alerts(self.settings, store, run_id, scores, cells, now=finished)
        judged = time.perf_counter()
        store.finish_run(
            run_id,
            status="completed",
            seconds=seconds,
            scores=scores,
            cells=cells,
            extra=lambda session: alerts.write(store, session),
            finished_at=finished,
        )
        written = time.perf_counter()
        self.runs += 1
        return {"evaluate_alerts": judged - begin, "finish_run": written - judged}

    def _renewed(self) -> list[tuple[str, str]]:
        """The datasets with a new snapshot in this run: all of them at first, then in turn."""
        g = self.grid
        if self.runs == 0:
            return [(t, d) for t in g.tasks for d in g.datasets]
        count = min(self.new_snapshots, len(g.datasets))
        first = (self.runs - 1) * count
        return [(t, g.datasets[(first + i) % len(g.datasets)]) for t in g.tasks for i in range(count)]

    def _new_snapshot(self, store: Store, task: str, dataset: str, started: datetime) -> None:
        snapshot = (started - timedelta(hours=1)).strftime("%Y-%m-%dT%H")
        self.snapshots[(task, dataset)] = snapshot
        size = self.grid.classes * self.grid.test_per_class
        store.record_snapshot(
            SnapshotRecord(
                task,
                dataset,
                snapshot,
                trial_key("snapshot", task, dataset, snapshot),
                self.sources[(task, dataset)],
                "ok",
                n_train=size,
                n_test=size,
                n_classes=self.grid.classes,
                timestamp=started - timedelta(hours=1),
            )
        )

    def _keys(self, model: str, task: str, dataset: str, strategy: str) -> list[str]:
        snapshot = self.snapshots[(task, dataset)]
        return [trial_key(model, task, dataset, snapshot, strategy, str(s)) for s in range(self.grid.seeds)]

    def _plan(self) -> dict[str, Any]:
        g = self.grid
        return {
            "cells": [
                {
                    "model": m,
                    "task": t,
                    "dataset": d,
                    "strategy": s,
                    "snapshot": self.snapshots[(t, d)],
                    "keys": self._keys(m, t, d, s),
                    "problem": None,
                }
                for m in g.models
                for t in g.tasks
                for d in g.datasets
                for s in g.strategies
            ]
        }

    def _train(self, store: Store, run_id: str, model: str, task: str, dataset: str) -> int:
        """New trials of one model on a dataset's new snapshot, saved as they would land."""
        g, rng = self.grid, self.rng
        snapshot = self.snapshots[(task, dataset)]
        labels = np.repeat(np.arange(g.classes), g.test_per_class).astype("<u2")
        label_bytes = labels.tobytes()
        fresh = []
        batch: list[tuple[TrialResult, TrialPlace]] = []
        for strategy in g.strategies:
            accuracy = self.truth[(model, task, dataset, strategy)]
            results = []
            for seed, key in enumerate(self._keys(model, task, dataset, strategy)):
                right = rng.random(labels.size) < accuracy + rng.normal(0.0, 0.01)
                wrong = (labels + rng.integers(1, g.classes, labels.size)) % g.classes
                predicted = np.where(right, labels, wrong).astype("<u2")
                result = TrialResult(
                    key=key,
                    seed=seed,
                    status="ok",
                    score=float(right.mean()),
                    seconds=float(rng.uniform(*TRIAL_SECONDS)),
                    details={
                        "n_train": labels.size,
                        "n_test": labels.size,
                        "final_loss": 0.5,
                        "inputs": "features",
                    },
                    predictions=Predictions(label_bytes, predicted.tobytes(), g.classes),
                )
                results.append(result)
            batch += [(r, TrialPlace(model, task, dataset, snapshot, strategy)) for r in results]
            seed_scores = tuple(r.score for r in results if r.score is not None)
            fresh.append(
                CellResult(
                    model,
                    task,
                    dataset,
                    snapshot,
                    strategy,
                    "ok",
                    statistics.fmean(seed_scores),
                    seed_scores,
                    sum(r.seconds for r in results),
                    keys=tuple(r.key for r in results),
                    predictions=tuple(r.predictions for r in results if r.predictions is not None),
                )
            )
        store.save_trials(batch, run_id=run_id)  # a dataset's new trials: one transaction
        self.fresh[(model, task, dataset)] = fresh
        self.cached[(model, task, dataset)] = [replace(c, status="cached", seconds=0.0) for c in fresh]
        self.scored[(model, task, dataset)] = score_model(
            model,
            self.versions[model].version,
            fresh,
            [(task, dataset, s) for s in g.strategies],
            {task: "accuracy"},
        )
        return len(fresh) * g.seeds


# -- reading it back -------------------------------------------------------------------------------


class _Idle:
    """The app's controller: a daemon between two runs (nothing here queues one)."""

    def request(self, trigger: str) -> tuple[str, bool]:
        raise RuntimeError("the history benchmark never queues a run")

    def health(self) -> tuple[bool, dict[str, Any]]:
        return True, {"status": "ok", "scheduler": "running", "evaluating": None}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        return True, {"status": "ready"}


def serve(store: Store, settings: Settings) -> TestClient:
    """The app as `serve` builds it (minus the daemon's own process-local metrics), in process."""
    with warnings.catch_warnings():  # starlette would rather have httpx2 (as pyproject.toml says)
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
        from fastapi.testclient import TestClient

    registry = CollectorRegistry(auto_describe=True)
    registry.register(StoreCollector(store, settings))
    return TestClient(create_app(controller=_Idle(), store=store, settings=settings, registry=registry))


def _get(client: TestClient, path: str) -> float:
    begin = time.perf_counter()
    response = client.get(path)
    seconds = time.perf_counter() - begin
    if response.status_code != 200:
        raise RuntimeError(f"GET {path} answered {response.status_code}: {response.text[:300]}")
    return seconds


def check_pages(client: TestClient, grid: Grid) -> None:
    """Refuse to time pages that do not show the store's runs (names of store and config differ)."""
    models = client.get("/api/v1/models").json()
    missing = [m["model"] for m in models if m["run_id"] is None]
    metrics = client.get("/metrics").text
    if missing or f'persistence_score{{model="{grid.models[-1]}"}}' not in metrics:
        raise RuntimeError(f"the app does not show the stored runs (models without a run: {missing})")


def scrape_after_restart(url: str, config: Path) -> dict[str, float]:
    """In a fresh process: open the store, build the app, and time its first /metrics."""
    settings = settings_from_mapping(json.loads(config.read_text()), base_dir=config.parent)
    begin = time.perf_counter()
    store = Store.open(url)
    opened = time.perf_counter() - begin
    try:
        with serve(store, settings) as client:
            _get(client, "/healthz")  # the test client's own start-up, long done in a real server
            return {"open": opened, "metrics": _get(client, "/metrics")}
    finally:
        store.close()


def _restarted_scrape(url: str, config: Path) -> dict[str, float]:
    child = (
        "import json, os, pathlib; from benchmarks.history import scrape_after_restart; "
        "print(json.dumps(scrape_after_restart(os.environ['PM_HISTORY_URL'], pathlib.Path(os.environ['PM_HISTORY_CONFIG']))))"
    )
    # The URL travels in the environment, not in argv: it may hold a password.
    env = {**os.environ, "PM_HISTORY_URL": url, "PM_HISTORY_CONFIG": str(config)}
    done = subprocess.run(
        [sys.executable, "-c", child], cwd=_REPO, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"the restarted process failed ({done.returncode}):\n{done.stderr[-2000:]}")
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def settle(url: str) -> None:
    """On PostgreSQL, VACUUM (ANALYZE) before measuring: a store in service has current statistics
    and visibility maps (autovacuum keeps them), while a store just filled in bulk has neither, and
    the autovacuum it is owed would run during the measurements. SQLite needs nothing."""
    if make_url(url).get_backend_name() == "sqlite":
        return
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text("VACUUM (ANALYZE)"))
    finally:
        engine.dispose()


def db_size(url: str) -> int:
    """Bytes on disk: the SQLite file and its write-ahead log, or the PostgreSQL database."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = Path(parsed.database or "")
        return sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return int(connection.scalar(text("SELECT pg_database_size(current_database())")) or 0)
    finally:
        engine.dispose()


# -- PostgreSQL --------------------------------------------------------------------------------------


def _pg_bindir() -> Path | None:
    on_path = shutil.which("pg_ctl")
    candidates = [Path(on_path).resolve().parent] if on_path else []
    candidates += sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: [int(n) for n in re.findall(r"\d+", p.parent.name)],
        reverse=True,
    )
    for folder in candidates:
        if all((folder / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return folder
    return None


@contextlib.contextmanager
def _pg_cluster(bindir: Path) -> Iterator[str]:
    """A throwaway server on a free loopback port; its URL (the maintenance database)."""
    root = Path(tempfile.mkdtemp(prefix="pm-history-pg-"))
    as_account: dict[str, Any] = {}
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "postgres"], capture_output=True, check=False
            )
            account = pwd.getpwnam("postgres")
        os.chown(root, account.pw_uid, account.pw_gid)
        as_account = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    def run(*args: str) -> None:
        done = subprocess.run(
            [str(bindir / args[0]), *args[1:]],
            cwd=root,
            env={**os.environ, "LC_ALL": "C"},
            capture_output=True,
            text=True,
            check=False,
            **as_account,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed in {root}: {done.stdout}{done.stderr}")

    data = root / "data"
    try:
        run("initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8")
        # synchronous_commit=off: commits wait for no fsync, as SQLite's synchronous=NORMAL in WAL mode.
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c synchronous_commit=off"
        run("pg_ctl", "-D", str(data), "-l", str(root / "server.log"), "-w", "-o", options, "start")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        with contextlib.suppress(Exception):
            run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def _pg_database(server: str) -> Iterator[str]:
    """A database of its own on `server`, dropped afterwards."""
    name = f"pm_history_{uuid.uuid4().hex[:12]}"
    base = make_url(server).set(drivername="postgresql+psycopg")
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield base.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@contextlib.contextmanager
def backend_url(backend: str, postgres: str | None, folder: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{folder / 'history.sqlite'}"
        return
    with contextlib.ExitStack() as stack:
        if postgres is None:
            bindir = _pg_bindir()
            if bindir is None:
                raise RuntimeError("no PostgreSQL: pass --postgres URL or install the server binaries")
            postgres = stack.enter_context(_pg_cluster(bindir))
        yield stack.enter_context(_pg_database(postgres))


# -- the benchmark -----------------------------------------------------------------------------------


@dataclass
class Row:
    runs: int
    db_bytes: int
    fill_seconds: float  # filling from the previous N (and its measured runs) to this one
    filled_runs: int  # the runs written in that time
    seconds: dict[str, float]  # best of the repetitions, per column
    samples: dict[str, list[float]]
    restart_open: float  # the restarted process's Store.open, best of the repetitions


def bench(backend: str, url: str, grid: Grid, targets: list[int], args: argparse.Namespace) -> list[Row]:
    """Fill one store to each N in turn, measuring at each."""
    with tempfile.TemporaryDirectory(prefix="pm-history-") as folder:
        workspace = Path(folder)
        mapping = config_mapping(grid, workspace)
        config = workspace / "config.json"
        config.write_text(json.dumps(mapping))
        settings = settings_from_mapping(mapping, base_dir=workspace)
        total = 0  # every run written: the measured ones may carry the history past the next N
        for target in targets:
            total = max(total, target) + args.repeat
        now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        history = History(
            grid, settings, args.new_snapshots, now - RUN_EVERY * total, np.random.default_rng(args.seed)
        )
        store = Store.open(url)
        rows: list[Row] = []
        try:
            history.begin(store)
            with serve(store, settings) as client:
                for target in targets:
                    before = history.runs
                    filled = _fill(backend, history, store, target, total)
                    runs = history.runs  # the target, or past it where the measured runs were more
                    settle(url)
                    if not rows:
                        check_pages(client, grid)
                    samples = {
                        name: [_get(client, path) for _ in range(args.repeat)] for name, path in READS.items()
                    }
                    size = db_size(url)
                    restarts = [_restarted_scrape(url, config) for _ in range(args.repeat)]
                    samples[RESTART] = [r["metrics"] for r in restarts]
                    for name, seconds in _transpose([history.run(store) for _ in range(args.repeat)]).items():
                        samples[name] = seconds
                    best = {name: min(samples[name]) for name in COLUMNS}
                    rows.append(
                        Row(
                            runs,
                            size,
                            filled,
                            runs - before,
                            best,
                            samples,
                            min(r["open"] for r in restarts),
                        )
                    )
                    print(f"{backend}: measured at N={runs}", file=sys.stderr, flush=True)
        finally:
            store.close()
        return rows


def _fill(backend: str, history: History, store: Store, target: int, total: int) -> float:
    begin = last = time.perf_counter()
    first = history.runs
    while history.runs < target:
        history.run(store)
        now = time.perf_counter()
        if now - last >= 10 or history.runs == target:
            done = history.runs - first
            print(
                f"{backend}: run {history.runs}/{total} · {(now - begin) / done:.2f} s a run · "
                f"{(now - begin) / 60:.1f} min for this stretch",
                file=sys.stderr,
                flush=True,
            )
            last = now
    return time.perf_counter() - begin


def _transpose(measured: list[dict[str, float]]) -> dict[str, list[float]]:
    return {name: [m[name] for m in measured] for name in measured[0]} if measured else {}


def print_table(backend: str, url: str, rows: list[Row], seconds: float) -> None:
    print(f"{backend} ({redacted_database_url(url)}): seconds, best of the repetitions")
    print()
    print("| N | DB size | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 2) + "|")
    for row in rows:
        times = " | ".join(f"{row.seconds[c]:.3f}" for c in COLUMNS)
        print(f"| {row.runs} | {row.db_bytes / 1e6:.1f} MB | {times} |")
    first, last = rows[0], rows[-1]
    if len(rows) > 1:
        ratios = []
        for c in COLUMNS:
            ratio = last.seconds[c] / first.seconds[c] if first.seconds[c] > 0 else math.inf
            ratios.append(f"{ratio:.2f}× {'✓' if ratio <= TARGET_RATIO else '✗'}")
        print(f"| N={last.runs} / N={first.runs} (≤ {TARGET_RATIO}×) | | " + " | ".join(ratios) + " |")
    within = " | ".join("✓" if last.seconds[c] <= TARGET_SECONDS else "✗" for c in COLUMNS)
    print(f"| ≤ {TARGET_SECONDS:g} s at N={last.runs} | | {within} |")
    print(
        "(bounded by design, not by the history: /api/v1/runs?limit=50 lists min(N, 50) runs and GET / "
        "draws the last min(N, 100) scores of each model, so both answers grow until N = 50 and 100)"
    )
    print()
    fills = ", ".join(
        f"to {r.runs}: {r.filled_runs} runs in {r.fill_seconds:.0f} s"
        + (f" ({r.fill_seconds / r.filled_runs:.2f} s a run)" if r.filled_runs else "")
        for r in rows
    )
    print(f"fill: {fills}; {sum(r.fill_seconds for r in rows) / 60:.1f} min in all")
    print(
        f"restarted process, Store.open: {', '.join(f'{r.restart_open:.3f} s at N={r.runs}' for r in rows)}"
    )
    print(f"{backend}: {seconds / 60:.1f} min with the measurements")
    print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", default="10,100,1000", help="the history lengths N to measure at")
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument(
        "--cells", type=int, default=500, help="cells per model (500 = 2 tasks × 10 datasets × 25 strategies)"
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument(
        "--test-per-class", type=int, default=64, help="test images per class (the config default)"
    )
    parser.add_argument(
        "--new-snapshots", type=int, default=1, help="datasets per task with a new snapshot each run"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="repetitions of each measurement (the best is kept)"
    )
    parser.add_argument(
        "--backend",
        choices=("auto", "sqlite", "postgres", "both"),
        default="auto",
        help="auto: SQLite, and PostgreSQL when --postgres or the server binaries are there",
    )
    parser.add_argument(
        "--postgres", metavar="URL", default=None, help="a PostgreSQL server that may create databases"
    )
    parser.add_argument("--seed", type=int, default=20261202)
    parser.add_argument(
        "--json", metavar="PATH", type=Path, default=None, help="also write the raw figures here"
    )
    args = parser.parse_args(argv)
    targets = sorted({int(n) for n in args.runs.split(",")})
    if targets[0] < 1 or args.repeat < 1 or args.new_snapshots < 0 or args.models < 1 or args.cells < 1:
        parser.error("--runs, --repeat, --models and --cells must be positive, --new-snapshots ≥ 0")
    if args.seeds < 2:
        parser.error("--seeds must be ≥ 2: the seeds' noise of a cell needs two")
    backends = ["sqlite", "postgres"] if args.backend in ("both", "postgres") else ["sqlite"]
    if args.backend == "postgres":
        backends = ["postgres"]
    elif args.backend == "auto" and (args.postgres or _pg_bindir()):
        backends.append("postgres")
    grid = Grid.shaped(
        models=args.models,
        cells=args.cells,
        seeds=args.seeds,
        classes=args.classes,
        test_per_class=args.test_per_class,
    )
    print(f"grid: {grid.describe()}")
    print(
        f"history: a run every {RUN_EVERY.total_seconds() / 3600:g} h, {args.new_snapshots} dataset(s) per task "
        f"with a new snapshot each run; measured at N = {', '.join(map(str, targets))}, best of {args.repeat}"
    )
    print()
    figures: dict[str, Any] = {
        "grid": dataclasses.asdict(grid),
        "args": {k: str(v) for k, v in vars(args).items()},
        "backends": {},
    }
    for backend in backends:
        with (
            tempfile.TemporaryDirectory(prefix="pm-history-db-") as folder,
            backend_url(backend, args.postgres, Path(folder)) as url,
        ):
            begin = time.perf_counter()
            rows = bench(backend, url, grid, targets, args)
            print_table(backend, url, rows, time.perf_counter() - begin)
            figures["backends"][backend] = {
                "url": redacted_database_url(url),
                "rows": [dataclasses.asdict(r) for r in rows],
            }
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
