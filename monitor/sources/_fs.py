"""Small filesystem helpers for atomic publication of content-addressed folders."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

__all__ = ["publish_dir", "staging_dir", "sweep_stale"]

# A temp folder this old was left by a crash (extraction takes seconds to minutes, not hours).
STALE_SECONDS = 6 * 3600


def staging_dir(parent: Path, name: str) -> Path:
    """Create a private temp folder beside the final one, so `os.replace` is a same-disk rename."""
    parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(parent)
    return Path(tempfile.mkdtemp(prefix=f".tmp-{name[:24]}-", dir=parent))


def publish_dir(staging: Path, final: Path) -> Path:
    """Move a complete staging folder into place; if another process won the race, use its copy."""
    try:
        os.replace(staging, final)
    except OSError:
        if not final.is_dir():
            shutil.rmtree(staging, ignore_errors=True)
            raise
        shutil.rmtree(staging, ignore_errors=True)
    return final


def sweep_stale(parent: Path) -> None:
    """Remove temp entries (`.tmp-*`) a crashed run left behind; never touches published content."""
    cutoff = time.time() - STALE_SECONDS
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return
    for entry in entries:
        if not entry.name.startswith(".tmp-"):
            continue
        try:
            if entry.stat(follow_symlinks=False).st_mtime >= cutoff:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)
        except OSError:
            continue
