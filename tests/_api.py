"""What the HTTP app and the metrics collector are built with in tests: a stand-in controller,
settings (one task `t`, two datasets, linear strategies) whose files exist in `tmp_path`, and the
runs, cells and scores of that grid as the store records them."""

from __future__ import annotations

from pathlib import Path

from monitor.settings import settings_from_mapping
from monitor.store import Store, new_run_id
from monitor.types import CellResult, ModelScore

__all__ = ["Stand", "cell", "record_run", "score", "settings_for"]


class Stand:
    """A stand-in for the daemon: the app only needs these three calls."""

    def __init__(self) -> None:
        self.requests: list[str] = []

    def request(self, trigger: str) -> tuple[str, bool]:
        self.requests.append(trigger)
        return "f" * 32, len(self.requests) > 1

    def health(self):
        return True, {"status": "ok", "scheduler": "running", "evaluating": None}

    def ready(self):
        return True, {"status": "ready"}


def settings_for(
    tmp_path: Path, *, models=("m",), token: str | None = "s3cret-token", strategies=("lin", "full")
):
    """Settings of `models` (ResNet-18s with a placeholder weights file), one task `t` with the
    datasets `d` and `e`, and one linear strategy per name in `strategies`."""
    (tmp_path / "src").mkdir(exist_ok=True)
    (tmp_path / "w.safetensors").write_bytes(b"x")
    return settings_from_mapping(
        {
            "server": {"api_token": token},
            "models": [
                {"name": m, "architecture": "torchvision:resnet18", "weights": "w.safetensors"}
                for m in models
            ],
            "tasks": [
                {"name": "t", "datasets": [{"name": "d", "source": "src"}, {"name": "e", "source": "src"}]}
            ],
            "strategies": [{"name": s, "mode": "linear", "lr": 0.1, "epochs": 1} for s in strategies],
        },
        base_dir=tmp_path,
    )


def cell(model, dataset, strategy, score, status="ok"):
    return CellResult(
        model, "t", dataset, "2026-01-01T00", strategy, status, score, (score,) if score else (), 1.5
    )


def record_run(
    store: Store,
    cells: list[CellResult],
    scores: list[ModelScore],
    *,
    status="completed",
    seconds=12.0,
    estimates=(),
):
    run_id = new_run_id()
    store.begin_run(run_id, trigger="cli", config_digest="x", plan={"cells": []})
    store.finish_run(run_id, status=status, seconds=seconds, scores=scores, cells=cells, estimates=estimates)
    return run_id


def score(model: str, p: float, version="abcdef012345") -> ModelScore:
    return ModelScore(
        model=model,
        version=version,
        persistence=p,
        stderr=0.01,
        stderr_seeds=0.004,
        spread=0.1,
        worst_cell=("t", "d", "full"),
        worst_cell_score=p - 0.1,
        coverage=1.0,
        cells_planned=4,
        cells_scored=4,
        task_scores={"t": p},
        dataset_scores={"t": {"d": p, "e": p}},
        strategy_scores={"lin": p, "full": p},
    )
