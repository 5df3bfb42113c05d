"""Test helpers: real images (scikit-learn's digits) in snapshot folders, and small real models."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

_DIGITS: tuple[np.ndarray, np.ndarray] | None = None


def digits() -> tuple[np.ndarray, np.ndarray]:
    global _DIGITS
    if _DIGITS is None:
        from sklearn.datasets import load_digits

        data = load_digits()
        _DIGITS = (data.images.astype(np.float32), data.target.astype(np.int64))
    return _DIGITS


def digit_picture(image: np.ndarray, size: int = 32) -> Image.Image:
    pixels = np.clip(image / 16.0 * 255.0, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, mode="L").resize((size, size), Image.Resampling.BICUBIC)


def write_snapshot(
    root: Path,
    classes: tuple[int, ...],
    *,
    per_class: int = 24,
    layout: str = "split",
    offset: int = 0,
    marker: bool = True,
    size: int = 32,
) -> Path:
    """An ImageFolder-style snapshot of real digits: `split` (train/ + test/) or `hashed` (<class>/)."""
    images, labels = digits()
    for cls in classes:
        idx = np.flatnonzero(labels == cls)[offset : offset + per_class]
        for n, i in enumerate(idx):
            split = ("test" if n % 3 == 0 else "train") if layout == "split" else None
            folder = root / split / str(cls) if split else root / str(cls)
            folder.mkdir(parents=True, exist_ok=True)
            digit_picture(images[i], size).save(folder / f"{i:04d}.png")
    if marker:
        (root / "_SUCCESS").touch()
    return root


TINY_CNN = """
from torch import nn


class TinyCNN(nn.Module):
    def __init__(self, num_classes=5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2)),
            nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2)),
            nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()),
        )
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        return self.fc(self.features(x))


def build():
    return TinyCNN()
"""


def write_tiny_cnn(directory: Path, name: str = "tiny_cnn", extra: str = "") -> str:
    """Write a small CNN factory module into `directory`; returns its `python:` architecture."""
    (directory / f"{name}.py").write_text(textwrap.dedent(TINY_CNN) + textwrap.dedent(extra))
    return f"python:{name}:build"


def write_config(path: Path, document: dict) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def basic_config(
    models: list[dict],
    datasets: dict[str, list[tuple[str, str]]],
    *,
    strategies: list[dict] | None = None,
    seeds: list[int] | None = None,
    image_size: int = 32,
    metric: str = "accuracy",
) -> dict:
    return {
        "state_dir": "state",
        "device": "cpu",
        "models": [{"image_size": image_size, **m} for m in models],
        "tasks": [
            {
                "name": task,
                "metric": metric,
                "train_per_class": 16,
                "test_per_class": 8,
                "datasets": [{"name": name, "source": source} for name, source in entries],
            }
            for task, entries in datasets.items()
        ],
        "strategies": strategies
        or [
            {"name": "lin-a", "mode": "linear", "lr": 0.1, "epochs": 5, "batch_size": 16},
            {"name": "lin-b", "mode": "linear", "lr": 0.02, "epochs": 5, "batch_size": 16},
            {
                "name": "part",
                "mode": "partial",
                "trainable_blocks": 1,
                "lr": 0.05,
                "epochs": 2,
                "batch_size": 16,
            },
            {
                "name": "full",
                "mode": "full",
                "optimizer": "adamw",
                "lr": 0.002,
                "epochs": 1,
                "batch_size": 16,
            },
        ],
        "seeds": seeds or [0, 1],
    }
