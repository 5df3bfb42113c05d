"""TensorBoard event files of a run's trials (`executor.tensorboard_dir`), written as results land.

    <tensorboard_dir>/<run_id>/<model>/<task>/<dataset>/<strategy>/seed<k>/events.out.tfevents.*

One event file per trial of the run's grid: `loss/train` at steps 1..E (the mean training loss
of each epoch; a diverged trial's curve ends before its non-finite epoch) and `score` (the test
metric) at the last of them. Names are config names, safe as path components. Trials the run
reuses from the store are written too (at the start of the run), so that every run's folder
holds its whole grid; a folder that already holds an event file (a resumed run) is left as it
is. Written in the parent with tensorboard's own writer (no torch), from the curves the
workers report: a trial without a curve (failed, k-NN, or from an older release) gets no file.
A file that cannot be written is a warning, never a failed run.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..engine import CellRef, PlannedCell
from ..types import TrialResult

__all__ = ["TensorBoardLog"]

log = logging.getLogger(__name__)


class TensorBoardLog:
    """Where one run's trials go in `root`, and the writing of each."""

    def __init__(self, root: Path, run_id: str, cells: Iterable[PlannedCell]) -> None:
        self.root = root / run_id
        # A key may stand in several cells (strategies that differ only by name): written to each.
        self._places: dict[str, list[tuple[CellRef, int]]] = {}
        for planned in cells:
            for trial in planned.trials:
                self._places.setdefault(trial.key, []).append((planned.cell, trial.seed))
        self._warned = False

    def folder(self, cell: CellRef, seed: int) -> Path:
        return self.root / cell.model / cell.task / cell.dataset / cell.strategy / f"seed{seed}"

    def write_all(self, results: Mapping[str, TrialResult]) -> None:
        """Write every planned trial found in `results` (the trials reused from the store)."""
        for key, result in results.items():
            if key in self._places:
                self.write(result)

    def write(self, result: TrialResult) -> None:
        """Write `result` to the folder of every cell it belongs to (once: existing files stay)."""
        curve = result.details.get("loss_curve")
        if result.status == "failed" or not isinstance(curve, list) or result.score is None:
            return
        for cell, seed in self._places.get(result.key, []):
            folder = self.folder(cell, seed)
            try:
                if folder.is_dir() and any(folder.glob("events.out.tfevents.*")):
                    continue
                _write_events(folder, curve, result.score)
            except OSError as exc:
                if not self._warned:  # one warning a run: a full disk fails every file alike
                    log.warning("TensorBoard event files not written to %s: %s", self.root, exc)
                    self._warned = True


def _write_events(folder: Path, curve: list[Any], score: float) -> None:
    """One event file, written whole beside its final name and then renamed (never half a file).

    With tensorboard's record writer on a plain file, synchronously: its `EventFileWriter`
    writes from a thread of its own and goes through TensorFlow's file API when TensorFlow is
    installed, neither of which a handful of scalars needs.
    """
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.record_writer import RecordWriter

    now = time.time()

    def scalar(tag: str, value: float, step: int) -> bytes:
        summary = Summary(value=[Summary.Value(tag=tag, simple_value=value)])
        return Event(wall_time=now, step=step, summary=summary).SerializeToString()

    folder.mkdir(parents=True, exist_ok=True)
    name = f"events.out.tfevents.{int(now):010d}.{socket.gethostname()}.persistence-monitor"
    partial = folder / ".events.partial"  # without "tfevents" in its name TensorBoard skips it
    with partial.open("wb") as file:
        writer = RecordWriter(file)
        writer.write(Event(wall_time=now, file_version="brain.Event:2").SerializeToString())
        for epoch, loss in enumerate(curve, start=1):
            if isinstance(loss, int | float):  # null: the epoch whose loss was not finite
                writer.write(scalar("loss/train", float(loss), epoch))
        writer.write(scalar("score", float(score), max(1, len(curve))))
    partial.replace(folder / name)
