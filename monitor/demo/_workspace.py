"""`persistence-monitor demo [DIR]`: a complete, self-contained workspace to try the monitor on.

    DIR/persistence-monitor.yaml      the config (every path in it is relative to DIR)
    DIR/digits_cnn.py                 the deployed model's code (a `python:` factory)
    DIR/models/digits-cnn.safetensors its weights, pre-trained here on the digits 0-4
    DIR/models/digits-cnn-robust.safetensors  a candidate: the same network pre-trained with
                                      stronger scanner-drift augmentation (model selection)
    DIR/data/<task>/<dataset>/        snapshot sources: folders with _SUCCESS, and .tar.gz archives
    DIR/state/                        created by the first run: database and caches

Everything is generated from data bundled with scikit-learn; nothing is downloaded.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from ..errors import ConfigError
from ..settings import DEFAULT_CONFIG_NAME
from ._digits import SEEN, DigitPools, load_pools, write_snapshot
from ._model_source import FACTORY, MODULE_NAME, SOURCE

__all__ = ["DEMO_DATASETS", "DEMO_TASKS", "DemoDataset", "DemoFeed", "build_demo", "publish_snapshot"]

DEMO_VERSION = 2  # 2: a candidate model, a derived shift dataset, a knn strategy, estimators, probes
_MARKER = ".persistence-monitor-demo"


@dataclass(frozen=True)
class DemoDataset:
    task: str
    dataset: str
    classes: tuple[int, ...]
    layout: str  # "split" folders or "archive" tarballs

    def source(self, root: Path) -> Path:
        return root / "data" / self.task / self.dataset


DEMO_TASKS = {"unseen-digits": tuple(d for d in range(10) if d not in SEEN), "all-digits": tuple(range(10))}
DEMO_DATASETS = tuple(
    DemoDataset(task, dataset, classes, layout)
    for task, classes in DEMO_TASKS.items()
    for dataset, layout in (("scanner-a", "split"), ("scanner-b", "archive"))
)
# The history a fresh workspace starts with: a clean snapshot, then a slightly drifted one.
INITIAL_SNAPSHOTS = (("2026-11-01T00", 0.0), ("2026-11-15T00", 0.3))

CONFIG = """\
# persistence-monitor demo workspace (written by `persistence-monitor demo`).
# Paths are relative to this file. Try:  persistence-monitor run-once --config {config}
state_dir: state
device: auto                      # a GPU when there is one, else the CPU
schedule:
  evaluate: "*/10 * * * *"        # the full grid, cron in UTC: every 10 minutes here (a few times a day in production)
  poll: 30s                       # look for new snapshots / model versions this often
  on_new_data: probes             # a new snapshot: knn + linear cells and the estimates at once; the grid at `evaluate`

early_warning:
  estimators: [logme, hscore]     # transferability on the frozen features, between grids (not in P(M))

models:
  - name: digits-cnn              # the deployed model: alert rules judge it
    architecture: python:{module}:{factory}
    weights: models/digits-cnn.safetensors
    image_size: 32
    normalize: {{mean: [0.2, 0.2, 0.2], std: [0.3, 0.3, 0.3]}}
  - name: digits-cnn-robust       # a candidate: scored on the same grid, compared, never paged on
    role: candidate               # (persistence-monitor compare --demo)
    architecture: python:{module}:{factory}
    weights: models/digits-cnn-robust.safetensors
    image_size: 32
    normalize: {{mean: [0.2, 0.2, 0.2], std: [0.3, 0.3, 0.3]}}

tasks:
  - name: unseen-digits           # digits the model never saw in pre-training: transfer
    metric: balanced_accuracy
    train_per_class: 32
    test_per_class: 16
    datasets:
      - {{name: scanner-a, source: data/unseen-digits/scanner-a}}
      - {{name: scanner-b, source: data/unseen-digits/scanner-b}}
      # scanner-a's current snapshot with Gaussian noise on its test images: robustness
      - {{name: scanner-a-noisy, derive: {{from: scanner-a, shift: gaussian_noise, severity: 3, apply_to: test}}}}
  - name: all-digits              # all ten digits
    metric: macro_f1
    train_per_class: 32
    test_per_class: 16
    datasets:
      - {{name: scanner-a, source: data/all-digits/scanner-a}}
      - {{name: scanner-b, source: data/all-digits/scanner-b}}

strategies:                       # all four modes; the two linear probes train as one batched op
  - {{name: knn20,         mode: knn,     k: 20}}   # no training: a k-NN vote on the frozen features
  - {{name: linear-lr0.1,  mode: linear,  optimizer: sgd,   lr: 0.1,   epochs: 20, batch_size: 32}}
  - {{name: linear-lr0.03, mode: linear,  optimizer: sgd,   lr: 0.03,  epochs: 20, batch_size: 32}}
  - {{name: last-block,    mode: partial, optimizer: sgd,   lr: 0.05,  epochs: 8,  batch_size: 32, trainable_blocks: 1}}
  - {{name: full-adamw,    mode: full,    optimizer: adamw, lr: 0.001, epochs: 5,  batch_size: 32, weight_decay: 0.05}}
seeds: [0, 1]

alerts:
  status_url: http://127.0.0.1:9775/
  rules:                          # the default rules, and an early warning on LogME
    - {{name: PersistenceDrop, kind: drop, baseline: rolling_median, window: 7, min_drop: 0.03, z: 3.0, resolve_runs: 2}}
    - {{name: EvaluationStale, kind: stale, max_age: 24h, severity: critical}}
    - {{name: GridIncomplete, kind: incomplete, min_coverage: 1.0, for_runs: 2}}
    - {{name: TransferabilityDrop, kind: estimate_drop, estimators: [logme], window: 7, min_drop: 0.05, z: 3.0}}
  notifiers:
    - {{name: console, kind: log}}  # alerts appear in the daemon's log; add webhook/slack/… here
