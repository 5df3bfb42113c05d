"""Pre-train the demo's deployed model on the digits it is allowed to see (0-4)."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from ._digits import SEEN, DigitPools, render

__all__ = ["MEAN", "STD", "pretrain"]

# Preprocessing shared by pre-training and the workspace config (`normalize:`).
MEAN = (0.2, 0.2, 0.2)
STD = (0.3, 0.3, 0.3)


def _load_factory(module_path: Path, factory: str) -> Callable[[], nn.Module]:
    spec = importlib.util.spec_from_file_location("pm_demo_model", module_path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    built: Callable[[], nn.Module] = getattr(module, factory)
    return built


def _batch(pools: DigitPools, index: np.ndarray, rng: np.random.Generator, drift: float) -> torch.Tensor:
    pictures = [np.asarray(render(pools.images[i], style="scanner-a", drift=drift, rng=rng)) for i in index]
    x = torch.from_numpy(np.stack(pictures)).float().div_(255.0)[:, None].expand(-1, 3, -1, -1)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


def pretrain(
    module_path: Path,
    factory: str,
    out: Path,
    pools: DigitPools,
    *,
    epochs: int = 12,
    seed: int = 0,
    augment_drift: float = 0.4,
) -> dict[str, float]:
    """Train the model on the pre-training pool, its images drifted by `augment_drift` as
    augmentation (mild drift makes robust features); save a safetensors state_dict."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = _load_factory(module_path, factory)()
    index = pools.pretrain
    labels = torch.from_numpy(pools.labels[index])
    assert set(labels.tolist()) <= set(SEEN)
    holdout = index[::5]
    train = np.setdiff1d(index, holdout)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    steps = epochs * int(np.ceil(len(train) / 64))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps)
    start = time.perf_counter()
    label_of = {int(i): int(pools.labels[i]) for i in index}
    for _ in range(epochs):
        model.train()
        order = rng.permutation(train)
        for begin in range(0, len(order), 64):
            chunk = order[begin : begin + 64]
            x = _batch(pools, chunk, rng, drift=augment_drift)
            y = torch.tensor([label_of[int(i)] for i in chunk])
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    model.eval()
    with torch.no_grad():
        x = _batch(pools, holdout, np.random.default_rng(1), drift=0.0)
        y = torch.tensor([label_of[int(i)] for i in holdout])
        accuracy = float((model(x).argmax(1) == y).float().mean())
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out))
    return {"holdout_accuracy": accuracy, "seconds": time.perf_counter() - start}
