"""Rejections of a snapshot: worded for the snapshot at hand, remembered by its content.

A snapshot is rejected for what it holds, so the verdict is remembered under its cache key
(content digest + protocol) in `decoded/<key>.rejected.json`: the same content, under another
dataset, id or path, gets the same answer without being decoded again. What is remembered is the
reason and the problem alone; which snapshot it is, and where, always comes from the snapshot
being prepared. A verdict also records the pixel cap it was reached under: raising the cap
judges the snapshot again.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from .._text import shown
from ..errors import SnapshotRejected
from ..types import SnapshotInfo

__all__ = ["label", "recall", "rejected", "remember", "where"]

log = logging.getLogger(__name__)

# 2: the problem without the snapshot's name and path (1 held a whole message: it named
# whichever snapshot had the content first, so it is not replayed).
_FORMAT = 2


def label(snapshot: SnapshotInfo) -> str:
    """`task/dataset/snapshot`, the snapshot id escaped if it holds unprintable characters."""
    return f"{snapshot.task}/{snapshot.dataset}/{shown(snapshot.snapshot)}"


def where(snapshot: SnapshotInfo) -> str:
    """How every message about a snapshot starts: `snapshot t/d/s at /its/root`."""
    return f"snapshot {label(snapshot)} at {shown(snapshot.root)}"


def rejected(reason: str, snapshot: SnapshotInfo, problem: str) -> SnapshotRejected:
    """A rejection of `snapshot`; `problem` follows its `where()` (" has …" or ": …")."""
    return SnapshotRejected(reason, where(snapshot) + problem)


def recall(verdict: Path, snapshot: SnapshotInfo, max_image_pixels: int) -> SnapshotRejected | None:
    """The remembered rejection of this content, worded for `snapshot`; None if there is none."""
    try:
        known = json.loads(verdict.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        known = None
    if (
        not isinstance(known, dict)
        or known.get("format") != _FORMAT
        or not isinstance(known.get("reason"), str)
        or not isinstance(known.get("problem"), str)
    ):
        verdict.unlink(missing_ok=True)  # unreadable, or of an older format: judge again once
        return None
    if known.get("max_image_pixels") != max_image_pixels:
        return None  # reached under another pixel cap: the images it skipped may decode now
    return rejected(known["reason"], snapshot, known["problem"])


def remember(verdict: Path, exc: SnapshotRejected, snapshot: SnapshotInfo, max_image_pixels: int) -> None:
    """Record a rejection of `snapshot` for its content; only an optimisation, so never raises."""
    message, prefix = str(exc), where(snapshot)
    if not message.startswith(prefix):
        return  # not worded by `rejected()`: it could not be replayed for another snapshot
    document = {
        "format": _FORMAT,
        "reason": exc.reason,
        "problem": message[len(prefix) :],
        "max_image_pixels": max_image_pixels,
    }
    try:
        verdict.parent.mkdir(parents=True, exist_ok=True)
        partial = verdict.with_suffix(".tmp")
        partial.write_text(json.dumps(document), encoding="utf-8")
        os.replace(partial, verdict)
    except OSError as error:  # the next run decodes again
        log.warning("cannot record the rejection of snapshot %s in %s: %s", label(snapshot), verdict, error)
