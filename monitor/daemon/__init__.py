"""The long-running service: scheduler, evaluation queue and runner around the pipeline."""

from ._daemon import Daemon
from ._fingerprint import inputs_fingerprint
from ._owner import current_owner, is_interrupted
from ._queue import EvaluationQueue, Request

__all__ = ["Daemon", "EvaluationQueue", "Request", "current_owner", "inputs_fingerprint", "is_interrupted"]
