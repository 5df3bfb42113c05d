"""The store's test backends and the records the store tests write (a pytest plugin, and helpers).

Loaded from tests/conftest.py (`pytest_plugins`). Fixtures:

    url     (function)  a database URL, once per backend: SQLite in tmp_path (a folder that does
                        not exist yet), and a fresh schema of the real PostgreSQL of
                        tests/_postgres.py (marked `postgres` and `slow`: it starts a server)
    store   (function)  the store opened on `url`, closed after the test

A module that needs another store (SQLite only, say) defines its own `store` fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine

from monitor.store import Store, new_run_id
from monitor.types import CellResult, ModelScore, TrialResult

__all__ = [
    "DIGEST_A",
    "DIGEST_B",
    "T0",
    "cell",
    "model_score",
    "new_run_id_begun",
    "plain_engine",
    "store",
    "trial",
    "url",
]

T0 = datetime(2026, 11, 1, 6, tzinfo=UTC)
DIGEST_A = "a1" * 32
DIGEST_B = "b2" * 32


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=[pytest.mark.postgres, pytest.mark.slow])])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        # A folder that does not exist yet: opening the store must create it.
        return f"sqlite:///{tmp_path / 'state' / 'monitor.db'}"
    fresh: str = request.getfixturevalue("postgres_fresh_url")
    return fresh


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    with Store.open(url) as opened:
        yield opened


def plain_engine(url: str) -> Engine:
    """An engine without the store's machinery, to look at the database from outside."""
    return create_engine(url)


def trial(
    key: str, *, seed: int = 0, score: float | None = 0.9, status: str = "ok", **details: object
) -> TrialResult:
    return TrialResult(key=key, seed=seed, status=status, score=score, seconds=1.5, details=details)  # type: ignore[arg-type]


def model_score(model: str, persistence: float | None, *, version: str = DIGEST_A[:12]) -> ModelScore:
    return ModelScore(
        model=model,
        version=version,
        persistence=persistence,
        stderr=0.01 if persistence is not None else None,
        spread=0.05 if persistence is not None else None,
        worst_cell=("defects", "line-b", "full") if persistence is not None else None,
        worst_cell_score=0.5 if persistence is not None else None,
        coverage=0.75,
        cells_planned=4,
        cells_scored=3,
        task_scores={"defects": 0.8, "texture": 0.6},
        dataset_scores={"defects": {"line-b": 0.7, "line-a": 0.9}, "texture": {"dtd": 0.6}},
        strategy_scores={"linear": 0.75, "full": 0.65},
    )


def cell(model: str, dataset: str, strategy: str, score: float | None, status: str = "ok") -> CellResult:
    return CellResult(
        model=model,
        task="defects",
        dataset=dataset,
        snapshot="2026-11-01T06",
        strategy=strategy,
        status=status,  # type: ignore[arg-type]
        score=score,
        seed_scores=(score, score) if score is not None else (),
        seconds=2.25,
        error="CUDA out of memory after 3 retries" if status == "failed" else None,
        keys=(f"{model}-{dataset}-{strategy}-0", f"{model}-{dataset}-{strategy}-1"),
    )


def new_run_id_begun(store: Store, **fields: object) -> str:
    run_id = new_run_id()
    values: dict[str, object] = {"trigger": "schedule", "config_digest": "c", "plan": {}}
    values.update(fields)
    store.begin_run(run_id, **values)  # type: ignore[arg-type]
    return run_id
