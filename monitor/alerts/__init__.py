"""Alert rules, pure: conditions on a model's runs, states with hysteresis, event documents."""

from ._conditions import Condition, HistoryPoint, applies, baseline_of, condition
from ._events import event_document
from ._states import Transition, advance

__all__ = [
    "Condition",
    "HistoryPoint",
    "Transition",
    "advance",
    "applies",
    "baseline_of",
    "condition",
    "event_document",
]
