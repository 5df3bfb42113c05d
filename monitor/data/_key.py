"""The decoded-data cache key: a hash of everything that determines the decoded arrays."""

from __future__ import annotations

import hashlib
import json

from ..settings import TaskSpec

__all__ = ["PROTOCOL_VERSION", "cache_key"]

# Bump when decoding, splitting or subsampling changes: every cached decode becomes a miss.
PROTOCOL_VERSION = 1


def cache_key(snapshot_digest: str, task: TaskSpec, image_size: int) -> str:
    """Return the sha256 hex of a canonical JSON of the protocol inputs (not the task's name).

    Two tasks with the same caps and split over the same snapshot share one decode.
    """
    canonical = json.dumps(
        {
            "protocol": PROTOCOL_VERSION,
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
