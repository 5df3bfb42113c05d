"""Decoded data: each snapshot decoded once, per protocol, into a cached uint8 tensor file.

    prepare_snapshot(snapshot, task, image_size, cache_dir=...) -> PreparedData   decode or reuse
    load_arrays(prepared)                                        -> DecodedArrays  numpy, no pickle
    cache_key(snapshot_digest, task, image_size)                 -> str            the cache folder name

The compact protocol (DESIGN.md §3.3): split/ or hashed layout, deterministic per-class caps,
torchvision's Resize + CenterCrop geometry; images over `max_image_pixels` are skipped. Each
cache entry carries the sha256 of its files, checked whenever it is opened: a damaged entry is
rebuilt, never trained on. Bad snapshots raise SnapshotRejected with a reason code (remembered
by content, worded for the snapshot at hand); an unreadable cache raises DataError.
"""

from ._cache import load_arrays
from ._cache_key import DECODE_VERSION, cache_key
from ._prepare import prepare_snapshot
from ._prepared import DecodedArrays, PreparedData

__all__ = [
    "DECODE_VERSION",
    "DecodedArrays",
    "PreparedData",
    "cache_key",
    "load_arrays",
    "prepare_snapshot",
]
