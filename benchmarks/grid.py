"""The grid benchmark: the engine against a seed-style baseline loop, in one process run.

    python -m benchmarks.grid                     # the reference grid on this machine's device
    python -m benchmarks.grid --size 2            # twice the images per class
    python -m benchmarks.grid --mfu               # + ResNet-50 at 224 px full fine-tune MFU (GPU)
    python -m benchmarks.grid --mfu-compile       # + the same under torch.compile (GPU)
    python -m benchmarks.grid --json out.json     # also write the figures as JSON

The reference grid is built from real data: scikit-learn's handwritten digits, upscaled, written
as PNG snapshot folders; a torchvision ResNet-18 pre-trained here on the digits 0-4. Then
2 tasks (unseen digits 5-9, all digits) × 2 datasets (two "scanners") × {3 linear learning
rates, 1 partial, 1 full} × 2 seeds = 40 fine-tunes, run twice:

(a) the baseline, the seed-style loop as users write it, sharing no code with the engine: per
    trial a deepcopy of the model with a new `nn.Linear` head, `model.train()`, `torch.optim`
    at a constant learning rate (torch's own scheduler where a strategy names one), a shuffling
    `torch.utils.data.DataLoader` over PIL images decoded from the snapshot folder every epoch,
    fp32, one trial after another, the whole backbone run for every batch of every linear cell.
    It draws its own random numbers, so the two loops agree within seed noise, not bit for bit:
    the benchmark prints the signed per-mode bias and the P(M) difference beside the speed;
(b) the engine, through the public pipeline (`run_evaluation` with the worker-process executor),
    from an empty state directory — decoding, worker start-up and all — and then once more with
    unchanged inputs (everything cached).

Times are wall-clock seconds of this run on this machine; ratios compare the two in the same run,
which is what stays meaningful on a noisy machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import resource
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image, ImageFilter
from torch import nn

from benchmarks import baseline
from benchmarks.baseline import BaselineResult
from monitor.engine import EngineOptions, Executor, InlineExecutor, LocalExecutor
from monitor.engine._options import cpu_count
from monitor.pipeline import run_evaluation
from monitor.settings import Settings
from monitor.store import Store

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TASKS = {"unseen-digits": (5, 6, 7, 8, 9), "all-digits": tuple(range(10))}
DATASETS = ("scanner-a", "scanner-b")
STRATEGIES: list[dict[str, Any]] = [
    # Linear probes are cheap and train longer; fine-tunes take few epochs. At a constant rate
    # (the default) the probes' learning rates sit where ResNet-18 features (norm ~35) settle:
    # at 0.1 and above a constant rate only oscillates. One probe decays on a cosine instead.
    {"name": "linear-lr0.01", "mode": "linear", "lr": 0.01, "epochs": 20, "batch_size": 32},
    {"name": "linear-lr0.003", "mode": "linear", "lr": 0.003, "epochs": 20, "batch_size": 32},
    {
        "name": "linear-lr0.1-cos",
        "mode": "linear",
        "lr": 0.1,
        "epochs": 20,
        "batch_size": 32,
        "schedule": "cosine",
    },
    {
        "name": "last-block",
        "mode": "partial",
        "trainable_blocks": 1,
        "lr": 0.01,
        "epochs": 8,
        "batch_size": 32,
    },
    {"name": "full", "mode": "full", "lr": 0.01, "epochs": 3, "batch_size": 32},
]
SEEDS = (0, 1)
# Dense bf16 tensor-core peaks (FLOP/s) for the MFU figure.
PEAK_BF16 = {"H200": 989.4e12, "H100": 989.4e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12}


# -- the reference workspace ------------------------------------------------------------------


def _render(image: np.ndarray, size: int, style: str, variant: int = 0) -> Image.Image:
    pixels = np.clip(image / 16.0 * 255.0, 0, 255).astype(np.uint8)
    picture = Image.fromarray(pixels, mode="L").resize((size, size), Image.Resampling.BICUBIC)
    if variant:  # --size beyond the ~60 digits per class and scanner: shifted copies
        picture = picture.rotate(0, translate=(variant % 3 - 1, variant // 3 % 3 - 1))
    return picture.filter(ImageFilter.MaxFilter(3)) if style == "scanner-b" else picture


def build_workspace(root: Path, *, size: int, image_size: int, device: str) -> Path:
    """Snapshot folders of real digits, a pre-trained ResNet-18, and the config; returns the config."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images, labels = digits.images, digits.target
    rng = np.random.default_rng(0)
    per_class = {c: rng.permutation(np.flatnonzero(labels == c)) for c in range(10)}
    train_n, test_n = 16 * size, 8 * size
    for task, classes in TASKS.items():
        for d, dataset in enumerate(DATASETS):
            snapshot = root / "data" / task / dataset / "2026-11-01T00"
            for cls in classes:
                pool = per_class[cls][60 + d :: 2]  # the first 60 pre-train the model; a and b disjoint
                for n in range(train_n + test_n):
                    i, variant = pool[n % len(pool)], n // len(pool)
                    folder = snapshot / ("train" if n < train_n else "test") / str(cls)
                    folder.mkdir(parents=True, exist_ok=True)
                    _render(images[i], image_size, dataset, variant).save(folder / f"{i:04d}-{variant}.png")
            (snapshot / "_SUCCESS").touch()
    _pretrain(root / "resnet18.pt", images, labels, per_class, image_size, device)
    config = {
        "state_dir": "state",
        "device": device,
        "models": [
            {
                "name": "resnet18",
                "architecture": "torchvision:resnet18",
                "weights": "resnet18.pt",
                "image_size": image_size,
            }
        ],
        "tasks": [
            {
                "name": task,
                "metric": "accuracy",
                "train_per_class": None,
                "test_per_class": None,
                "datasets": [{"name": d, "source": f"data/{task}/{d}"} for d in DATASETS],
            }
            for task in TASKS
        ],
        "strategies": STRATEGIES,
        "seeds": list(SEEDS),
    }
    path = root / "persistence-monitor.yaml"
    import yaml

    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _pretrain(
    out: Path, images: np.ndarray, labels: np.ndarray, per_class: dict, image_size: int, device: str
) -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=5).to(device)
    index = np.concatenate([per_class[c][:60] for c in range(5)])
    x = torch.stack([_to_tensor(_render(images[i], image_size, "scanner-a")) for i in index]).to(device)
    y = torch.from_numpy(labels[index]).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    model.train()
    for _ in range(4):
        for batch in torch.randperm(len(index), device=device).split(32):
            optimizer.zero_grad()
            F.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, out)


