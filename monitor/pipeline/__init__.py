"""The evaluation pipeline: settings in, a stored and scored run out. Torch-free."""

from ._alerting import AlertWrites, evaluate_alerts, evaluate_time_rules
from ._document import cell_document, model_document, run_document
from ._evaluate import ModelReport, RunReport, run_evaluation
from ._observer import LoggingObserver, Observer
from ._resolve import Resolution, resolve
from ._retention import describe_prune, prune_store, retention_policy

__all__ = [
    "AlertWrites",
    "LoggingObserver",
    "ModelReport",
    "Observer",
    "Resolution",
    "RunReport",
    "cell_document",
    "describe_prune",
    "evaluate_alerts",
    "evaluate_time_rules",
    "model_document",
    "prune_store",
    "resolve",
    "retention_policy",
    "run_document",
    "run_evaluation",
]
