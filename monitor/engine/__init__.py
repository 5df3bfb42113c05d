"""Plan the grid and execute it. Torch-free: the training code lives in `monitor.engine.training`,
which only worker processes import."""

from ._build import build_executor
from ._executor import Executor, InlineExecutor, LocalExecutor, ResultCallback
from ._keys import TRAINING_PROTOCOL_VERSION, config_digest, estimate_key, trial_key
from ._options import EngineOptions
from ._plan import (
    CellRef,
    EstimateSpec,
    Job,
    PlannedCell,
    PlannedEstimate,
    TrialSpec,
    WorkGroup,
    is_probe,
    plan_estimates,
    plan_grid,
    work_groups,
)

__all__ = [
    "TRAINING_PROTOCOL_VERSION",
    "CellRef",
    "EngineOptions",
    "EstimateSpec",
    "Executor",
    "InlineExecutor",
    "Job",
    "LocalExecutor",
    "PlannedCell",
    "PlannedEstimate",
    "ResultCallback",
    "TrialSpec",
    "WorkGroup",
    "build_executor",
    "config_digest",
    "estimate_key",
    "is_probe",
    "plan_estimates",
    "plan_grid",
    "trial_key",
    "work_groups",
]