def _to_tensor(picture: Image.Image) -> torch.Tensor:
    x = torch.from_numpy(np.array(picture.convert("RGB"))).permute(2, 0, 1).float() / 255.0
    return (x - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)


# -- (a) the baseline: benchmarks/baseline.py (no code shared with the engine) ----------------


def run_baseline(config: Path, device: str) -> BaselineResult:
    return baseline.run(
        config.parent / "resnet18.pt",
        {
            (task, dataset): config.parent / "data" / task / dataset / "2026-11-01T00"
            for task in TASKS
            for dataset in DATASETS
        },
        STRATEGIES,
        SEEDS,
        device,
        mean=MEAN,
        std=STD,
    )


# -- (b) the engine ---------------------------------------------------------------------------


@dataclass
class EngineResult:
    seconds: dict[str, float]
    images: dict[str, int]
    scores: dict[tuple[str, str, str], float]
    seed_scores: dict[tuple[str, str, str], list[float]]
    total: float
    repeat: float
    new_snapshot: float  # one dataset got a new snapshot: only its cells run again
    new_snapshot_trials: int
    peak_rss_mib: float
    trials_run: int = 0
    groups: int = 0  # work groups of the first run (one model: one per dataset snapshot)


def run_engine(
    settings: Settings, *, inline: bool, options: EngineOptions, executor_kind: str = "local"
) -> EngineResult:
    store = Store.open(settings.resolved_database_url)
    executor: Executor
    if executor_kind == "ray":
        from monitor.engine._ray import RayExecutor

        # as many actors as local CPU workers, each with its share of the cores: the same machine
        workers = max(1, options.cpu_workers) if settings.device == "cpu" else None
        executor = RayExecutor(
            cpus_per_worker=cpu_count() / workers if workers else 1.0,
            max_workers=workers,
            cell_timeout=settings.executor.cell_timeout,
            options=options,
            cpu_only=settings.device == "cpu",
        )
    elif inline:
        executor = InlineExecutor(settings.device, options)
    else:
        executor = LocalExecutor(
            settings.device, cell_timeout=settings.executor.cell_timeout, options=options
        )
    modes = {s.name: s.mode for s in settings.strategies}
    epochs = {s.name: s.epochs for s in settings.strategies}
    seconds: dict[str, float] = defaultdict(float)
    images: dict[str, int] = defaultdict(int)
    try:
        start = time.perf_counter()
        executor.start(wait=False)  # as the CLI does
        observer = _Quiet()
        report = run_evaluation(settings, store, executor, trigger="cli", observer=observer)
        total = time.perf_counter() - start
        start = time.perf_counter()
        again = run_evaluation(settings, store, executor, trigger="cli", observer=_Quiet())
        repeat = time.perf_counter() - start
        _publish_new_snapshot(settings)
        start = time.perf_counter()
        newer = run_evaluation(settings, store, executor, trigger="cli", observer=_Quiet())
        new_snapshot = time.perf_counter() - start
        peak_rss = (
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            if inline
            else _worker_peak_rss(executor)
        )
        groups = report.trials_run and len({(c.task, c.dataset) for c in report.models[0].cells})
    finally:
        executor.close()
        store.close()
    assert again.trials_run == 0, "the repeated run recomputed something"
    # Per-mode engine time in machine-seconds: with several CPU workers, trials run side by side,
    # each on a share of the cores, so a trial's wall time counts for its share (threads / cores).
    cores = cpu_count()
    share: dict[tuple[str, str, str], float] = defaultdict(lambda: 1.0)
    for cell, threads in observer.threads.items():
        share[cell] = statistics.fmean(min(t, cores) / cores for t in threads)
    scores, seed_scores = {}, {}
    for cell in report.models[0].cells:
        mode = modes[cell.strategy]
        seconds[mode] += cell.seconds * share[(cell.task, cell.dataset, cell.strategy)]
        images[mode] += (
            n_train(settings, cell.task, cell.dataset) * epochs[cell.strategy] * len(cell.seed_scores)
        )
        scores[(cell.task, cell.dataset, cell.strategy)] = (
            cell.score if cell.score is not None else float("nan")
        )
        seed_scores[(cell.task, cell.dataset, cell.strategy)] = list(cell.seed_scores)
    return EngineResult(
        dict(seconds),
        dict(images),
        scores,
        seed_scores,
        total,
        repeat,
        new_snapshot,
        newer.trials_run,
        peak_rss,
        report.trials_run,
        groups,
    )


