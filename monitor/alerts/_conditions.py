"""Alert conditions: does a rule hold for a model, given its latest run and its history?

Pure functions over plain values (no store, no clock). Each returns a `Condition`; `active` is
None when the rule cannot be judged (no history yet, a pinned run that does not exist), which
leaves the alert's state as it was.

The drop rule is the one that must not page on noise. It compares P(M) with a baseline and
fires only when the drop exceeds `min_drop` AND `z` standard errors of the difference:

    diff = B - P,   active = diff > min_drop and diff > z * se(diff)

se(diff) counts what the two sides do not share (`difference_variance`). Each run's score
carries, per dataset, the variance its score has from the seeds and from the test sample
(`ModelScore.noise`). A baseline run that used the same trials for a dataset (same model version
and snapshot) has exactly the same seed noise there; one on the same snapshot has the same test
sample: that noise cancels in the difference. What does not cancel counts once per side, with
the dataset's weight in P(M). The baseline B is one run (previous, first, pinned) or the median
of the last n runs, whose noise is taken as that of their mean times c(n)^2, c = 1 for n <= 2
(the median is a mean) and sqrt(pi / 2) ~ 1.2533 for n >= 3 (the efficiency of the median).

Runs without a breakdown (written by older releases) fall back to se(diff) = sqrt(se(P)^2 +
se(B)^2), se(B) the baseline run's stderr, or for the rolling median c(n) * median(stderrs) /
sqrt(n).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..settings import AlertRule, BelowRule, CellDropRule, DropRule, IncompleteRule, StaleRule
from ..types import CellResult, ModelRole, ModelScore

__all__ = ["Condition", "HistoryPoint", "baseline_of", "condition", "difference_variance"]


@dataclass(frozen=True)
class HistoryPoint:
    """One finished run of a model, as far as the rules need it."""

    run_id: str
    finished_at: datetime
    score: ModelScore


@dataclass(frozen=True)
class Condition:
    active: bool | None
    value: float | None = None
    baseline: float | None = None
    threshold: float | None = None
    summary: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    baseline_run: str | None = None  # the run attribution compares with


def _rolling(n: int) -> str:
    return "the previous run" if n == 1 else f"the rolling median of {n} runs"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _window(
    rule: DropRule, history: Sequence[HistoryPoint], pinned: HistoryPoint | None
) -> list[HistoryPoint]:
    """The runs the baseline is made of (oldest first); empty when there are none to judge by."""
    if rule.baseline == "pinned":
        return [pinned] if pinned is not None and pinned.score.persistence is not None else []
    scored = [h for h in history if h.score.persistence is not None]
    if not scored:
        return []
    if rule.baseline == "previous":
        return scored[-1:]
    if rule.baseline == "first":
        return scored[:1]
    return scored[-rule.window :]


def _median_efficiency(n: int) -> float:
    return 1.0 if n <= 2 else math.sqrt(math.pi / 2)


def baseline_of(
    rule: DropRule, history: Sequence[HistoryPoint], pinned: HistoryPoint | None
) -> tuple[float, float | None, str] | None:
    """(baseline P(M), its standard error, the run it stands for) from history (oldest first)."""
    window = _window(rule, history, pinned)
    if not window:
        return None
    if rule.baseline != "rolling_median":
        (only,) = window
        return only.score.persistence, only.score.stderr, only.run_id  # type: ignore[return-value]
    values = [h.score.persistence for h in window if h.score.persistence is not None]
    median = float(statistics.median(values))
    errors = [h.score.stderr for h in window if h.score.stderr is not None]
    se = None
    if errors:
        se = _median_efficiency(len(window)) * statistics.median(errors) / math.sqrt(len(window))
    nearest = min(window, key=lambda h: abs(h.score.persistence - median))  # type: ignore[operator]
    return median, se, nearest.run_id


def difference_variance(current: ModelScore, baseline: Sequence[ModelScore]) -> float | None:
    """Var(P − B) for P(M) of `current` and the baseline made of `baseline`'s runs (their median,
    or the one run), counting only the noise the two sides do not share. None when a run has no
    noise breakdown (then only the runs' stderr can be used)."""
    if not baseline or not current.noise or any(not b.noise for b in baseline):
        return None
    n = len(baseline)
    efficiency = _median_efficiency(n) ** 2
    total = 0.0
    datasets = {(t, d) for s in (current, *baseline) for t, ds in s.noise.items() for d in ds}
    for task, dataset in sorted(datasets):
        for kind in ("seeds", "test"):
            # one noise variable per sharing key: its coefficient in P − B and its variances
            terms: dict[str, tuple[float, list[float], bool]] = {}
            for side, coefficient in [(current, 1.0), *((b, -1.0 / n) for b in baseline)]:
                entry = side.noise.get(task, {}).get(dataset)
                value = None if entry is None else getattr(entry, kind)
                if entry is None or value is None:
                    continue
                key = entry.snapshot if kind == "test" else entry.trials or f"{side.version}/{entry.snapshot}"
                weight = 1.0 / (len(side.noise) * len(side.noise[task]))  # the dataset's weight in P(M)
                sum_coef, variances, with_current = terms.get(key, (0.0, [], False))
                terms[key] = (
                    sum_coef + coefficient * weight,
                    [*variances, value],
                    with_current or side is current,
                )
            for sum_coef, variances, with_current in terms.values():
                share = sum_coef**2 * statistics.fmean(variances)
                total += share if with_current else efficiency * share
    return total


def condition(
    rule: AlertRule,
    model: str,
    current: HistoryPoint | None,
    history: Sequence[HistoryPoint],
    *,
    now: datetime,
    previous_cells: Sequence[CellResult] = (),
    current_cells: Sequence[CellResult] = (),
    pinned: HistoryPoint | None = None,
) -> Condition:
    """Judge `rule` for `model`. `history` holds the runs before `current`, oldest first."""
    if isinstance(rule, StaleRule):
        last = current.finished_at if current else (history[-1].finished_at if history else None)
        if last is None:
            return Condition(
                True, summary=f"{model} has no finished evaluation run yet", threshold=rule.max_age
            )
        age = (now - last).total_seconds()
        return Condition(
            age > rule.max_age,
            value=age,
            threshold=rule.max_age,
            summary=f"the last finished evaluation of {model} is {age / 3600:.1f} h old (max {rule.max_age / 3600:.1f} h)",
        )
    if current is None:
        return Condition(None)
    score = current.score
    if isinstance(rule, IncompleteRule):
        return Condition(
            score.coverage < rule.min_coverage,
            value=score.coverage,
            threshold=rule.min_coverage,
            summary=f"grid coverage of {model} is {score.coverage:.0%} ({score.cells_scored} of "
            f"{score.cells_planned} cells scored; minimum {rule.min_coverage:.0%})",
        )
    p = score.persistence
    if isinstance(rule, BelowRule):
        if p is None:
            return Condition(None)
        return Condition(
            p < rule.threshold,
            value=p,
            threshold=rule.threshold,
            summary=f"P(M) of {model} is {p:.3f}, below the threshold {rule.threshold:.3f}",
        )
    if isinstance(rule, DropRule):
        found = baseline_of(rule, history, pinned)
        if p is None or found is None:
            return Condition(None, value=p)
        base, base_se, base_run = found
        diff = base - p
        variance = difference_variance(score, [h.score for h in _window(rule, history, pinned)])
        if variance is None:
            variance = (score.stderr or 0.0) ** 2 + (base_se or 0.0) ** 2
        se = math.sqrt(variance)
        needed = max(rule.min_drop, rule.z * se)
        how = {
            "previous": "the previous run",
            "first": "the first run",
            "pinned": f"pinned run {rule.pinned_run}",
        }.get(rule.baseline, _rolling(min(rule.window, len(history))))
        return Condition(
            diff > rule.min_drop and diff > rule.z * se,
            value=p,
            baseline=base,
            threshold=needed,
            summary=f"P(M) of {model} is {p:.3f}, {diff:+.3f} below {how} ({base:.3f}); a drop counts beyond "
            f"{needed:.3f} (min_drop {rule.min_drop:.3f}, {rule.z:g} x stderr {se:.4f})",
            details={"drop": diff, "stderr_of_difference": se, "baseline": rule.baseline},
            baseline_run=base_run,
        )
    if isinstance(rule, CellDropRule):
        before = {(c.task, c.dataset, c.strategy): c.score for c in previous_cells if c.score is not None}
        drops = sorted(
            (
                (before[(c.task, c.dataset, c.strategy)] - c.score, c)
                for c in current_cells
                if c.score is not None and (c.task, c.dataset, c.strategy) in before
            ),
            key=lambda item: -item[0],
        )
        if not drops:
            return Condition(None)
        worst, cell = drops[0]
        hit = [
            {"task": c.task, "dataset": c.dataset, "strategy": c.strategy, "drop": d}
            for d, c in drops
            if d >= rule.min_drop
        ]
        return Condition(
            worst >= rule.min_drop,
            value=worst,
            threshold=rule.min_drop,
            summary=f"{len(hit)} cell(s) of {model} dropped by {rule.min_drop:.2f} or more since the previous run; "
            f"worst {cell.task}/{cell.dataset}/{cell.strategy}: {_fmt(cell.score)} ({-worst:+.3f})",
            details={"cells": hit[:20]},
            baseline_run=history[-1].run_id if history else None,
        )
    raise ValueError(f"unknown rule kind {rule.kind!r}")


def applies(rule: AlertRule, model: str, role: ModelRole = "deployed") -> bool:
    """Whether `rule` judges `model` (a rule without `models` judges deployed models only)."""
    return rule.applies_to(model, role)
