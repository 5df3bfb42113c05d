"""The trial cache: every ok or diverged fine-tune, looked up by its content key."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import select

from ..types import TrialResult
from ._convert import trial_result, trial_values
from ._schema import RunRow, TrialRow, utcnow
from ._sessions import Sessions

__all__ = ["IN_CHUNK", "TrialCache", "TrialPlace", "chunks"]

# SQLite allows 32766 bound variables since 3.32 but only 999 before; stay well under both.
IN_CHUNK = 500
_T = TypeVar("_T")


def chunks(items: Sequence[_T], size: int = IN_CHUNK) -> Iterator[Sequence[_T]]:
    """`items` in slices of at most `size` (for IN lists)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass(frozen=True)
class TrialPlace:
    """Where a trial belongs in the grid (what `trials` records beside its result)."""

    model: str
    task: str
    dataset: str
    snapshot: str
    strategy: str


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

    def trial_details(self, keys: Iterable[str]) -> dict[str, TrialResult]:
        """The stored trials among `keys` without their test predictions (what a run view shows).

        Reads neither the predictions column nor anything but these keys' rows: a run's view
        costs its own trials, however long the history.
        """
        wanted = list(dict.fromkeys(keys))
        columns = (TrialRow.key, TrialRow.seed, TrialRow.status, TrialRow.score, TrialRow.seconds)
        found: dict[str, TrialResult] = {}
        with self._reading("read trial details") as session:
            for chunk in chunks(wanted):
                rows = session.execute(
                    select(*columns, TrialRow.error, TrialRow.details).where(TrialRow.key.in_(chunk))
                )
                for row in rows:
                    found[row.key] = trial_result(row, with_predictions=False)
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
        self.save_trials([(result, TrialPlace(model, task, dataset, snapshot, strategy))], run_id=run_id)

    def save_trials(self, trials: Sequence[tuple[TrialResult, TrialPlace]], *, run_id: str) -> None:
        """Cache several trials of one run in one transaction (as `save_trial` each, all or none)."""
        now = utcnow()
        rows = [
            trial_values(
                result,
                run_id=run_id,
                model=place.model,
                task=place.task,
                dataset=place.dataset,
                snapshot=place.snapshot,
                strategy=place.strategy,
                created_at=now,
            )
            for result, place in trials
        ]
        if not rows:
            return
        with self._writing(
            f"save trial {rows[0]['key']}" if len(rows) == 1 else f"save {len(rows)} trials"
        ) as session:
            # In use since its run started (retention compares trials with run start times); a
            # run id the store does not know yet counts from now.
            started = session.scalar(select(RunRow.started_at).where(RunRow.id == run_id))
            for row in rows:
                row["last_used_at"] = started or now
            # Two workers may compute the same key (a resumed run, a retried work group): the
            # first result wins and the second is not an error.
            session.execute(self._insert(TrialRow).on_conflict_do_nothing(index_elements=["key"]), rows)
