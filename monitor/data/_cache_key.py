"""The decode-cache key: a hash of everything that determines a snapshot's decoded arrays.

Not to be confused with a trial key (`monitor.engine._keys`), which names one fine-tune.
"""

from __future__ import annotations

import hashlib
import json

from ..settings import TaskSpec

__all__ = ["DECODE_VERSION", "cache_key"]

# Bump when decoding, splitting or subsampling changes: every cached decode becomes a miss.
DECODE_VERSION = 1


def cache_key(snapshot_digest: str, task: TaskSpec, image_size: int) -> str:
    """Return the sha256 hex of a canonical JSON of the protocol inputs (not the task's name).

    Two tasks with the same caps and split over the same snapshot share one decode.
    """
    canonical = json.dumps(
        {
            "protocol": DECODE_VERSION,
            "digest": snapshot_digest,
            "image_size": image_size,
            "train_per_class": task.train_per_class,
            "test_per_class": task.test_per_class,
            "test_fraction": task.test_fraction,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()
