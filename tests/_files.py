"""Synthetic snapshot files: solid images whose colour says which file they are."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["image_ident", "write_image", "write_tree"]


def write_image(path: Path, ident: int, *, kind: str = "png") -> None:
    """A solid image whose colour encodes `ident`, so a decoded array says which file it came from."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 10), (ident % 256, ident // 256, 7)).save(
        path, format="PNG" if kind == "png" else "BMP"
    )


def image_ident(image: np.ndarray) -> int:
    """The `ident` of an image that `write_image` wrote, decoded (CHW: its red and green channels)."""
    return int(image[0, 0, 0]) + 256 * int(image[1, 0, 0])


def write_tree(root: Path, files: dict[str, int | bytes]) -> Path:
    """Write `files` under `root`: an int is an image (see `write_image`), bytes are written as they are."""
    for rel, content in files.items():
        if isinstance(content, bytes):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(content)
        else:
            write_image(root / rel, content)
    return root
