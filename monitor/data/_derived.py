"""Derived datasets: another dataset's decoded snapshot under a deterministic corruption.

    derived_digest(source_digest, derive)          -> str           the derived snapshot's digest
    derived_data(source, derive, digest, task)     -> PreparedData  what a derived work group carries
    open_derived(prepared) / write_derived(...)                     the worker's side of its cache
    SHIFTS                                                          each shift's five severities

A derived dataset uses its source's snapshot in use (the same snapshot id) under a digest of its
own, a hash of (source digest, shift, severity, apply_to, seed, SHIFT_PROTOCOL). Its trial keys
and its cache key are those of any snapshot with that digest: it is computed again exactly when
its source gets a new snapshot or its `derive:` changes, and never otherwise.

The corruption needs torch (torchvision's v2 functional transforms), which the daemon never
imports: it runs in the worker (`monitor.engine.training._shifts`), which finds the corrupted
arrays in `<cache_dir>/decoded/<key>/` (the same format as a decoded snapshot, checksums
included) or makes them there from the source's entry. A damaged entry is deleted and made again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass, replace
from typing import Any

from ..errors import DataError
from ..settings import DeriveSpec, TaskSpec
from ._cache import read_cached, write_cache
from ._cache_key import cache_key
from ._prepared import DecodedArrays, Derivation, PreparedData

__all__ = [
    "SHIFTS",
    "SHIFT_PROTOCOL",
    "ShiftLevels",
    "derived_data",
    "derived_digest",
    "open_derived",
    "shift_text",
    "write_derived",
]

log = logging.getLogger(__name__)

# Bump when a corruption changes (its parameters, its implementation): every derived dataset gets
# a new digest, so new trial keys and a new cache entry.
SHIFT_PROTOCOL = 1


@dataclass(frozen=True)
class ShiftLevels:
    """A shift's parameter at severities 1-5, and how to say one (`parameter.format(value)`)."""

    parameter: str
    levels: tuple[float, float, float, float, float]

    def text(self, severity: int) -> str:
        return self.parameter.format(f"{self.levels[severity - 1]:g}")


# After ImageNet-C (Hendrycks & Dietterich, ICLR 2019), whose values are kept where it has the
# corruption. Images are corrupted as uint8 at the size the model sees them (`image_size`, after
# the resize and center crop), on [0, 1] floats in between.
SHIFTS: dict[str, ShiftLevels] = {
    # x + σ·N(0, 1) per pixel and channel, clipped to [0, 1] (ImageNet-C's values)
    "gaussian_noise": ShiftLevels("noise σ {} of the pixel range", (0.08, 0.12, 0.18, 0.26, 0.38)),
    # ImageNet-C's σ, in pixels of a 224-pixel image, scaled to the image's size (σ·size/224) so
    # that a model that sees 32 pixels gets the same blur of the picture as one that sees 224
    "gaussian_blur": ShiftLevels("σ {} px at 224 px", (1.0, 2.0, 3.0, 4.0, 6.0)),
    # saved as a JPEG of this quality and read back, with Pillow (ImageNet-C's qualities and codec)
    "jpeg": ShiftLevels("quality {}", (25.0, 18.0, 15.0, 10.0, 7.0)),
    # ImageNet-C adds 0.1-0.5 to the HSV value; a factor of 1 + 2c does that to a mid-tone pixel
    "brightness": ShiftLevels("factor {}", (1.2, 1.4, 1.6, 1.8, 2.0)),
    # blend with the image's mean gray, as ImageNet-C does (its values)
    "contrast": ShiftLevels("factor {}", (0.4, 0.3, 0.2, 0.1, 0.05)),
    # not in ImageNet-C: a turn by this many degrees, clockwise or not (drawn per image), corners black
    "rotation": ShiftLevels("±{}°", (5.0, 10.0, 15.0, 20.0, 30.0)),
    # down to this fraction of the side (antialiased), back up with nearest neighbours. ImageNet-C's
    # fractions (0.6, 0.5, 0.4, 0.3, 0.25) one step on: 0.6 leaves blocks of uneven sizes, which
    # changes an image more than the exact halving of 0.5 does, so its severities 1 and 2 are not
    # in order; these are.
    "pixelate": ShiftLevels("side x{}", (0.5, 0.4, 0.3, 0.25, 0.2)),
}


