"""Decoded data: each snapshot decoded once, per protocol, into a cached uint8 tensor file.

    prepare_snapshot(snapshot, task, image_size, cache_dir=...) -> PreparedData   decode or reuse
    load_arrays(prepared)                                        -> DecodedArrays  numpy, no pickle
    image_paths(prepared)                                        -> (train, test)  each image's path
    cache_key(snapshot_digest, task, image_size)                 -> str            the cache folder name
    derived_digest(source_digest, derive)                        -> str            a derived dataset's digest
    derived_data(source, derive, digest, task)                   -> PreparedData   its entry (made by the worker)

The compact protocol (DESIGN.md §3.3): split/ or hashed layout, deterministic per-class caps,
torchvision's Resize + CenterCrop geometry; images over `max_image_pixels` are skipped. Each
cache entry carries the sha256 of its files, checked whenever it is opened: a damaged entry is
rebuilt, never trained on. Bad snapshots raise SnapshotRejected with a reason code (remembered
by content, worded for the snapshot at hand); an unreadable cache raises DataError. A derived
dataset (`derive:`) is its source's entry with a corruption of `SHIFTS`, which the worker
applies and caches like a decoded snapshot (`_derived`).
"""

from ._cache import image_paths, load_arrays
from ._cache_key import DECODE_VERSION, cache_key
from ._derived import (
    SHIFT_PROTOCOL,
    SHIFTS,
    ShiftLevels,
    derived_data,
    derived_digest,
    open_derived,
    shift_text,
    write_derived,
)
from ._prepare import prepare_snapshot
from ._prepared import DecodedArrays, Derivation, PreparedData

__all__ = [
    "DECODE_VERSION",
    "SHIFTS",
    "SHIFT_PROTOCOL",
    "DecodedArrays",
    "Derivation",
    "PreparedData",
    "ShiftLevels",
    "cache_key",
    "derived_data",
    "derived_digest",
    "image_paths",
    "load_arrays",
    "open_derived",
    "prepare_snapshot",
    "shift_text",
    "write_derived",
]
