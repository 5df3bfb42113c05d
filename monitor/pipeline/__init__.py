"""The evaluation pipeline: settings in, a stored and scored run out. Torch-free."""

from ._alerting import AlertWrites, evaluate_alerts, evaluate_time_rules
from ._document import cell_document, model_document, run_document
from ._evaluate import ModelReport, RunReport, run_evaluation
from ._observer import LoggingObserver, Observer
from ._resolve import Resolution, resolve

__all__ = [
    "AlertWrites",
    "LoggingObserver",
    "ModelReport",
    "Observer",
    "Resolution",
    "RunReport",
    "cell_document",
    "evaluate_alerts",
    "evaluate_time_rules",
    "model_document",
    "resolve",
    "run_document",
    "run_evaluation",
]
