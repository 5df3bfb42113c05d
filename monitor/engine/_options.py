"""Execution choices shared by the parent and its workers (torch-free, so both sides import it)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

__all__ = ["EngineOptions", "cpu_count", "thread_shares"]


@dataclasses.dataclass(frozen=True)
class EngineOptions:
    """Execution choices that change results at most by rounding (so they are not in any trial key)."""

    batch_finetunes: str = "auto"  # auto | always | never
    compile: bool = False
    precision: str = "auto"  # auto | fp32 | bf16
    cpu_workers: int = 1  # worker processes on the CPU device (they share its cores)

    @classmethod
    def from_settings(cls, executor: Any) -> EngineOptions:
        workers = executor.cpu_workers
        if workers == "auto":
            workers = min(2, cpu_count())
        return cls(
            batch_finetunes=executor.batch_finetunes,
            compile=executor.compile,
            precision=executor.precision,
            cpu_workers=workers,
        )


def cpu_count() -> int:
    """The cores this process may run on (its affinity mask, which containers narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def thread_shares(cores: int, busy: int) -> list[int]:
    """Split `cores` among `busy` workers as evenly as possible (at least one thread each)."""
    busy = max(busy, 1)
    return [max(1, cores // busy + (1 if i < cores % busy else 0)) for i in range(busy)]
