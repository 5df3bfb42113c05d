"""The daemon's test workspace: a tiny CNN (and a deliberately slow one), two datasets of real
digits, a polling schedule, a free port and an API token."""

from __future__ import annotations

from pathlib import Path

from monitor.store import Store
from tests._services import free_port
from tests._workspace import basic_config, write_config, write_snapshot, write_tiny_cnn

__all__ = ["SLOW", "TOKEN", "run_keys", "workspace"]

TOKEN = "test-token-0123456789"

SLOW = """
import time
from torch import nn

class Slow(nn.Module):
    '''Trains slowly on purpose (a pause per training step), so a test can kill it mid-grid.'''

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
            nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()),
        )
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        if self.training:
            time.sleep(0.25)
        return self.fc(self.features(x))

def build():
    return Slow()
"""


def workspace(root: Path, *, architecture: str | None = None, strategies: list[dict] | None = None) -> Path:
    """Write the workspace into `root` (`python:slow_cnn:build` is the slow model); returns its config."""
    write_tiny_cnn(root, name="daemon_cnn")
    (root / "slow_cnn.py").write_text(SLOW)
    for dataset, offset in (("a", 0), ("b", 40)):
        write_snapshot(root / "data" / dataset / "2026-01-01T00", (5, 6, 7), per_class=15, offset=offset)
    config = basic_config(
        [{"name": "cnn", "architecture": architecture or "python:daemon_cnn:build"}],
        {"digits": [("a", "data/a"), ("b", "data/b")]},
        strategies=strategies
        or [
            {"name": "lin", "mode": "linear", "lr": 0.1, "epochs": 3, "batch_size": 16},
            {
                "name": "part",
                "mode": "partial",
                "trainable_blocks": 1,
                "lr": 0.05,
                "epochs": 1,
                "batch_size": 16,
            },
        ],
    )
    config["server"] = {"host": "127.0.0.1", "port": free_port(), "api_token": TOKEN}
    config["schedule"] = {"evaluate": "0 0 1 1 *", "poll": "1s"}
    config["executor"] = {"shutdown_grace": "5s"}
    return write_config(root / "persistence-monitor.yaml", config)


def run_keys(store: Store, run_id: str) -> list[str]:
    """The trial keys of a run: from its plan while it runs, from its cells once it finished."""
    run = store.get_run(run_id)
    if run.plan is not None:
        return [key for cell in run.plan["cells"] for key in cell["keys"]]
    return [key for cell in run.cells for key in cell.keys]