def _worker_peak_rss(executor: object) -> float:
    """Peak resident memory (MiB) of the executor's workers together, from /proc (Linux)."""
    total = 0.0
    for worker in getattr(executor, "_workers", []):
        try:
            for line in Path(f"/proc/{worker.process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            return float("nan")
    return total or float("nan")


def _publish_new_snapshot(settings: Settings) -> None:
    """A copy of one dataset's snapshot with one image changed, published as a newer snapshot.

    Each call flips another image, so that a second engine run's new snapshot is new content
    (the trial keys follow content: an identical copy would be all cached).
    """
    import shutil

    source = Path(settings.tasks[0].datasets[0].source)
    day = 2
    while (source / f"2026-11-{day:02d}T00").exists():  # (a second engine run publishes another)
        day += 1
    new = source / f"2026-11-{day:02d}T00"
    shutil.copytree(source / "2026-11-01T00", new)
    changed = sorted((new / "train").rglob("*.png"))[day - 2]
    Image.open(changed).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(changed)


def n_train(settings: Settings, task: str, dataset: str) -> int:
    source = next(d.source for d in settings.task(task).datasets if d.name == dataset)
    return sum(1 for _ in (Path(source) / "2026-11-01T00" / "train").rglob("*.png"))


class _Quiet:
    """Prints only problems; keeps the CPU threads each trial ran with, per cell."""

    def __init__(self) -> None:
        self.threads: dict[tuple[str, str, str], list[int]] = defaultdict(list)

    def stage(self, text: str) -> None: ...
    def warn(self, text: str) -> None:
        print(f"warning: {text}", file=sys.stderr)

    def planned(self, trials: int, cached: int) -> None: ...
    def trial_done(self, trial, result) -> None:  # type: ignore[no-untyped-def]
        if isinstance(result.details.get("threads"), int):
            cell = (trial.cell.task, trial.cell.dataset, trial.cell.strategy)
            self.threads[cell].append(result.details["threads"])
        if result.status == "failed":
            print(f"failed: {trial.cell}: {result.error}", file=sys.stderr)


# -- MFU on a GPU -----------------------------------------------------------------------------


def measure_mfu(
    device: str, *, images: int = 2048, batch: int = 256, epochs: int = 2, compile: bool = False
) -> dict[str, Any]:
    """ResNet-50 at 224 px, full fine-tune through the engine's training code, bf16 on the GPU.

    `compile`: the forward under torch.compile, as `executor.compile: true` runs it (the first
    call, untimed, compiles).
    """
    from torch.utils.flop_counter import FlopCounterMode

    from monitor.engine import CellRef, TrialSpec
    from monitor.engine.training import GroupData, finetune, image_feed, runtime_for
    from monitor.models import Backbone
    from monitor.models._surgery import drop_head, find_stages
    from monitor.settings import StrategySpec

    runtime = runtime_for(device)
    module = torchvision.models.resnet50().to(device).to(memory_format=torch.channels_last)
    dim = drop_head(module, "fc")
    backbone = Backbone(
        "resnet50", module, dim, "fc", find_stages(module, "fc", None, name="resnet50"), [], False
    )
    g = torch.Generator().manual_seed(0)
    data = GroupData(
        torch.randint(0, 256, (images, 3, 224, 224), dtype=torch.uint8, generator=g).to(device),
        (torch.arange(images) % 100).to(device),
        torch.randint(0, 256, (256, 3, 224, 224), dtype=torch.uint8, generator=g).to(device),
        (torch.arange(256) % 100).to(device),
        100,
        torch.full((1, 3, 1, 1), 1 / 58.0, device=device),
        torch.full((1, 3, 1, 1), -2.0, device=device),
        channels_last=True,
    )
    master = {k: v.clone() for k, v in module.state_dict().items()}
    strategy = StrategySpec(name="full", mode="full", lr=0.01, epochs=epochs, batch_size=batch)
    trial = TrialSpec("mfu", CellRef("m", "t", "d", "full"), 0, strategy)
    # FLOPs of one training step (forward + backward of model and head), counted by torch.
    head = nn.Linear(dim, 100).to(device)
    x = data.images(data.train_x[:batch])
    module.train()
    with FlopCounterMode(display=False) as counter, runtime.autocast():
        F.cross_entropy(head(module(x)).float(), data.train_y[:batch]).backward()
    step_flops = counter.get_total_flops()
    module.zero_grad(set_to_none=True)
    feed = image_feed(backbone, data)
    if compile:
        feed.forward = torch.compile(module)  # type: ignore[assignment]
    finetune(backbone, master, data, trial, "accuracy", runtime, feed=feed)  # warm-up: autotuning
    torch.cuda.synchronize()
    start = time.perf_counter()
    finetune(backbone, master, data, trial, "accuracy", runtime, feed=feed)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    steps = epochs * math.ceil(images / batch)
    name = torch.cuda.get_device_name(device)
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    achieved = step_flops * steps / seconds
    return {
        "device": name,
        "images_per_second": images * epochs / seconds,
        "achieved_tflops": achieved / 1e12,
        "peak_tflops": peak / 1e12 if peak else None,
        "mfu": achieved / peak if peak else None,
        "compiled": compile,
        "note": "includes the evaluation pass on 256 test images and per-epoch syncs",
    }


# -- memory of linear heads -------------------------------------------------------------------


def linear_heads_memory(heads: int, *, n: int = 20000, dim: int = 512, classes: int = 10) -> dict[str, float]:
    """Peak memory (MiB) that training `heads` linear trials adds on top of their shared features.

    Run in a fresh process per call (`_memory_child`), so each peak (VmHWM) is its own.
    """
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(_memory_child, (heads, n, dim, classes))


def _memory_child(heads: int, n: int, dim: int, classes: int) -> dict[str, float]:
    from monitor.engine import CellRef, TrialSpec
    from monitor.engine.training import train_linear_heads
    from monitor.settings import StrategySpec

    def peak() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, dim, generator=g), torch.randint(0, classes, (n,), generator=g)
    tx, ty = torch.randn(2000, dim, generator=g), torch.randint(0, classes, (2000,), generator=g)
    trials = [
        TrialSpec(
            f"k{h}",
            CellRef("m", "t", "d", f"lr{h}"),
            h,
            StrategySpec(name=f"lr{h}", mode="linear", lr=0.1 / (1 + h), epochs=1, batch_size=32),
        )
        for h in range(heads)
    ]
    train_linear_heads(x[:64], y[:64], tx[:64], ty[:64], classes, trials[:1], "accuracy")  # warm-up
    before = peak()
    train_linear_heads(x, y, tx, ty, classes, trials, "accuracy")
    # each head: weights, gradient and momentum [C, D] + [C]; its data order [N] (int64)
    per_head = (3 * (classes * dim + classes) * 4 + n * 8) / 2**20
    return {"heads": heads, "added_mib": peak() - before, "heads_state_mib": per_head * heads}


