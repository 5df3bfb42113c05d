"""Caps that keep a hostile or broken snapshot from filling the disk or the inode table."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_LIMITS", "SnapshotLimits"]

GiB = 1024**3


@dataclass(frozen=True)
class SnapshotLimits:
    """Upper bounds enforced while an archive is extracted or downloaded (not after)."""

    # Far above any compact-protocol snapshot (64 images per class), far below a full disk.
    max_bytes: int = 4 * GiB  # total uncompressed size of one archive's members
    max_members: int = 200_000  # files + folders in one archive: bounds inodes and listing time
    max_download_bytes: int = 4 * GiB  # size of one remote archive as downloaded


DEFAULT_LIMITS = SnapshotLimits()
