"""Extract a snapshot archive (.tar, .tar.gz/.tgz, .zip) safely into a fresh folder.

Every member is checked before anything is written: no absolute paths or drive letters, no
`..`, no symlinks or hardlinks, no devices or fifos. The member count and the total uncompressed
size are capped while streaming, so a zip/tar bomb is stopped before it fills the disk. Tar
members additionally go through tarfile's `filter="data"` (defence in depth). Any violation, or
an unreadable archive, is a `SnapshotRejected(reason="bad_archive")` naming the archive and the
member.
"""

from __future__ import annotations

import errno
import re
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path

from .._text import shown, shown_text
from ..errors import SnapshotRejected, SourceError
from ._limits import SnapshotLimits

__all__ = ["extract_archive"]

_CHUNK = 1 << 20
_DRIVE = re.compile(r"^[A-Za-z]:")
# Not the archive's fault: the machine is out of room. Reported as a SourceError (retry later).
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_FIX = "rebuild the archive from a plain folder of images (e.g. `tar czf snap.tar.gz snap/`)"


def extract_archive(archive: Path, suffix: str, dest: Path, *, label: str, limits: SnapshotLimits) -> None:
    """Extract `archive` (kind given by its suffix) into the empty folder `dest`.

    `label` names the snapshot in messages ("task/dataset/snapshot"). On a violation, `dest` may
    hold a partial extraction: the caller discards it.
    """
    try:
        if suffix == ".zip":
            _extract_zip(archive, dest, label, limits)
        else:
            _extract_tar(archive, suffix, dest, label, limits)
    except SnapshotRejected:
        raise
    except OSError as exc:
        if exc.errno in _DISK_ERRNOS:
            raise SourceError(
                f"cannot extract snapshot {label} from {shown(archive)}: {exc.strerror}; free disk space "
                f"under {shown(dest.parent)} (or move state_dir) and retry"
            ) from None
        raise _bad(archive, label, f"cannot be read ({type(exc).__name__}: {exc})") from None
    except (tarfile.TarError, zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error) as exc:
        raise _bad(archive, label, f"is corrupt or truncated ({type(exc).__name__}: {exc})") from None
    except (RuntimeError, NotImplementedError, ValueError, UnicodeError) as exc:
        # zipfile: encrypted members (RuntimeError), unsupported compression (NotImplementedError).
        raise _bad(archive, label, f"cannot be extracted ({type(exc).__name__}: {exc})") from None


def _bad(archive: Path, label: str, problem: str) -> SnapshotRejected:
    # Library messages can span lines and quote member names raw; ours are one escaped line.
    return SnapshotRejected(
        "bad_archive", f"snapshot {label}: archive {shown(archive)} {shown_text(problem)}; {_FIX}"
    )


def _bad_member(archive: Path, label: str, member: str, problem: str) -> SnapshotRejected:
    return SnapshotRejected(
        "bad_archive",
        f"snapshot {label}: archive {shown(archive)} member {member!r} {shown_text(problem)}; {_FIX}",
    )


def _name_problem(name: str) -> str | None:
    """Why a member name is unsafe to extract, or None. Backslashes count as separators."""
    if not name or "\x00" in name:
        return "has an empty or NUL-containing name"
    normalized = name.replace("\\", "/")
    if normalized.startswith("/") or _DRIVE.match(normalized):
        return "has an absolute path"
    if ".." in normalized.split("/"):
        return "has a '..' path component (it would land outside the snapshot)"
    return None


def _over_limits(
    archive: Path, label: str, member: str, count: int, total: int, limits: SnapshotLimits
) -> None:
    if count > limits.max_members:
        raise _bad_member(
            archive,
            label,
            member,
            f"exceeds the limit of {limits.max_members} members (limits.max_archive_members; possible "
            f"archive bomb)",
        )
    if total > limits.max_bytes:
        raise _bad_member(
            archive,
            label,
            member,
            f"takes the uncompressed size over the limit of {limits.max_bytes} bytes "
            f"(limits.max_archive_bytes; possible archive bomb)",
        )


def _extract_tar(archive: Path, suffix: str, dest: Path, label: str, limits: SnapshotLimits) -> None:
    # Headers are read one at a time while iterating, and each member is extracted right after
    # its header: a gzip stream is never rewound and the caps apply before any byte is written.
    # The suffix decides the compression: a misnamed file fails with one clear reason instead of
    # tarfile's list of every method it tried.
    with tarfile.open(archive, "r:" if suffix == ".tar" else "r:gz") as tar:
        tar.errorlevel = 2  # filter and extraction problems raise instead of being skipped silently
        total = 0
        for count, member in enumerate(tar, start=1):
            if member.isfile():
                total += member.size
            _over_limits(archive, label, member.name, count, total, limits)
            problem = _name_problem(member.name)
            if problem is None:
                if member.issym() or member.islnk():
                    problem = "is a link (links are not allowed in snapshots)"
                elif member.ischr() or member.isblk() or member.isfifo():
                    problem = "is a device or fifo"
                elif not (member.isfile() or member.isdir()):
                    problem = "is not a regular file or folder"
            if problem is not None:
                raise _bad_member(archive, label, member.name, problem)
            try:
                tar.extract(member, dest, filter="data")
            except tarfile.FilterError as exc:
                raise _bad_member(
                    archive, label, member.name, f"is refused by the data filter ({exc})"
                ) from None


def _extract_zip(archive: Path, dest: Path, label: str, limits: SnapshotLimits) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()  # the central directory: read up front, so the count is known
        if len(infos) > limits.max_members:
            _over_limits(archive, label, infos[limits.max_members].filename, len(infos), 0, limits)
        total = 0
        root = dest.resolve()
        for info in infos:
            name = info.filename
            problem = _name_problem(name)
            mode = info.external_attr >> 16  # unix mode, when the archiver recorded one
            if problem is None and stat.S_IFMT(mode):
                if stat.S_ISLNK(mode):
                    problem = "is a link (links are not allowed in snapshots)"
                elif not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                    problem = "is a device, fifo or socket"
            if problem is not None:
                raise _bad_member(archive, label, name, problem)
            target = dest.joinpath(*[part for part in name.replace("\\", "/").split("/") if part])
            if not target.resolve().is_relative_to(root):
                raise _bad_member(archive, label, name, "would land outside the snapshot")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            # The header's file_size can lie: count the bytes actually inflated instead.
            with zf.open(info) as src, open(target, "wb") as out:
                while chunk := src.read(_CHUNK):
                    total += len(chunk)
                    _over_limits(archive, label, name, 0, total, limits)
                    out.write(chunk)
