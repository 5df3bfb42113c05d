"""Real images for the demo: scikit-learn's handwritten digits, rendered as drifting snapshots.

The 1,797 8x8 digits (bundled with scikit-learn, no download) are split once, deterministically,
into a pre-training pool (half of the digits 0-4) and two disjoint "scanner" pools. A snapshot
renders a pool at 32x32 with a drift level: 0 is clean; higher levels rotate, blur and add noise,
as a camera or a scanner slowly going out of spec would.
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

__all__ = ["DigitPools", "load_pools", "render", "write_snapshot"]

SIZE = 32
SEEN = (0, 1, 2, 3, 4)  # the classes the demo model is pre-trained on


@dataclass(frozen=True)
class DigitPools:
    images: np.ndarray  # [N, 8, 8] in 0..16
    labels: np.ndarray  # [N]
    pretrain: np.ndarray  # indices
    scanner: dict[str, np.ndarray]  # "scanner-a" / "scanner-b" -> indices


def load_pools() -> DigitPools:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images, labels = digits.images.astype(np.float32), digits.target.astype(np.int64)
    rng = np.random.default_rng(20261129)
    pretrain: list[int] = []
    pool_a: list[int] = []
    pool_b: list[int] = []
    for cls in range(10):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        if cls in SEEN:
            half = len(idx) // 2
            pretrain.extend(idx[:half])
            idx = idx[half:]
        pool_a.extend(idx[0::2])
        pool_b.extend(idx[1::2])
    return DigitPools(
        images,
        labels,
        np.array(sorted(pretrain)),
        {"scanner-a": np.array(sorted(pool_a)), "scanner-b": np.array(sorted(pool_b))},
    )


def render(image: np.ndarray, *, style: str, drift: float, rng: np.random.Generator) -> Image.Image:
    """One 8x8 digit as a 32x32 grayscale picture of a scanner `style` at a `drift` level."""
    pixels = np.clip(image / 16.0 * 255.0, 0, 255).astype(np.uint8)
    picture = Image.fromarray(pixels, mode="L").resize((SIZE, SIZE), Image.Resampling.BICUBIC)
    if style == "scanner-b":
        picture = picture.filter(ImageFilter.MaxFilter(3))  # this scanner prints thicker strokes
    if drift > 0:
        angle = float(rng.normal(0.0, 10.0 * drift))
        shift = rng.normal(0.0, 1.0 * drift, size=2)
        picture = picture.rotate(
            angle,
            resample=Image.Resampling.BILINEAR,
            translate=(round(float(shift[0])), round(float(shift[1]))),
        )
        picture = picture.filter(ImageFilter.GaussianBlur(radius=0.5 * drift))
        noisy = np.asarray(picture, dtype=np.float32) + rng.normal(0.0, 18.0 * drift, size=(SIZE, SIZE))
        picture = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), mode="L")
    return picture


def write_snapshot(
    source: Path,
    snapshot_id: str,
    *,
    pools: DigitPools,
    style: str,
    classes: tuple[int, ...],
    drift: float,
    layout: str,
    seed: int,
) -> Path:
    """Publish one complete snapshot into `source` the way a real producer should: atomically.

    `layout` "split" writes a folder with train/ and test/ and then the _SUCCESS marker;
    "archive" writes `<class>/<image>` into a .tar.gz (renamed into place when complete).
    """
    rng = np.random.default_rng(seed)
    source.mkdir(parents=True, exist_ok=True)
    index = [i for i in pools.scanner[style] if pools.labels[i] in classes]
    files: list[tuple[str, bytes]] = []
    for position, i in enumerate(index):
        label = int(pools.labels[i])
        picture = render(pools.images[i], style=style, drift=drift, rng=rng)
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        name = f"{label}/{style}-{i:04d}.png"
        if layout == "split":
            split = "test" if position % 3 == 0 else "train"  # a fixed third held out
            name = f"{split}/{name}"
        files.append((name, buffer.getvalue()))
    if layout == "split":
        final = source / snapshot_id
        staging = Path(tempfile.mkdtemp(prefix=f".{snapshot_id}.", dir=source))
        for name, data in files:
            path = staging / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        os.replace(staging, final)
        (final / "_SUCCESS").touch()  # last: the snapshot is complete only now
        return final
    final = source / f"{snapshot_id}.tar.gz"
    fd, partial = tempfile.mkstemp(prefix=f".{snapshot_id}.", suffix=".part", dir=source)
    with os.fdopen(fd, "wb") as handle, tarfile.open(fileobj=handle, mode="w:gz") as archive:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1764547200
            archive.addfile(info, io.BytesIO(data))
    os.replace(partial, final)
    return final
