"""Content digests (sha256) of files and of directory snapshots, memoised by file signatures.

A directory's digest covers exactly what the data layer reads: the image files (by extension,
case-insensitive) outside hidden entries, each by its relative posix path and the sha256 of its
bytes. Renaming a class folder therefore changes the digest; touching `_SUCCESS` does not.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ._memo import DigestMemo

__all__ = [
    "IMAGE_EXTENSIONS",
    "directory_digest",
    "file_digest",
    "image_files",
    "is_hidden",
    "sha256_file",
]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp"})
_CHUNK = 1 << 20  # 1 MiB reads: large enough to be fast, small enough to never matter for memory


def _raise(exc: OSError) -> None:
    raise exc


def is_hidden(name: str) -> bool:
    """True for names the Hadoop convention treats as not-data: `.anything` and `_anything`."""
    return name.startswith((".", "_"))


def sha256_file(path: Path) -> str:
    """Hash a file's bytes (streamed; OSError propagates to the caller, which names the file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_digest(path: Path, memo: DigestMemo) -> str:
    """Return sha256 of a file, re-hashing only when its size or mtime changed since last time."""
    path = Path(path).resolve()
    st = path.stat()
    key, signature = f"file:{path}", f"{st.st_size}:{st.st_mtime_ns}"
    cached = memo.get(key, signature)
    if cached is not None:
        return cached
    digest = sha256_file(path)
    memo.put(key, signature, digest)
    return digest


def image_files(root: Path) -> list[tuple[str, Path]]:
    """List `(relative posix path, path)` of the image files under root, sorted by relative path.

    Hidden entries (`.x`, `_x`) are skipped at every depth; directory links are not followed
    (an extracted archive has none, and a local snapshot must not reach outside itself).
    """
    found: list[tuple[str, Path]] = []
    # onerror: an unreadable subfolder must fail the digest, not silently drop its images.
    for dirpath, dirnames, filenames in os.walk(root, onerror=_raise):
        dirnames[:] = [d for d in dirnames if not is_hidden(d)]
        base = Path(dirpath)
        for name in filenames:
            if is_hidden(name) or os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
                continue
            path = base / name
            found.append((path.relative_to(root).as_posix(), path))
    found.sort(key=lambda item: item[0])
    return found


def directory_digest(root: Path, memo: DigestMemo) -> str:
    """Return the content digest of a directory snapshot (see the module docstring).

    The memo is keyed by the absolute path and a signature of (relpath, size, mtime_ns) of every
    image file, so a snapshot that did not change costs one `stat` per file, never a read.
    """
    root = Path(root).resolve()
    files = image_files(root)
    listing = hashlib.sha256()
    for rel, path in files:
        st = path.stat()
        listing.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    key, signature = f"dir:{root}", listing.hexdigest()
    cached = memo.get(key, signature)
    if cached is not None:
        return cached
    content = hashlib.sha256()
    for rel, path in files:
        content.update(f"{rel}\0{sha256_file(path)}\n".encode())
    digest = content.hexdigest()
    memo.put(key, signature, digest)
    return digest