"""


def _snapshot_seed(dataset: DemoDataset, snapshot_id: str) -> int:
    return sum(map(ord, f"{dataset.task}/{dataset.dataset}/{snapshot_id}"))


def publish_snapshot(
    root: Path, dataset: DemoDataset, snapshot_id: str, drift: float, pools: DigitPools | None = None
) -> Path:
    """Write one new complete snapshot of a demo dataset (also used by the demo data feed)."""
    return write_snapshot(
        dataset.source(root),
        snapshot_id,
        pools=pools or load_pools(),
        style=dataset.dataset,
        classes=dataset.classes,
        drift=drift,
        layout=dataset.layout,
        seed=_snapshot_seed(dataset, snapshot_id),
    )


def build_demo(
    root: Path, *, force: bool = False, console: Console | None = None, pretrain_epochs: int = 12
) -> Path:
    """Write the demo workspace into `root` (once); return the path of its config file.

    The workspace is built in a hidden folder beside `root` and renamed into place when
    complete, so an interrupted build leaves nothing half-made behind.
    """
    console = console or Console(stderr=True)
    root = root.resolve()
    config = root / DEFAULT_CONFIG_NAME
    if (root / _MARKER).exists() and config.exists() and not force:
        return config
    if root.exists() and (not root.is_dir() or any(root.iterdir())) and not force:
        raise ConfigError(
            [
                (
                    "",
                    f"{root} exists and is not a demo workspace; choose an empty or new directory "
                    f"(demo DIR, or PM_DEMO_DIR), or rebuild it with `persistence-monitor demo --force {root}`",
                )
            ]
        )
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        for leftover in root.parent.glob(f".{root.name}.building-*"):
            shutil.rmtree(leftover, ignore_errors=True)  # an earlier build that was interrupted
        staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.building-", dir=root.parent))
        try:
            console.print(f"[dim]· building the demo workspace in {root}[/dim]")
            _write_workspace(staging, console, pretrain_epochs)
            if root.exists():
                old = root.parent / f".{root.name}.replaced-{os.getpid()}"
                os.replace(root, old)
                shutil.rmtree(old, ignore_errors=True)
            os.replace(staging, root)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    except OSError as exc:
        raise ConfigError(
            [
                (
                    "",
                    f"cannot write the demo workspace at {root}: {exc.strerror or exc}; choose another "
                    "directory (demo DIR, or PM_DEMO_DIR)",
                )
            ]
        ) from None
    return config


def _write_workspace(root: Path, console: Console, pretrain_epochs: int) -> None:
    pools = load_pools()
    with console.status("writing snapshots of the handwritten digits (scikit-learn)…"):
        for dataset in DEMO_DATASETS:
            for snapshot_id, drift in INITIAL_SNAPSHOTS:
                publish_snapshot(root, dataset, snapshot_id, drift, pools)
    module_path = root / f"{MODULE_NAME}.py"
    module_path.write_text(SOURCE, encoding="utf-8")
    with console.status("pre-training the demo model (a small CNN) on the digits 0-4…"):
        from ._pretrain import pretrain  # torch: imported only when a workspace is built

        stats = pretrain(
            module_path, FACTORY, root / "models" / "digits-cnn.safetensors", pools, epochs=pretrain_epochs
        )
    console.print(
        f"[dim]· demo model pre-trained in {stats['seconds']:.0f}s "
        f"(hold-out accuracy on the digits 0-4: {stats['holdout_accuracy']:.1%})[/dim]"
    )
    with console.status("pre-training the candidate model (stronger drift augmentation)…"):
        candidate = pretrain(
            module_path,
            FACTORY,
            root / "models" / "digits-cnn-robust.safetensors",
            pools,
            epochs=pretrain_epochs,
            seed=1,
            augment_drift=1.2,
        )
    console.print(
        f"[dim]· candidate model pre-trained in {candidate['seconds']:.0f}s "
        f"(hold-out accuracy: {candidate['holdout_accuracy']:.1%})[/dim]"
    )
    config = root / DEFAULT_CONFIG_NAME
    config.write_text(
        CONFIG.format(config=config.name, module=MODULE_NAME, factory=FACTORY), encoding="utf-8"
    )
    (root / _MARKER).write_text(json.dumps({"version": DEMO_VERSION}), encoding="utf-8")


class DemoFeed:
    """The demo's data feed: each call publishes a new, more drifted snapshot of every dataset.

    Drift climbs 0.35 a step from where the workspace starts (0.3); after 2.05 the "scanners are
    repaired" and the next snapshot is clean again, so a watcher sees P(M) fall, alerts fire,
    and then recover and resolve. The cycle repeats.
    """

    CYCLE = (0.65, 1.0, 1.35, 1.7, 2.05, 0.0)

    def __init__(self, root: Path) -> None:
        self.root = root
        self.step = 0
        self._pools: DigitPools | None = None

    def drift(self) -> float:
        return self.CYCLE[(self.step - 1) % len(self.CYCLE)]

    def __call__(self) -> None:
        import datetime as _dt

        self._pools = self._pools or load_pools()
        self.step += 1
        drift = self.drift()
        snapshot_id = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H%M%S")
        for dataset in DEMO_DATASETS:
            publish_snapshot(self.root, dataset, snapshot_id, drift, self._pools)
        logging.getLogger(__name__).info("demo feed: published snapshot %s (drift %.2f)", snapshot_id, drift)
