"""The compact protocol's deterministic per-class subsample, decoded on a small thread pool.

Each class's files are ordered by sha256("0:<relative path>") (a fixed protocol seed) and taken
in that order, skipping files that cannot be decoded, until the cap is reached. The selection
depends only on the content: adding a file changes it only where that file sorts in. Files are
decoded in rounds (the next `cap - kept` files of every class at once), so the pool stays busy
and the result never depends on which thread finished first.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ._decode import DecodeFailure, try_decode

__all__ = ["Selection", "protocol_order", "select_and_decode"]

_PROTOCOL_SEED = 0  # fixed: the subsample is part of the protocol, not of a trial's seed


def protocol_order(relpaths: list[str]) -> list[str]:
    """Order files by the protocol hash; ties are impossible (distinct paths, sha256)."""
    return sorted(relpaths, key=lambda rel: hashlib.sha256(f"{_PROTOCOL_SEED}:{rel}".encode()).hexdigest())


@dataclass
class Selection:
    """One class in one split: files in protocol order, a cap, and what has been kept so far."""

    files: list[str]
    cap: int | None
    tried: int = 0
    kept: list[tuple[str, npt.NDArray[np.uint8]]] = field(default_factory=list)

    def next_batch(self) -> list[str]:
        """The next files to try: just enough to fill the cap if they all decode."""
        want = len(self.files) - self.tried if self.cap is None else self.cap - len(self.kept)
        batch = self.files[self.tried : self.tried + max(want, 0)]
        self.tried += len(batch)
        return batch


def select_and_decode(
    root: Path, selections: list[Selection], image_size: int, workers: int, max_pixels: int
) -> list[tuple[str, str]]:
    """Fill every selection up to its cap; return the (relative path, reason) of skipped files.

    FileNotFoundError (see `try_decode`) propagates: the snapshot vanished while it was decoded.
    """
    skipped: list[tuple[str, str]] = []
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="decode") as pool:
        while True:
            batch = [(selection, rel) for selection in selections for rel in selection.next_batch()]
            if not batch:
                return sorted(skipped)
            # PIL releases the GIL while decoding and resizing, so threads scale on a few cores.
            results = pool.map(lambda item: try_decode(root / item[1], image_size, max_pixels), batch)
            for (selection, rel), result in zip(batch, results, strict=True):
                if isinstance(result, DecodeFailure):
                    skipped.append((rel, str(result)))
                else:
                    selection.kept.append((rel, result))
