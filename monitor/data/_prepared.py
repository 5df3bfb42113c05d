"""What preparing a snapshot yields: a handle on the decoded cache, and the arrays inside it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = ["ARRAY_FILES", "DecodedArrays", "Derivation", "Layout", "PreparedData"]

Layout = Literal["split", "hashed"]
ARRAY_FILES = ("train_x", "train_y", "test_x", "test_y")


@dataclass(frozen=True)
class PreparedData:
    """A snapshot decoded once for one (task protocol, image size): where it is and what it holds."""

    key: str  # cache key (see cache_key)
    path: Path  # the cache folder: train_x.npy, train_y.npy, test_x.npy, test_y.npy, meta.json
    classes: tuple[str, ...]  # sorted train class names; labels index into this
    n_train: int
    n_test: int
    image_size: int
    skipped: tuple[tuple[str, str], ...]  # (relative path, reason) of files that could not be decoded
    layout: Layout
    # (file name, sha256) of each .npy file as written, checked by `load_arrays` (empty: unchecked)
    checksums: tuple[tuple[str, str], ...] = ()
    # A derived dataset's entry: how the worker makes it from its source's (`path` may not exist
    # yet; the worker writes it there, or finds it there from an earlier run). None: decoded.
    derivation: Derivation | None = None

    @property
    def decoded(self) -> PreparedData:
        """The entry whose files exist before any worker runs: this one, or a derived one's source."""
        return self.derivation.source if self.derivation is not None else self


@dataclass(frozen=True)
class Derivation:
    """A derived dataset's arrays: the source's decoded arrays with a corruption (`monitor.data.SHIFTS`)."""

    source: PreparedData
    shift: str
    severity: int  # 1-5
    apply_to: Literal["test", "both"]  # the splits that are corrupted
    seed: int


@dataclass(frozen=True)
class DecodedArrays:
    """The decoded images as uint8 CHW arrays, with int64 labels into `PreparedData.classes`."""

    train_x: npt.NDArray[np.uint8]  # [N, 3, S, S]
    train_y: npt.NDArray[np.int64]  # [N]
    test_x: npt.NDArray[np.uint8]
    test_y: npt.NDArray[np.int64]
