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

(a) the baseline, written the obvious way: per cell a deepcopy of the model, a
    `torch.utils.data.DataLoader` over PIL images decoded from the snapshot folder every epoch,
    fp32, one cell after another, the whole backbone run for every batch of every linear cell.
    It follows the engine's protocol (head initialisation, data order, cosine schedule), so the
    two compute the same thing and their scores must agree;
(b) the engine, through the public pipeline (`run_evaluation` with the worker-process executor),
    from an empty state directory — decoding, worker start-up and all — and then once more with
    unchanged inputs (everything cached).

Times are wall-clock seconds of this run on this machine; ratios compare the two in the same run,
which is what stays meaningful on a noisy machine.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import resource
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image, ImageFilter
from torch import nn
from torch.utils.data import DataLoader, Sampler

from monitor.engine import EngineOptions, InlineExecutor, LocalExecutor
from monitor.engine._executor import cpu_count
from monitor.engine.training import cosine_factor, init_head, score_predictions
from monitor.pipeline import run_evaluation
from monitor.settings import Settings
from monitor.store import Store

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TASKS = {"unseen-digits": (5, 6, 7, 8, 9), "all-digits": tuple(range(10))}
DATASETS = ("scanner-a", "scanner-b")
STRATEGIES: list[dict[str, Any]] = [
    # The demo's protocol: linear probes are cheap and train longer; fine-tunes take few epochs.
    {"name": "linear-lr0.3", "mode": "linear", "lr": 0.3, "epochs": 20, "batch_size": 32},
    {"name": "linear-lr0.1", "mode": "linear", "lr": 0.1, "epochs": 20, "batch_size": 32},
    {"name": "linear-lr0.03", "mode": "linear", "lr": 0.03, "epochs": 20, "batch_size": 32},
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


# -- (a) the baseline -------------------------------------------------------------------------


class _Order(Sampler[int]):
    """The engine's data order: each epoch a permutation drawn from the trial's own generator."""

    def __init__(self, n: int, generator: torch.Generator) -> None:
        self.n, self.generator = n, generator

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(torch.randperm(self.n, generator=self.generator).tolist())

    def __len__(self) -> int:
        return self.n


@dataclass
class BaselineResult:
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    images: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    scores: dict[tuple[str, str, str], float] = field(default_factory=dict)
    total: float = 0.0


def run_baseline(config: Path, device: str) -> BaselineResult:
    """The seed-style loop: deepcopy per cell, DataLoader over PIL images, fp32, sequential."""
    root = config.parent
    pretrained = torchvision.models.resnet18(num_classes=5)
    pretrained.load_state_dict(torch.load(root / "resnet18.pt", weights_only=True))
    transform = torchvision.transforms.Compose(
        [torchvision.transforms.ToTensor(), torchvision.transforms.Normalize(MEAN, STD)]
    )
    result = BaselineResult()
    start = time.perf_counter()
    for task in TASKS:
        for dataset in DATASETS:
            snapshot = root / "data" / task / dataset / "2026-11-01T00"
            train_set = torchvision.datasets.ImageFolder(snapshot / "train", transform=_rgb_then(transform))
            test_set = torchvision.datasets.ImageFolder(snapshot / "test", transform=_rgb_then(transform))
            classes = len(train_set.classes)
            for strategy in STRATEGIES:
                seed_scores = []
                for seed in SEEDS:
                    t0 = time.perf_counter()
                    seed_scores.append(
                        _baseline_trial(pretrained, train_set, test_set, classes, strategy, seed, device)
                    )
                    result.seconds[strategy["mode"]] += time.perf_counter() - t0
                    result.images[strategy["mode"]] += len(train_set) * strategy["epochs"]
                result.scores[(task, dataset, strategy["name"])] = statistics.fmean(seed_scores)
    result.total = time.perf_counter() - start
    return result


def _rgb_then(transform):  # type: ignore[no-untyped-def]
    return torchvision.transforms.Compose(
        [torchvision.transforms.Lambda(lambda p: p.convert("RGB")), transform]
    )


def _baseline_trial(
    pretrained: nn.Module, train_set, test_set, classes: int, strategy: dict, seed: int, device: str
) -> float:  # type: ignore[no-untyped-def]
    model = copy.deepcopy(pretrained)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    weight, bias = init_head(classes, model.fc.in_features, generator)
    model.fc = nn.Linear(model.fc.in_features, classes)
    with torch.no_grad():
        model.fc.weight.copy_(weight)
        model.fc.bias.copy_(bias)
    model = model.to(device)
    for p in model.parameters():
        p.requires_grad_(strategy["mode"] == "full")
    if strategy["mode"] == "partial":
        for p in model.layer4.parameters():
            p.requires_grad_(True)
    for p in model.fc.parameters():
        p.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=strategy["lr"], momentum=0.9)
    loader = DataLoader(
        train_set, batch_size=strategy["batch_size"], sampler=_Order(len(train_set), generator)
    )
    total = strategy["epochs"] * math.ceil(len(train_set) / strategy["batch_size"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_factor(s, total))
    for _ in range(strategy["epochs"]):
        model.train(strategy["mode"] == "full")
        if strategy["mode"] == "partial":
            model.layer4.train()
        for x, y in loader:
            loss = F.cross_entropy(model(x.to(device)), y.to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
    model.eval()
    predictions, labels = [], []
    with torch.no_grad():
        for x, y in DataLoader(test_set, batch_size=256):
            predictions.append(model(x.to(device)).argmax(1).cpu())
            labels.append(y)
    return float(score_predictions("accuracy", torch.cat(predictions), torch.cat(labels), classes))


# -- (b) the engine ---------------------------------------------------------------------------


@dataclass
class EngineResult:
    seconds: dict[str, float]
    images: dict[str, int]
    scores: dict[tuple[str, str, str], float]
    total: float
    repeat: float
    new_snapshot: float  # one dataset got a new snapshot: only its cells run again
    new_snapshot_trials: int
    peak_rss_mib: float


def run_engine(settings: Settings, *, inline: bool, options: EngineOptions) -> EngineResult:
    store = Store.open(settings.resolved_database_url)
    executor = (
        InlineExecutor(settings.device, options)
        if inline
        else LocalExecutor(settings.device, cell_timeout=settings.executor.cell_timeout, options=options)
    )
    modes = {s.name: s.mode for s in settings.strategies}
    epochs = {s.name: s.epochs for s in settings.strategies}
    seconds: dict[str, float] = defaultdict(float)
    images: dict[str, int] = defaultdict(int)
    try:
        start = time.perf_counter()
        if isinstance(executor, LocalExecutor):
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
    scores = {}
    for cell in report.models[0].cells:
        mode = modes[cell.strategy]
        seconds[mode] += cell.seconds * share[(cell.task, cell.dataset, cell.strategy)]
        images[mode] += (
            n_train(settings, cell.task, cell.dataset) * epochs[cell.strategy] * len(cell.seed_scores)
        )
        scores[(cell.task, cell.dataset, cell.strategy)] = (
            cell.score if cell.score is not None else float("nan")
        )
    return EngineResult(
        dict(seconds),
        dict(images),
        scores,
        total,
        repeat,
        new_snapshot,
        newer.trials_run,
        peak_rss,
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
    """A copy of one dataset's snapshot with one image changed, published as a newer snapshot."""
    import shutil

    source = Path(settings.tasks[0].datasets[0].source)
    new = source / "2026-11-02T00"
    shutil.copytree(source / "2026-11-01T00", new)
    first = sorted((new / "train").rglob("*.png"))[0]
    Image.open(first).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(first)


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
    diffs = {k: abs(baseline.scores[k] - engine.scores[k]) for k in baseline.scores}
    worst = max(diffs, key=lambda k: diffs[k])
    print(f"largest per-cell score difference: {diffs[worst]:.4f} ({'/'.join(worst)})")
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
        "max_cell_score_difference": diffs[worst],
        "linear_heads_memory": memory,
    }
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