# -- report -----------------------------------------------------------------------------------


def compare_scores(baseline: BaselineResult, engine: EngineResult) -> dict[str, Any]:
    """Per-mode signed bias (mean of engine − baseline over the mode's cells), its standard error
    from the seeds of both loops, and P(M) of both.

    The grid is rectangular (every task has the same datasets), so P(M) is the mean of its cells.
    A cell's difference of two seed means has the variance (s²_engine + s²_baseline) / seeds.
    """
    modes = {s["name"]: s["mode"] for s in STRATEGIES}
    diffs = {cell: engine.scores[cell] - baseline.scores[cell] for cell in baseline.scores}
    variance = {
        cell: (
            statistics.variance(engine.seed_scores[cell]) + statistics.variance(baseline.seed_scores[cell])
        )
        / len(SEEDS)
        for cell in diffs
    }
    worst = max(diffs, key=lambda c: abs(diffs[c]))
    bias, bias_se = {}, {}
    for mode in ("linear", "partial", "full"):
        cells = [c for c in diffs if modes[c[2]] == mode]
        bias[mode] = statistics.fmean(diffs[c] for c in cells)
        bias_se[mode] = math.sqrt(sum(variance[c] for c in cells)) / len(cells)
    return {
        "bias": bias,
        "bias_se": bias_se,
        "engine_persistence": statistics.fmean(engine.scores[c] for c in diffs),
        "baseline_persistence": statistics.fmean(baseline.scores.values()),
        "persistence_difference": statistics.fmean(diffs.values()),
        "persistence_difference_se": math.sqrt(sum(variance.values())) / len(diffs),
        "max_cell_difference": abs(diffs[worst]),
        "worst_cell": "/".join(worst),
    }


