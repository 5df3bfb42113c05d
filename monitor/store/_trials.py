"""The trial cache: every ok or diverged fine-tune, looked up by its content key."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

from sqlalchemy import select

from ..types import TrialResult
from ._convert import trial_result, trial_values
from ._schema import TrialRow, utcnow
from ._sessions import Sessions

__all__ = ["IN_CHUNK", "TrialCache", "chunks"]

# SQLite allows 32766 bound variables since 3.32 but only 999 before; stay well under both.
IN_CHUNK = 500
_T = TypeVar("_T")


def chunks(items: Sequence[_T], size: int = IN_CHUNK) -> Iterator[Sequence[_T]]:
    """`items` in slices of at most `size` (for IN lists)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


class TrialCache(Sessions):
    """Trials by key: a key found here is never computed again."""

    def find_trials(self, keys: Iterable[str]) -> dict[str, TrialResult]:
        """Return the cached trials among `keys`, by key (keys not found are simply absent)."""
        wanted = list(dict.fromkeys(keys))
        found: dict[str, TrialResult] = {}
        with self._reading("look up cached trials") as session:
            for chunk in chunks(wanted):
                for row in session.scalars(select(TrialRow).where(TrialRow.key.in_(chunk))):
                    found[row.key] = trial_result(row)
        return found

    def save_trial(
        self,
        result: TrialResult,
        *,
        run_id: str,
        model: str,
        task: str,
        dataset: str,
        snapshot: str,
        strategy: str,
    ) -> None:
        """Cache one ok or diverged trial; a key already stored keeps its first result.

        Raises ValueError for a failed trial: those are retried by the next run, never cached.
        """
        values = trial_values(
            result,
            run_id=run_id,
            model=model,
            task=task,
            dataset=dataset,
            snapshot=snapshot,
            strategy=strategy,
            created_at=utcnow(),
        )
        # Two workers may compute the same key (a resumed run, a retried work group): the first
        # result wins and the second is not an error.
        statement = self._insert(TrialRow).values(values).on_conflict_do_nothing(index_elements=["key"])
        with self._writing(f"save trial {result.key}") as session:
            session.execute(statement)
