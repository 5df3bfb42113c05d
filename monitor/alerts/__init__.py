"""Alert rules, pure: conditions on a model's runs, states with hysteresis, event documents."""

from ._conditions import Condition, HistoryPoint, applies, baseline_of, condition, difference_variance
from ._estimates import EstimateSeries, estimate_condition
from ._events import event_document
from ._judge import Decision, RuleInputs, RuleNeeds, judge
from ._sizing import MIN_TEST_IMAGES, small_test_split
from ._states import Transition, advance

__all__ = [
    "MIN_TEST_IMAGES",
    "Condition",
    "Decision",
    "EstimateSeries",
    "HistoryPoint",
    "RuleInputs",
    "RuleNeeds",
    "Transition",
    "advance",
    "applies",
    "baseline_of",
    "condition",
    "difference_variance",
    "estimate_condition",
    "event_document",
    "judge",
    "small_test_split",
]