def ray_overhead(
    settings: Settings, options: EngineOptions, local: EngineResult, workdir: Path
) -> dict[str, Any]:
    """The same grid on Ray (a fresh state, the same sources): its cost beyond the local executor.

    The Ray run starts a local Ray instance and its actors (as `executor: {kind: ray}` with
    `address: null` does), ships each snapshot and the weights through the object store, and
    streams every result back: all of that is in its wall time.
    """
    fresh = settings.model_copy(update={"state_dir": workdir / "state-ray", "database_url": None})
    on_ray = run_engine(fresh, inline=False, options=options, executor_kind="ray")
    trials, groups = on_ray.trials_run, on_ray.groups
    extra = on_ray.total - local.total
    figures = {
        "local_first_run_s": local.total,
        "ray_first_run_s": on_ray.total,
        "ray_repeat_s": on_ray.repeat,
        "local_repeat_s": local.repeat,
        "trials": trials,
        "groups": groups,
        "overhead_per_trial_s": extra / trials if trials else None,
        "overhead_per_group_s": extra / groups if groups else None,
        # a run with the executor warm: one dataset with a new snapshot (one work group) re-runs
        "warm_local_s": local.new_snapshot,
        "warm_ray_s": on_ray.new_snapshot,
        "warm_trials": on_ray.new_snapshot_trials,
        "warm_overhead_per_trial_s": (on_ray.new_snapshot - local.new_snapshot) / on_ray.new_snapshot_trials
        if on_ray.new_snapshot_trials
        else None,
    }
    print()
    print(
        f"ray: first run {on_ray.total:.1f}s vs local {local.total:.1f}s ({trials} fine-tunes in {groups} work "
        f"groups): {extra:+.1f}s, {figures['overhead_per_trial_s'] or 0:+.3f}s a fine-tune, "
        f"{figures['overhead_per_group_s'] or 0:+.2f}s a group (Ray start-up and actors included)"
    )
    print(
        f"ray, warm (one dataset with a new snapshot, {on_ray.new_snapshot_trials} fine-tunes): "
        f"{on_ray.new_snapshot:.1f}s vs local {local.new_snapshot:.1f}s, "
        f"{figures['warm_overhead_per_trial_s'] or 0:+.3f}s a fine-tune"
    )
    print(f"ray: repeated run with unchanged inputs {on_ray.repeat:.2f}s vs local {local.repeat:.2f}s")
    return figures


