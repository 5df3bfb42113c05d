"""The evaluation pipeline: settings in, a stored and scored run out. Torch-free."""

from ._alerting import AlertWrites, evaluate_alerts, evaluate_time_rules
from ._comparison import LatestComparison, compare_latest
from ._document import cell_document, estimate_document, model_document, run_document
from ._evaluate import ModelReport, RunReport, run_evaluation
from ._observer import LoggingObserver, Observer
from ._resolve import Resolution, resolve
from ._retention import describe_prune, prune_store, retention_policy

__all__ = [
    "AlertWrites",
    "LatestComparison",
    "LoggingObserver",
    "ModelReport",
    "Observer",
    "Resolution",
    "RunReport",
    "cell_document",
    "compare_latest",
    "describe_prune",
    "estimate_document",
    "evaluate_alerts",
    "evaluate_time_rules",
    "model_document",
    "prune_store",
    "resolve",
    "retention_policy",
    "run_document",
    "run_evaluation",
]
