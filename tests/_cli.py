"""The command line as a real process: `python -m monitor ARGS` with this checkout on PYTHONPATH."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

__all__ = ["REPO", "cli"]

REPO = Path(__file__).resolve().parents[1]


def cli(
    *args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run the command in `cwd` (the repository by default) and capture what it prints."""
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args],
        cwd=cwd or REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