def _ratio(a: float, b: float) -> str:
    return f"{a / b:6.1f}x" if b > 0 else "   n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--size", type=int, default=1, help="scale the images per class (default 1: 16 train, 8 test)"
    )
    # 64 px: at 32 px ResNet-18's last stage runs on 1x1 maps, an unusually small regime.
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--inline", action="store_true", help="run the engine in this process (no worker)")
    parser.add_argument("--batch-finetunes", choices=("auto", "always", "never"), default="auto")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    parser.add_argument(
        "--cpu-workers",
        type=int,
        default=0,
        help="override executor.cpu_workers (default: the setting's auto)",
    )
    parser.add_argument(
        "--mfu", action="store_true", help="also measure ResNet-50 224 px full fine-tune MFU (GPU)"
    )
    parser.add_argument(
        "--mfu-compile", action="store_true", help="also measure that MFU with torch.compile (GPU)"
    )
    parser.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="ray: also run the engine on a local Ray instance and report Ray's overhead per trial and group",
    )
    parser.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the baseline loop and its comparison (with --executor ray: only Ray's overhead)",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="keep the workspace here")
    parser.add_argument("--json", type=Path, default=None, help="write the figures to this file")
    args = parser.parse_args(argv)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="pm-bench-"))
    print(
        f"workspace {workdir}  device {args.device}  torch {torch.__version__}  threads {torch.get_num_threads()}"
    )
    t0 = time.perf_counter()
    config = build_workspace(workdir, size=args.size, image_size=args.image_size, device=args.device)
    print(f"built the workspace (digits, pre-trained ResNet-18) in {time.perf_counter() - t0:.1f}s")
    from monitor.settings import load_settings

    settings = load_settings(config)
    options = dataclasses.replace(
        EngineOptions.from_settings(settings.executor),
        batch_finetunes=args.batch_finetunes,
        precision=args.precision,
        **({"cpu_workers": args.cpu_workers} if args.cpu_workers else {}),
    )
    print(f"engine options: {options}")

    if args.no_baseline:
        engine = run_engine(settings, inline=args.inline, options=options)
        print(f"engine:   {engine.total:.1f}s (repeat with unchanged inputs: {engine.repeat:.2f}s)")
        only: dict[str, Any] = {
            "device": args.device,
            "engine_total_s": engine.total,
            "repeat_s": engine.repeat,
        }
        if args.executor == "ray":
            only["ray"] = ray_overhead(settings, options, engine, workdir)
        if args.json:
            args.json.write_text(json.dumps(only, indent=2))
        return 0
    baseline = run_baseline(config, args.device)
    print(f"baseline: {baseline.total:.1f}s")
    engine = run_engine(settings, inline=args.inline, options=options)
    print(f"engine:   {engine.total:.1f}s (repeat with unchanged inputs: {engine.repeat:.2f}s)")

    rows = []
    print()
    print(
        f"{'mode':8} {'baseline s':>11} {'engine s':>9} {'ratio':>7} {'baseline img/s':>15} {'engine img/s':>13}"
    )
    for mode in ("linear", "partial", "full"):
        b, e = baseline.seconds[mode], engine.seconds.get(mode, 0.0)
        bi, ei = baseline.images[mode] / b if b else 0, engine.images.get(mode, 0) / e if e else 0
        print(f"{mode:8} {b:11.2f} {e:9.2f} {_ratio(b, e)} {bi:15.0f} {ei:13.0f}")
        rows.append(
            {
                "mode": mode,
                "baseline_s": b,
                "engine_s": e,
                "ratio": b / e if e else None,
                "baseline_images_per_s": bi,
                "engine_images_per_s": ei,
            }
        )
    print(
        f"{'total':8} {baseline.total:11.2f} {engine.total:9.2f} {_ratio(baseline.total, engine.total)}"
        "   (engine total: wall time of the whole run, decoding and worker start-up included)"
    )
    if options.cpu_workers > 1 and args.device == "cpu" and not args.inline:
        print(
            f"(per-mode engine seconds are machine-seconds: {options.cpu_workers} CPU workers run trials side "
            "by side, so each trial's wall time counts for its share of the cores, threads / cores)"
        )
    agreement = compare_scores(baseline, engine)
    print()
    print("scores, engine − baseline (the baseline draws its own random numbers: seed noise remains)")
    for mode in ("linear", "partial", "full"):
        print(
            f"  {mode:8} bias {agreement['bias'][mode]:+.4f} ± {agreement['bias_se'][mode]:.4f}"
            "   (mean signed cell difference ± its standard error from the seeds; target |bias| ≤ 0.03)"
        )
    print(
        f"  P(M)     engine {agreement['engine_persistence']:.4f}  baseline {agreement['baseline_persistence']:.4f}"
        f"  difference {agreement['persistence_difference']:+.4f} ± {agreement['persistence_difference_se']:.4f}"
    )
    worst = agreement["worst_cell"]
    print(f"  largest per-cell difference: {agreement['max_cell_difference']:.4f} ({worst})")
    print(f"repeated run / first run: {engine.repeat / engine.total:.2%}")
    print(
        f"one dataset with a new snapshot: {engine.new_snapshot:.1f}s, {engine.new_snapshot_trials} fine-tunes "
        f"({engine.new_snapshot / engine.total:.0%} of the first run, which had {len(engine.scores) * len(SEEDS)})"
    )
    if args.inline and args.device.startswith("cuda"):
        print(
            f"peak GPU memory allocated (baseline and engine): {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"
        )
    print(
        f"peak memory: baseline process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB, "
        f"engine {'process' if args.inline else 'workers'} {engine.peak_rss_mib:.0f} MiB (max RSS)"
    )
    # measured on the CPU (peak RSS of a fresh process); on a GPU the figure would not be the GPU's
    memory = [linear_heads_memory(h) for h in (6, 96)] if args.device == "cpu" else []
    if memory:
        print(
            "memory that linear heads add over 20000 shared 512-d features (39 MiB, 10 classes): "
            + ", ".join(
                f"{m['heads']:.0f} heads +{m['added_mib']:.0f} MiB (weights, gradients, momentum and data "
                f"order: {m['heads_state_mib']:.0f} MiB)"
                for m in memory
            )
        )
    figures: dict[str, Any] = {
        "device": args.device,
        "cpu_workers": options.cpu_workers,
        "size": args.size,
        "image_size": args.image_size,
        "modes": rows,
        "baseline_total_s": baseline.total,
        "engine_total_s": engine.total,
        "ratio_total": baseline.total / engine.total,
        "repeat_s": engine.repeat,
        "repeat_fraction": engine.repeat / engine.total,
        "new_snapshot_s": engine.new_snapshot,
        "new_snapshot_trials": engine.new_snapshot_trials,
        "max_cell_score_difference": agreement["max_cell_difference"],
        "bias": agreement["bias"],
        "bias_se": agreement["bias_se"],
        "persistence_difference": agreement["persistence_difference"],
        "persistence_difference_se": agreement["persistence_difference_se"],
        "linear_heads_memory": memory,
    }
    if args.executor == "ray":
        figures["ray"] = ray_overhead(settings, options, engine, workdir)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    if args.mfu or args.mfu_compile:
        if not args.device.startswith("cuda"):
            print("MFU: needs a CUDA device (skipped)")
        else:
            for compiled in [False] * args.mfu + [True] * args.mfu_compile:
                mfu = measure_mfu(args.device, compile=compiled)
                figures["mfu_compiled" if compiled else "mfu"] = mfu
                print(
                    f"ResNet-50 224 px full fine-tune, bf16{', compiled' if compiled else ''}: "
                    f"{mfu['images_per_second']:.0f} img/s, {mfu['achieved_tflops']:.0f} TFLOP/s"
                    + (f", MFU {mfu['mfu']:.1%}" if mfu["mfu"] else "")
                )
                if args.json:  # written as it goes: a later step that fails keeps these figures
                    args.json.write_text(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
