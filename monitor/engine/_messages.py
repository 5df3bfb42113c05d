"""What the parent and a worker say to each other: one frozen dataclass per message.

    parent -> worker   RunGroup(group) | Stop()
    worker -> parent   Hello(devices)         once, after torch is imported (or Fatal(reason))
                       Started(keys)          these trials are now running
                       Result(result)         one per trial
                       GroupFailed(message)   the group cannot run (e.g. bad weights)
                       Done()                 the group is finished

A worker runs the groups it is given in order and answers every `RunGroup` with `Done` (after
`GroupFailed` when the group could not run). The messages are pickled over a pipe
(`LocalExecutor`); an executor that runs groups elsewhere (another process, another host) speaks
the same protocol. `failure_text` is the one way an exception becomes a failed trial's reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import MonitorError
from ..types import TrialResult
from ._plan import Job, WorkGroup

__all__ = [
    "Done",
    "Fatal",
    "GroupFailed",
    "Hello",
    "Result",
    "RunGroup",
    "Started",
    "Stop",
    "ToParent",
    "ToWorker",
    "failed_result",
    "failure_text",
]


@dataclass(frozen=True)
class RunGroup:
    group: WorkGroup


@dataclass(frozen=True)
class Stop:
    pass


@dataclass(frozen=True)
class Hello:
    devices: tuple[str, ...]


@dataclass(frozen=True)
class Fatal:
    reason: str


@dataclass(frozen=True)
class Started:
    keys: tuple[str, ...]


@dataclass(frozen=True)
class Result:
    result: TrialResult


@dataclass(frozen=True)
class GroupFailed:
    message: str


@dataclass(frozen=True)
class Done:
    pass


ToWorker = RunGroup | Stop
ToParent = Hello | Fatal | Started | Result | GroupFailed | Done


def failure_text(exc: BaseException) -> str:
    """The reason stored with a trial that `exc` failed.

    Our own errors say what is wrong and what to do: kept whole. Anything else (torch, PIL, …) is
    named by its type and the first line of its message (tracebacks and tensor dumps stay in the log).
    """
    if isinstance(exc, MonitorError):
        return str(exc)
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def failed_result(trial: Job, reason: str) -> TrialResult:
    """The `failed` result of `trial`, with `reason` (see `failure_text`)."""
    return TrialResult(key=trial.key, seed=trial.seed, status="failed", score=None, seconds=0.0, error=reason)
