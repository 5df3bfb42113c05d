"""How a run reports progress to whoever started it (a progress bar, the daemon's log, nothing)."""

from __future__ import annotations

import logging
from typing import Protocol

from ..engine import TrialSpec
from ..types import TrialResult

__all__ = ["LoggingObserver", "Observer"]

log = logging.getLogger("monitor.pipeline")


class Observer(Protocol):
    def stage(self, text: str) -> None:
        """A step of the run begins (resolving sources, decoding a snapshot, training)."""

    def warn(self, text: str) -> None:
        """Something the user should know; the run carries on."""

    def planned(self, trials: int, cached: int) -> None:
        """The grid is planned: `trials` fine-tunes in all, `cached` of them already stored."""

    def trial_done(self, trial: TrialSpec, result: TrialResult) -> None:
        """One fine-tune finished (or failed)."""


class LoggingObserver:
    """Reports to the `monitor.pipeline` logger: the daemon's choice."""

    def stage(self, text: str) -> None:
        log.info("%s", text)

    def warn(self, text: str) -> None:
        log.warning("%s", text)

    def planned(self, trials: int, cached: int) -> None:
        log.info("grid: %d fine-tunes, %d already stored, %d to run", trials, cached, trials - cached)

    def trial_done(self, trial: TrialSpec, result: TrialResult) -> None:
        if result.status == "failed":
            log.warning("%s seed %d failed: %s", trial.cell, trial.seed, result.error)
        else:
            log.debug(
                "%s seed %d: %s %.4f (%.1fs)",
                trial.cell,
                trial.seed,
                result.status,
                result.score or 0.0,
                result.seconds,
            )
