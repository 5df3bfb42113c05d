"""Caps that keep a hostile or broken snapshot from filling the disk or the inode table."""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import LimitsSettings

__all__ = ["DEFAULT_LIMITS", "SnapshotLimits"]

GiB = 1024**3
_SETTINGS = LimitsSettings()  # the defaults, and the reasons for them, live with the setting


@dataclass(frozen=True)
class SnapshotLimits:
    """Upper bounds enforced while an archive is extracted or downloaded (not after).

    Built from the `limits:` settings with `from_settings`; the defaults are those settings'.
    """

    max_bytes: int = _SETTINGS.max_archive_bytes  # total uncompressed size of one archive's members
    max_members: int = _SETTINGS.max_archive_members  # files + folders in one archive
    max_download_bytes: int = _SETTINGS.max_download_bytes  # size of one remote archive as downloaded
    # An extracted archive that no materialize has used for this long is removed (a superseded
    # snapshot, or a rejected one that is no longer the newest). Several times the default
    # evaluation interval (6 h), so the snapshot in use is never removed between two runs; far
    # longer than any decode, so a concurrent run never loses the folder it is reading.
    unused_retention_seconds: float = 24 * 3600

    @classmethod
    def from_settings(cls, limits: LimitsSettings) -> SnapshotLimits:
        """The caps the `limits:` section of the configuration sets."""
        return cls(
            max_bytes=int(limits.max_archive_bytes),
            max_members=int(limits.max_archive_members),
            max_download_bytes=int(limits.max_download_bytes),
        )


DEFAULT_LIMITS = SnapshotLimits()
