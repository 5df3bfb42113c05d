"""The `estimate_drop` condition: a transferability estimate fell relative to its own history.

Pure, like the other conditions. One series per (task, dataset, estimator) of a model: the newest
value, and the values on earlier snapshots or model versions (one per distinct estimate key,
newest first; a probe run and the grid after it on the same snapshot give one value, not two).
Each value comes with its standard error (bootstrap resamples of the training examples).

    baseline = median(earlier[:window]),   drop = baseline - value
    se(drop) = sqrt(se(value)^2 + se(baseline)^2),  se(baseline) = c(n) median(se_i) / sqrt(n)
    active   = drop > min_drop  and  drop > z * se(drop)

with c(n) the median's efficiency factor of the `drop` rule (1 for n <= 2, sqrt(pi / 2) from 3
on). Values without a standard error (estimated by an older release, or from fewer than 4
images) fall back to the earlier values' own spread, 1.4826 x their MAD, from 3 of them on; with
fewer, only `min_drop` counts. The condition holds for the model when any series holds; its
value and baseline are the series closest to (or furthest past) its threshold.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..settings import EstimateDropRule
from ._conditions import Condition

__all__ = ["EstimateSeries", "estimate_condition"]

_MAD_TO_SD = 1.4826


@dataclass(frozen=True)
class EstimateSeries:
    """One estimate of one model: its newest value and those before it (distinct keys, newest first)."""

    task: str
    dataset: str
    estimator: str
    snapshot: str
    value: float | None
    stderr: float | None
    earlier: Sequence[tuple[float, float | None]]  # (value, its standard error)
    new: bool = True  # the newest value is for new inputs (not already judged by an earlier run)


def _drop_stderr(series: EstimateSeries, window: Sequence[tuple[float, float | None]]) -> float | None:
    errors = [se for _, se in window if se is not None]
    if series.stderr is not None and len(errors) == len(window):
        efficiency = 1.0 if len(window) <= 2 else math.sqrt(math.pi / 2)
        baseline_se = efficiency * statistics.median(errors) / math.sqrt(len(window))
        return math.hypot(series.stderr, baseline_se)
    if len(window) >= 3:
        centre = statistics.median(v for v, _ in window)
        return _MAD_TO_SD * float(statistics.median(abs(v - centre) for v, _ in window))
    return None


def estimate_condition(
    rule: EstimateDropRule, model: str, series: Mapping[tuple[str, str, str], EstimateSeries]
) -> Condition:
    """Judge `rule` over the model's estimate series (None: nothing to judge by yet)."""
    judged = []
    for (_, _, estimator), s in sorted(series.items(), key=lambda item: item[0]):
        if rule.estimators is not None and estimator not in rule.estimators:
            continue
        window = list(s.earlier[: rule.window])
        if s.value is None or not window:
            continue
        baseline = float(statistics.median(v for v, _ in window))
        drop = baseline - s.value
        se = _drop_stderr(s, window)
        needed = max(rule.min_drop, rule.z * se) if se is not None else rule.min_drop
        active = drop > rule.min_drop and (se is None or drop > rule.z * se)
        judged.append((drop, needed, active, baseline, s, se, len(window)))
    if not judged:
        return Condition(None)
    drop, needed, _, baseline, s, se, n = max(judged, key=lambda j: j[0] - j[1])
    fired = [j for j in judged if j[2]]
    noise = f"{rule.z:g} x stderr {se:.4f}" if se is not None else "no stderr yet"
    assert s.value is not None
    return Condition(
        bool(fired),
        value=s.value,
        baseline=baseline,
        threshold=needed,
        summary=(
            f"{s.estimator} of {model} on {s.task}/{s.dataset} (snapshot {s.snapshot}) is {s.value:.4f}, "
            f"{-drop:+.4f} from the median of its {n} earlier value(s) ({baseline:.4f}); a drop counts "
            f"beyond {needed:.4f} (min_drop {rule.min_drop:g}, {noise})"
        ),
        details={
            "estimates": [
                {
                    "task": j[4].task,
                    "dataset": j[4].dataset,
                    "estimator": j[4].estimator,
                    "snapshot": j[4].snapshot,
                    "value": j[4].value,
                    "baseline": j[3],
                    "drop": j[0],
                    "stderr_of_drop": j[5],
                }
                for j in sorted(fired, key=lambda j: -j[0])[:20]
            ]
        },
    )
