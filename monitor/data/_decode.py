"""Decode one image the way torchvision's evaluation transform sees it, as uint8 CHW.

    PIL open -> convert("RGB") -> Resize(size) (shorter side = size, bilinear, antialiased)
             -> CenterCrop(size) -> uint8 [3, size, size]

The geometry follows torchvision exactly (the long side is truncated with int(), the crop
offset is int(round(...))), so features match what the deployed model sees in production.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

__all__ = ["DecodeFailure", "decode_image", "resized_size", "try_decode"]

_MAX_REASON = 200  # reasons go into meta.json and logs: keep one line, bounded


class DecodeFailure(str):
    """Why a file could not be decoded (a plain string, typed apart from the success value)."""


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) after torchvision's Resize(size): the shorter side becomes `size`."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def decode_image(path: Path, size: int) -> npt.NDArray[np.uint8]:
    """Decode, resize and center-crop one image; PIL errors propagate (see `try_decode`)."""
    with Image.open(path) as image:
        rgb = image.convert("RGB")  # grayscale, palette, CMYK, RGBA (alpha dropped) -> 3 channels
    width, height = rgb.size
    new_size = resized_size(width, height, size)
    if new_size != (width, height):
        rgb = rgb.resize(new_size, Image.Resampling.BILINEAR)  # PIL's resize is antialiased
    new_width, new_height = new_size
    # torchvision's int(round(...)): Python rounds halves to even, so a 1-pixel excess crops at 0.
    top = round((new_height - size) / 2.0)
    left = round((new_width - size) / 2.0)
    pixels = np.asarray(rgb, dtype=np.uint8)[top : top + size, left : left + size]
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def try_decode(path: Path, size: int) -> npt.NDArray[np.uint8] | DecodeFailure:
    """Decode one image, or say why not: a bad file is skipped, it never stops the snapshot."""
    try:
        return decode_image(path, size)
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError, ...
        return DecodeFailure(f"{type(exc).__name__}: {exc}"[:_MAX_REASON])
