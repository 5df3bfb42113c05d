"""Work groups built by hand for executor tests: a tiny CNN, models that crash or hang, real data."""

from __future__ import annotations

from pathlib import Path

from monitor.data import prepare_snapshot
from monitor.engine import CellRef, TrialSpec, WorkGroup
from monitor.settings import ModelSpec, StrategySpec, TaskSpec
from monitor.types import ModelVersion, SnapshotInfo
from tests._workspace import write_snapshot, write_tiny_cnn

TROUBLE = """
import os, time
from torch import nn

class Trouble(nn.Module):
    def __init__(self, how):
        super().__init__()
        self.how = how
        self.body = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()),
            nn.Sequential(nn.Conv2d(8, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()),
        )
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        if self.training:  # only `full` fine-tunes put the whole model in training mode
            if self.how == "crash":
                os._exit(3)
            time.sleep(3600)
        return self.fc(self.body(x))

def crash():
    return Trouble("crash")

def hang():
    return Trouble("hang")
"""


def engine_workspace(root: Path) -> tuple[Path, object]:
    """Model code (a tiny CNN, `trouble:crash`, `trouble:hang`) and one prepared snapshot in `root`."""
    (root / "trouble.py").write_text(TROUBLE)
    write_tiny_cnn(root, name="tiny_exec")
    snap = write_snapshot(root / "snap", (0, 1, 2), per_class=9)
    task = TaskSpec(
        name="t", train_per_class=6, test_per_class=3, datasets=[{"name": "d", "source": str(root)}]
    )
    info = SnapshotInfo("t", "d", "s1", "0" * 64, snap, str(root), 0.0)
    data = prepare_snapshot(info, task, 16, cache_dir=root / "cache")
    return root, (task, info, data)


def group(root: Path, prepared, architecture: str, strategies: list[StrategySpec], seeds=(0,)) -> WorkGroup:
    task, info, data = prepared
    model = ModelSpec(name="m", architecture=architecture, image_size=16)
    trials = tuple(
        TrialSpec(f"{s.name}-{seed}-{architecture}", CellRef("m", "t", "d", s.name), seed, s)
        for s in strategies
        for seed in seeds
    )
    return WorkGroup(model, ModelVersion("m", architecture, "", None), task, info, data, trials, root)


LINEAR = StrategySpec(name="lin", mode="linear", lr=0.1, epochs=2, batch_size=8)
PARTIAL = StrategySpec(name="part", mode="partial", trainable_blocks=1, lr=0.1, epochs=1, batch_size=8)
FULL = StrategySpec(name="full", mode="full", lr=0.1, epochs=1, batch_size=8)


def run(executor, groups) -> dict[str, object]:
    results = {}
    executor.run(groups, lambda trial, result: results.__setitem__(trial.key, result))
    assert len(results) == sum(len(g.trials) for g in groups)  # one result per trial, always
    return results
