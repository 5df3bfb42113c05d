"""The digest memo: `state_dir/cache/digests.json`, so unchanged files are never re-hashed.

Each entry maps a key (an absolute path, prefixed by what was digested) to the signature the
content had when it was hashed and the resulting digest. A signature that no longer matches is a
miss. The file is rewritten atomically (temp file + `os.replace`); a missing or corrupt memo is
simply an empty one, rebuilt on the next write. Two processes writing at once can lose each
other's newest entry, which costs one re-hash later and never a wrong digest.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from pathlib import Path

__all__ = ["DigestMemo"]

log = logging.getLogger(__name__)

_FORMAT = 1
# One lock per process is enough: the memo is small and writes are rare (one per new content).
_LOCK = threading.Lock()


def _path_of(key: str) -> str:
    """Keys are "<kind>:<absolute path>"; the path is what must still exist for the entry to matter."""
    return key.split(":", 1)[1] if ":" in key else key


class DigestMemo:
    """Read and update the digest memo kept under `state_dir/cache/digests.json`."""

    def __init__(self, state_dir: Path, *, name: str = "digests.json", local_keys: bool = True) -> None:
        # local_keys: keys name local paths, and entries of paths that are gone are dropped. A
        # memo of remote objects (keys are URLs) keeps one entry per key instead.
        self.path = Path(state_dir) / "cache" / name
        self._local_keys = local_keys

    def get(self, key: str, signature: str) -> str | None:
        """Return the memoised digest of `key` if it was taken with this exact signature."""
        with _LOCK:
            entry = self._read().get(key)
        if isinstance(entry, dict) and entry.get("signature") == signature:
            digest = entry.get("digest")
            if isinstance(digest, str):
                return digest
        return None

    def put(self, key: str, signature: str, digest: str) -> None:
        """Record a digest; failure to write only costs a re-hash later, so it is logged, not raised."""
        with _LOCK:
            # Entries of paths that are gone are dropped so the memo stays as small as the data.
            entries = self._read()
            if self._local_keys:
                entries = {k: v for k, v in entries.items() if os.path.exists(_path_of(k))}
            entries[key] = {"signature": signature, "digest": digest}
            try:
                self._write(entries)
            except OSError as exc:
                log.warning(
                    "cannot write the digest memo %s (%s); digests will be recomputed", self.path, exc
                )

    def _read(self) -> dict[str, object]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable digest memo %s (%s); it will be rebuilt", self.path, exc)
            return {}
        if (
            not isinstance(data, dict)
            or data.get("format") != _FORMAT
            or not isinstance(data.get("entries"), dict)
        ):
            log.warning("ignoring digest memo %s with an unknown layout; it will be rebuilt", self.path)
            return {}
        entries: dict[str, object] = data["entries"]
        return entries

    def _write(self, entries: dict[str, object]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".digests-", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({"format": _FORMAT, "entries": entries}, fh, sort_keys=True)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
