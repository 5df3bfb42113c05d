"""The local weights cache, `state_dir/weights/<sha256>/<file name>`, shared by every remote kind.

A fetched file is published under the sha256 of its bytes (so the same weights found in two
places are one file), marked used at each use, and a folder nobody used for
`UNUSED_RETENTION_SECONDS` is removed by a later fetch.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

__all__ = ["UNUSED_RETENTION_SECONDS", "cached", "prune", "publish"]

# A superseded version's weights are kept a while (a run that started on them may still load them).
UNUSED_RETENTION_SECONDS = 3 * 86400.0


def cached(weights_dir: Path, digest: str, name: str) -> Path | None:
    path = weights_dir / digest / name
    if not path.is_file():
        return None
    with contextlib.suppress(OSError):
        os.utime(path.parent)  # in use: keeps it from being pruned
    return path


def publish(tmp: Path, weights_dir: Path, digest: str, name: str) -> Path:
    folder = weights_dir / digest
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / name
    os.replace(tmp, final)
    return final


def prune(weights_dir: Path, *, keep: str) -> None:
    cutoff = time.time() - UNUSED_RETENTION_SECONDS
    with contextlib.suppress(OSError):
        for entry in os.scandir(weights_dir):
            if entry.name == keep or entry.name.startswith("."):
                continue
            with contextlib.suppress(OSError):
                if entry.is_dir(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                    shutil.rmtree(entry.path, ignore_errors=True)
