"""Plan the grid and execute it. Torch-free: the training code lives in `monitor.engine.training`,
which only worker processes import."""

from ._build import build_executor
from ._executor import Executor, InlineExecutor, LocalExecutor, ResultCallback
from ._keys import TRAINING_PROTOCOL_VERSION, config_digest, trial_key
from ._options import EngineOptions
from ._plan import CellRef, PlannedCell, TrialSpec, WorkGroup, plan_grid, work_groups

__all__ = [
    "TRAINING_PROTOCOL_VERSION",
    "CellRef",
    "EngineOptions",
    "Executor",
    "InlineExecutor",
    "LocalExecutor",
    "PlannedCell",
    "ResultCallback",
    "TrialSpec",
    "WorkGroup",
    "build_executor",
    "config_digest",
    "plan_grid",
    "trial_key",
    "work_groups",
]
