"""Monotonic counters kept as rows are written (`counters` table): what the `_total` metrics read.

Counting the stored rows at scrape time would cost what the history holds (a year of runs is
millions of cells) and would go down when retention prunes them; these go up in the transaction
that writes (or prunes) the rows they count, and a scrape reads a few of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ._schema import CounterRow

__all__ = ["RUN_SECONDS_BUCKETS", "add_counts", "cumulative_buckets", "duration_counts", "read_counts"]

# A grid takes seconds (all cached) to hours (large models on a CPU). Migration 0005 seeded the
# histogram with these bounds: a bound added later counts from the run that first sees it.
RUN_SECONDS_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0)

Insert = Callable[[type[CounterRow]], Any]


def bucket_label(bound: float) -> str:
    return f"le={float(bound)!r}"


def duration_counts(seconds: float) -> dict[str, float]:
    """The `run_seconds` increments for one finished run that took `seconds`."""
    counts = {"count": 1.0, "sum": float(seconds)}
    for bound in RUN_SECONDS_BUCKETS:
        counts[bucket_label(bound)] = 1.0 if seconds <= bound else 0.0
    return counts


def add_counts(session: Session, insert: Insert, name: str, counts: Mapping[str, float]) -> None:
    """Add `counts` (label -> increment) to counter `name`, in the caller's transaction."""
    for label, increment in counts.items():
        if not increment:
            continue
        statement = insert(CounterRow).values(name=name, label=label, value=float(increment))
        session.execute(
            statement.on_conflict_do_update(
                index_elements=["name", "label"], set_={"value": CounterRow.value + float(increment)}
            )
        )


def read_counts(session: Session, name: str) -> dict[str, float]:
    """Counter `name`, label -> value (labels never counted are absent)."""
    rows = session.execute(select(CounterRow.label, CounterRow.value).where(CounterRow.name == name))
    return {label: float(value) for label, value in rows}


def cumulative_buckets(counts: Mapping[str, float], bounds: Sequence[float]) -> list[int]:
    """The cumulative count at each of `bounds` (inf: every run; a bound never kept: not known)."""
    total = int(counts.get("count", 0.0))
    out = []
    for bound in map(float, bounds):
        if math.isinf(bound):
            out.append(total if bound > 0 else 0)
        else:
            out.append(int(counts.get(bucket_label(bound), 0.0)))
    return out