def derived_digest(source_digest: str, derive: DeriveSpec) -> str:
    """The content digest of a derived dataset's snapshot: its source's content and its corruption."""
    canonical = json.dumps(
        {
            "shift_protocol": SHIFT_PROTOCOL,
            "source": source_digest,
            "shift": derive.shift,
            "severity": derive.severity,
            "apply_to": derive.apply_to,
            "seed": derive.seed,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def shift_text(derive: DeriveSpec) -> str:
    """The corruption in words: `gaussian_blur 3 (σ 3 px at 224 px) on the test split`."""
    splits = "the test split" if derive.apply_to == "test" else "both splits"
    seed = f", seed {derive.seed}" if derive.seed else ""
    return (
        f"{derive.shift} {derive.severity} ({SHIFTS[derive.shift].text(derive.severity)}) on {splits}{seed}"
    )


def derived_data(source: PreparedData, derive: DeriveSpec, digest: str, task: TaskSpec) -> PreparedData:
    """The entry of a derived dataset, beside its source's in the decoded cache (made by the worker).

    `digest` is `derived_digest(...)` of the source's snapshot; the counts and classes are the
    source's (a corruption keeps every image). Its checksums are unknown until the worker opens
    or writes the entry.
    """
    key = cache_key(digest, task, source.image_size)
    return replace(
        source,
        key=key,
        path=source.path.parent / key,
        checksums=(),
        derivation=Derivation(
            source=source,
            shift=derive.shift,
            severity=derive.severity,
            apply_to=derive.apply_to,
            seed=derive.seed,
        ),
    )


def open_derived(prepared: PreparedData) -> PreparedData | None:
    """The derived entry as cached, its checksums verified; None when there is none (a damaged one
    is deleted: the worker makes it again)."""
    folder = prepared.path
    if not folder.exists():
        return None
    try:
        entry = read_cached(folder, prepared.key)
        if (entry.classes, entry.n_train, entry.n_test, entry.image_size) != (
            prepared.classes,
            prepared.n_train,
            prepared.n_test,
            prepared.image_size,
        ):
            raise ValueError("it does not hold the images of its source")
    except (OSError, ValueError, KeyError, TypeError, EOFError) as exc:
        log.warning(
            "derived data %s is unusable (%s); deleting it and corrupting its source again", folder, exc
        )
        shutil.rmtree(folder, ignore_errors=True)
        return None
    return entry


def write_derived(prepared: PreparedData, arrays: DecodedArrays) -> PreparedData:
    """Publish a derived entry's arrays (atomically, with checksums) and return it, opened."""
    derivation = prepared.derivation
    assert derivation is not None, "write_derived takes a derived dataset's entry"
    source = derivation.source
    try:
        meta: dict[str, Any] = json.loads((source.path / "meta.json").read_text(encoding="utf-8"))
        meta.pop("checksum", None)  # (write_cache records the new files' own)
        meta.update(
            key=prepared.key,
            derived={
                "shift_protocol": SHIFT_PROTOCOL,
                "source_key": source.key,
                "shift": derivation.shift,
                "severity": derivation.severity,
                "apply_to": derivation.apply_to,
                "seed": derivation.seed,
            },
        )
        folder = write_cache(prepared.path.parent, prepared.key, arrays, meta)
        return read_cached(folder, prepared.key)
    except (OSError, ValueError) as exc:
        raise DataError(
            f"cannot write the derived data {prepared.path} (from {source.path}): "
            f"{getattr(exc, 'strerror', None) or exc}; check free space and permissions of state_dir"
        ) from None
