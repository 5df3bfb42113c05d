"""The corruptions of derived datasets, on torchvision's v2 functional transforms (JPEG: Pillow).

`derived_entry` gives a derived dataset's cache entry: found in the decoded cache (its checksums
verified), or made now from its source's arrays and published there for every later group, run
and model of that image size. The severities are `monitor.data.SHIFTS`.

Deterministic per image: whatever is random about an image's corruption (its noise, the
direction of its rotation) is drawn from a generator seeded by sha256("<seed>:<path>"), the
path being the image's own within its snapshot, so an image is corrupted the same way in every
process, whatever else the snapshot holds and in whatever order. The work runs on the CPU with
one thread, so that no device or thread count changes a rounding (the cache is shared by
every worker, and a fresh state_dir must make the same bytes).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from ...data import (
    SHIFTS,
    DecodedArrays,
    PreparedData,
    image_paths,
    load_arrays,
    open_derived,
    write_derived,
)

__all__ = ["corrupt", "derived_entry"]

_CHUNK = 256  # images corrupted at once: 256 x 3 x 224² floats are 150 MB
_REFERENCE_SIZE = 224  # the image size ImageNet-C's pixel-valued parameters (blur σ) are given for


def derived_entry(prepared: PreparedData) -> PreparedData:
    """The cache entry that holds a derived dataset's arrays, made from its source's if needed."""
    derivation = prepared.derivation
    assert derivation is not None, "derived_entry takes a derived dataset's entry"
    cached = open_derived(prepared)
    if cached is not None:
        return cached
    arrays = load_arrays(derivation.source)
    train_paths, test_paths = image_paths(derivation.source)

    def shifted(images: npt.NDArray[np.uint8], paths: list[str]) -> npt.NDArray[np.uint8]:
        return corrupt(images, paths, derivation.shift, derivation.severity, derivation.seed)

    train_x = shifted(arrays.train_x, train_paths) if derivation.apply_to == "both" else arrays.train_x
    test_x = shifted(arrays.test_x, test_paths)
    return write_derived(prepared, DecodedArrays(train_x, arrays.train_y, test_x, arrays.test_y))


def corrupt(
    images: npt.NDArray[np.uint8], paths: Sequence[str], shift: str, severity: int, seed: int
) -> npt.NDArray[np.uint8]:
    """`images` (uint8 [N, 3, S, S]) under `shift` at `severity` (1-5); `paths[i]` names image i."""
    if len(paths) != len(images):
        raise ValueError(f"{len(paths)} paths for {len(images)} images")
    if not 1 <= severity <= 5:
        raise ValueError(f"severity {severity} is not 1-5")
    level = SHIFTS[shift].levels[severity - 1]
    out = np.empty_like(images)
    with _one_cpu_thread():
        for start in range(0, len(images), _CHUNK):
            chunk = torch.from_numpy(np.ascontiguousarray(images[start : start + _CHUNK]))
            generators = [_generator(seed, path) for path in paths[start : start + _CHUNK]]
            out[start : start + _CHUNK] = _apply(chunk, shift, level, generators).numpy()
    return out


def _apply(x: torch.Tensor, shift: str, level: float, generators: list[torch.Generator]) -> torch.Tensor:
    """One chunk, uint8 in and out; floats in [0, 1] in between (the [0, 1] of the parameters)."""
    if shift == "jpeg":
        return _jpeg(x, int(level))
    image = F.to_dtype(x, torch.float32, scale=True)
    size = x.shape[-1]
    if shift == "gaussian_noise":
        # v2.functional.gaussian_noise's float path (x + σ·N(0, 1), clipped), with the noise drawn
        # from each image's own generator (it has no generator argument).
        noise = torch.stack([torch.randn(x.shape[1:], generator=g) for g in generators])
        image = (image + level * noise).clamp_(0.0, 1.0)
    elif shift == "gaussian_blur":
        sigma = level * size / _REFERENCE_SIZE
        kernel = min(2 * int(np.ceil(3 * sigma)) + 1, size if size % 2 else size - 1)
        image = F.gaussian_blur(image, kernel_size=[kernel, kernel], sigma=[sigma, sigma])
    elif shift == "brightness":
        image = F.adjust_brightness(image, level)
    elif shift == "contrast":
        image = F.adjust_contrast(image, level)
    elif shift == "rotation":
        clockwise = torch.tensor([bool(torch.randint(0, 2, (), generator=g)) for g in generators])
        for turn, chosen in ((-level, clockwise), (level, ~clockwise)):
            if chosen.any():
                image[chosen] = F.rotate(
                    image[chosen], turn, interpolation=InterpolationMode.BILINEAR, fill=[0.0]
                )
    elif shift == "pixelate":
        side = max(1, round(size * level))
        small = F.resize(image, [side, side], interpolation=InterpolationMode.BILINEAR, antialias=True)
        image = F.resize(small, [size, size], interpolation=InterpolationMode.NEAREST)
    else:
        raise ValueError(f"unknown shift {shift!r}")
    return F.to_dtype(image.clamp_(0.0, 1.0), torch.uint8, scale=True)


def _jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Each image saved as a JPEG of `quality` and read back, with Pillow, as ImageNet-C does.

    (Not `v2.functional.jpeg`: torchvision 0.29 deprecates the codecs it calls. Pillow decodes
    every snapshot anyway.)
    """
    out = []
    for image in x.permute(0, 2, 3, 1).numpy():
        buffer = io.BytesIO()
        Image.fromarray(image, mode="RGB").save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            out.append(np.asarray(decoded.convert("RGB")))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def _generator(seed: int, path: str) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}:{path}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


@contextmanager
def _one_cpu_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
