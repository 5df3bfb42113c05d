"""Decode one image the way torchvision's evaluation transform sees it, as uint8 CHW.

    PIL open -> convert("RGB") -> Resize(size) (shorter side = size, bilinear, antialiased)
             -> CenterCrop(size) -> uint8 [3, size, size]

An image with more pixels than `max_pixels` (the `limits.max_image_pixels` setting) is refused
from its header, before a pixel is decoded: a 169-megapixel PNG costs half a gigabyte in RGB.

The geometry follows torchvision exactly (the long side is truncated with int(), the crop
offset is int(round(...))), so features match what the deployed model sees in production.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from .._text import shown_text
from ..settings import LimitsSettings

__all__ = ["DEFAULT_MAX_IMAGE_PIXELS", "DecodeFailure", "decode_image", "resized_size", "try_decode"]

DEFAULT_MAX_IMAGE_PIXELS = LimitsSettings().max_image_pixels  # the reason is beside the setting

_MAX_REASON = 200  # reasons go into meta.json and logs: keep one line, bounded


class DecodeFailure(str):
    """Why a file could not be decoded (a plain string, typed apart from the success value)."""


class ImageTooLarge(ValueError):
    """The image's header declares more pixels than the configured cap."""


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) after torchvision's Resize(size): the shorter side becomes `size`."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def decode_image(path: Path, size: int, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> npt.NDArray[np.uint8]:
    """Decode, resize and center-crop one image; PIL errors propagate (see `try_decode`)."""
    with Image.open(path) as image:  # reads the header only: the size is known, nothing decoded
        width, height = image.size
        if width * height > max_pixels:
            raise ImageTooLarge(
                f"{width}x{height} pixels ({width * height / 1e6:.0f} megapixels) is over "
                f"limits.max_image_pixels ({max_pixels:,}); raise that setting if such images are real data"
            )
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


def try_decode(
    path: Path, size: int, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
) -> npt.NDArray[np.uint8] | DecodeFailure:
    """Decode one image, or say why not: a bad file is skipped, it never stops the snapshot.

    A file that is gone (not even a dangling link is left) raises FileNotFoundError instead: the
    snapshot is being removed or replaced under us, and what is left of it must not be decoded
    as if it were the snapshot.
    """
    try:
        return decode_image(path, size, max_pixels)
    except FileNotFoundError:
        if not os.path.lexists(path):
            raise
        return DecodeFailure("FileNotFoundError: a link to nothing")
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError, ...
        # PIL quotes file names with repr, but not every message does: escape, one line.
        return DecodeFailure(shown_text(f"{type(exc).__name__}: {exc}")[:_MAX_REASON])
