"""The grid benchmark's baseline: the seed-style fine-tune loop, as users write it.

Deliberately independent of the engine: nothing here imports `monitor` (a static test checks it),
and nothing copies the engine's protocol — its head initialisation, data order or learning-rate
function. Per trial: a deepcopy of the pre-trained ResNet-18 with a new `nn.Linear` head,
`model.train()`, `torch.optim.SGD` at a constant learning rate (torch's own scheduler where a
strategy names one), a shuffling `DataLoader` over PIL images decoded from the snapshot folder
every epoch, fp32, one trial after another, the whole backbone run for every batch of every linear
probe. The stages `partial` counts from the end are README's for a ResNet: conv1, bn1, layer1–4.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.data import DataLoader

__all__ = ["BaselineResult", "run"]


@dataclass
class BaselineResult:
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    images: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    scores: dict[tuple[str, str, str], float] = field(default_factory=dict)  # (task, dataset, strategy)
    seed_scores: dict[tuple[str, str, str], list[float]] = field(default_factory=dict)
    total: float = 0.0


def run(
    weights: Path,
    snapshots: dict[tuple[str, str], Path],
    strategies: list[dict[str, Any]],
    seeds: tuple[int, ...],
    device: str,
    *,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
) -> BaselineResult:
    """Every (task, dataset) snapshot × strategy × seed, one trial after another."""
    pretrained = torchvision.models.resnet18(num_classes=5)
    pretrained.load_state_dict(torch.load(weights, weights_only=True))
    transform = torchvision.transforms.Compose(
        [
            torchvision.transforms.Lambda(lambda p: p.convert("RGB")),
            torchvision.transforms.ToTensor(),
            torchvision.transforms.Normalize(mean, std),
        ]
    )
    result = BaselineResult()
    start = time.perf_counter()
    for (task, dataset), snapshot in snapshots.items():
        train_set = torchvision.datasets.ImageFolder(snapshot / "train", transform=transform)
        test_set = torchvision.datasets.ImageFolder(snapshot / "test", transform=transform)
        for strategy in strategies:
            seed_scores = []
            for seed in seeds:
                t0 = time.perf_counter()
                seed_scores.append(trial(pretrained, train_set, test_set, strategy, seed, device))
                result.seconds[strategy["mode"]] += time.perf_counter() - t0
                result.images[strategy["mode"]] += len(train_set) * strategy["epochs"]
            result.scores[(task, dataset, strategy["name"])] = statistics.fmean(seed_scores)
            result.seed_scores[(task, dataset, strategy["name"])] = seed_scores
    result.total = time.perf_counter() - start
    return result


def trial(pretrained: nn.Module, train_set, test_set, strategy: dict, seed: int, device: str) -> float:  # type: ignore[no-untyped-def]
    """One fine-tune as it is written by hand; returns the test accuracy."""
    torch.manual_seed(seed)
    model = copy.deepcopy(pretrained)
    model.fc = nn.Linear(model.fc.in_features, len(train_set.classes))
    model = model.to(device)
    mode = strategy["mode"]
    for p in model.parameters():
        p.requires_grad_(mode == "full")
    stages = [model.conv1, model.bn1, model.layer1, model.layer2, model.layer3, model.layer4]
    trained = [*stages[-strategy["trainable_blocks"] :], model.fc] if mode == "partial" else [model.fc]
    for module in trained:
        module.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=strategy["lr"], momentum=0.9)
    loader = DataLoader(
        train_set,
        batch_size=strategy["batch_size"],
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )
    scheduler = _scheduler(optimizer, strategy, strategy["epochs"] * len(loader))
    for _ in range(strategy["epochs"]):
        model.train()
        if mode == "linear":
            model.eval()  # a linear probe: the frozen backbone is a feature extractor
        elif mode == "partial" and strategy.get("bn", "frozen") == "frozen":
            model.eval()  # the stages that do not train keep their BatchNorm statistics
            for module in trained:
                module.train()
        for x, y in loader:
            loss = F.cross_entropy(model(x.to(device)), y.to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in DataLoader(test_set, batch_size=256):
            correct += int((model(x.to(device)).argmax(1).cpu() == y).sum())
            total += len(y)
    return correct / total


def _scheduler(optimizer: torch.optim.Optimizer, strategy: dict, steps: int):  # type: ignore[no-untyped-def]
    """torch's scheduler for the strategy's `schedule` (stepped per batch); None: constant."""
    if strategy.get("schedule", "constant") == "constant":
        return None
    if strategy["schedule"] == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=steps, eta_min=strategy.get("min_lr", 0)
        )
    raise NotImplementedError(f"the baseline has no {strategy['schedule']} schedule")
