"""The executor the settings ask for."""

from __future__ import annotations

from ..settings import Settings
from ._executor import Executor, LocalExecutor
from ._options import EngineOptions

__all__ = ["build_executor"]


def build_executor(settings: Settings) -> Executor:
    """`executor.kind: local` -> worker processes on this machine; `ray` -> actors on a Ray cluster."""
    spec = settings.executor
    options = EngineOptions.from_settings(spec)
    if spec.kind == "ray":
        from ._ray import RayExecutor

        return RayExecutor(
            address=spec.address,
            gpus_per_worker=spec.gpus_per_worker,
            cpus_per_worker=spec.cpus_per_worker,
            max_workers=spec.max_workers,
            runtime_env=spec.runtime_env,
            cell_timeout=spec.cell_timeout,
            options=options,
            cpu_only=settings.device == "cpu",
        )
    return LocalExecutor(settings.device, cell_timeout=spec.cell_timeout, options=options)
