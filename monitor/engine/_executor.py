"""Run work groups in long-lived worker processes, one per device, and survive their failures.

On the CPU there can be several (`EngineOptions.cpu_workers`): their groups run side by side and
the parent shares the cores among the busy ones through a per-worker thread count that each
worker reads before every trial (a lone busy worker gets every core).

This module does not import torch: the worker processes do (`monitor.engine.training`). The
parent and each worker talk over a pipe in the messages of `monitor.engine._messages`.

Guarantee: every trial of every group handed to `run` gets exactly one result, `failed` with a
reason when its worker crashed, hung past `cell_timeout`, or the group could not run. A crashed or
hung worker is replaced, and the group's remaining trials go on in the new one. The exception is
`cancel()` (shutdown): workers stop between trials, `run` raises `Cancelled`, and the trials that
did not finish get no result at all (the run is resumed later; their keys are simply not stored).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any, Protocol

from ..errors import Cancelled, MonitorError
from ..types import TrialResult
from ._messages import (
    Done,
    Fatal,
    GroupFailed,
    Hello,
    Result,
    RunGroup,
    Started,
    Stop,
    ToParent,
    failed_result,
    failure_text,
)
from ._options import EngineOptions, cpu_count, thread_shares
from ._plan import Job, WorkGroup

__all__ = ["Executor", "InlineExecutor", "LocalExecutor", "ResultCallback"]

log = logging.getLogger(__name__)

ResultCallback = Callable[[Job, TrialResult], None]  # a trial or an estimate, and its result
_TRAINING = "monitor.engine.training"
_START_TIMEOUT = 300.0  # importing torch (and CUDA init) on a cold, busy machine can be slow


class Executor(Protocol):
    """What the pipeline and the daemon need from an executor (local processes, inline, a cluster).

    `run` calls `on_result` exactly once for every trial of every group (see the guarantee
    above), from the calling thread, and raises `Cancelled` after `cancel()`. `start(wait=False)`
    may begin slow set-up (importing torch, connecting) in the background; `run` waits for it.
    `cancel` and `abandon` are called from another thread (a signal handler).
    """

    def start(self, *, wait: bool = True) -> list[str]: ...

    def run(self, groups: Sequence[WorkGroup], on_result: ResultCallback) -> None: ...

    def cancel(self) -> None: ...

    def abandon(self) -> None: ...

    def close(self, timeout: float = 10.0) -> None: ...


def recover(
    group: WorkGroup,
    remaining: dict[str, Job],
    running: set[str],
    crashes: dict[str, int],
    reason: str,
    on_result: ResultCallback,
) -> WorkGroup | None:
    """After the worker running `group` died or hung: fail what it was running, keep the rest.

    The trials in `running` fail with `reason`. When nothing was running, the group itself
    breaks its worker (e.g. loading the model): it is retried once in a fresh worker, then all
    of it fails (`crashes` counts per group id). Returns the group of the trials to run again,
    or None; `remaining` is emptied.
    """
    failed = [remaining.pop(k) for k in list(running) if k in remaining]
    if not failed:
        crashes[group.id] = crashes.get(group.id, 0) + 1
        if crashes[group.id] >= 2:
            failed = list(remaining.values())
            remaining.clear()
    for trial in failed:
        on_result(trial, failed_result(trial, reason))
    rest = tuple(remaining.values())
    remaining.clear()
    return group.only(rest) if rest else None


class InlineExecutor:
    """Runs groups in this process (tests, benchmarks, `--inline`); imports torch on first use."""

    def __init__(self, device: str = "auto", options: EngineOptions | None = None) -> None:
        self._device_setting = device
        self._device: str | None = None
        self._options = options or EngineOptions()
        self._cancelled = False

    def start(self, *, wait: bool = True) -> list[str]:
        if self._device is None and wait:
            training: Any = importlib.import_module(_TRAINING)
            self._device = training.resolve_devices(self._device_setting)[0]
        return [self._device] if self._device else []

    def run(self, groups: Sequence[WorkGroup], on_result: ResultCallback) -> None:
        training: Any = importlib.import_module(_TRAINING)
        self.start()
        assert self._device is not None
        for group in groups:
            if self._cancelled:
                raise Cancelled("the run was cancelled (shutdown); finished fine-tunes are stored")
            by_key = {t.key: t for t in group.jobs}
            done: set[str] = set()

            def emit(message: ToParent, by_key: dict[str, Job] = by_key, done: set[str] = done) -> None:
                if isinstance(message, Result):
                    done.add(message.result.key)
                    on_result(by_key[message.result.key], message.result)

            try:
                training.run_group(group, self._device, emit, options=self._options)
            except Exception as exc:  # a group-level failure fails its remaining trials, never the run
                text = failure_text(exc)
                for trial in group.jobs:
                    if trial.key not in done:
                        on_result(trial, failed_result(trial, text))

    def cancel(self) -> None:
        """Stop before the next group (the group in progress finishes: it runs in this thread)."""
        self._cancelled = True

    def abandon(self) -> None:
        self._cancelled = True

    def close(self, timeout: float = 10.0) -> None:
        pass


def _worker_main(
    conn: Connection, device: str, announce: bool, options: EngineOptions, stop: Any, threads: Any
) -> None:
    """Entry point of a worker process (a trampoline: torch is imported only here, in the child)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _die_with_parent()
    if threads.value > 0:  # before torch starts its thread pools
        os.environ["OMP_NUM_THREADS"] = str(threads.value)
    training: Any = importlib.import_module(_TRAINING)
    training.serve(conn, device, announce, options, stop.is_set, lambda: threads.value)


def _die_with_parent() -> None:
    """On Linux, have the kernel kill this worker when its parent dies (even by SIGKILL)."""
    if sys.platform != "linux":
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@dataclasses.dataclass
class _Worker:
    device: str
    process: multiprocessing.process.BaseProcess
    conn: Connection
    threads: Any  # a shared int: the CPU threads this worker may use from its next trial (0: all)
    group: WorkGroup | None = None
    remaining: dict[str, Job] = dataclasses.field(default_factory=dict)
    running: set[str] = dataclasses.field(default_factory=set)
    deadline: float = float("inf")


class LocalExecutor:
    """One long-lived worker process per device; groups are queued and handed to idle workers."""

    def __init__(
        self,
        device: str = "auto",
        *,
        cell_timeout: float = 3600.0,
        max_workers: int | None = None,
        options: EngineOptions | None = None,
    ) -> None:
        self._options = options or EngineOptions()
        self._device_setting = device
        self._cell_timeout = cell_timeout
        self._max_workers = max_workers
        self._context = multiprocessing.get_context("spawn")  # never fork a process that may hold CUDA
        self._workers: list[_Worker] = []
        self._devices: list[str] = []
        self._cancelled = False
        self._crashes: dict[str, int] = {}  # group id -> crashes with no trial running
        self._starting: _Worker | None = None  # the first worker, launched and not yet heard from
        self._early: list[_Worker] = []  # more CPU workers, launched with the first (device: cpu)
        self._cpu_workers = max(1, self._options.cpu_workers)
        self._cores = cpu_count()
        self._stop = self._context.Event()  # seen by every worker: stop between trials

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, *, wait: bool = True) -> list[str]:
        """Start the workers (one per device found by the first; `cpu_workers` on the CPU).

        Returns the devices.

        With `wait=False` the first worker is only launched: it imports torch while the caller
        resolves sources and decodes data, and `run` waits for it (the devices are then []).
        """
        if self._workers:
            return self._devices
        if self._starting is None:
            self._starting = self._spawn(self._device_setting, announce=True)
            if self._device_setting == "cpu":  # known without torch: the others import alongside
                self._early = [self._spawn("cpu", announce=False) for _ in range(self._cpu_workers - 1)]
        if not wait:
            return []
        first, self._starting = self._starting, None
        message = self._recv(first, timeout=_START_TIMEOUT)
        if not isinstance(message, Hello):
            self._kill(first)
            for extra in self._early:
                self._kill(extra)
            self._early = []
            if isinstance(message, Fatal):
                raise MonitorError(
                    f"cannot start a worker on device {self._device_setting!r}: {message.reason}"
                )
            raise MonitorError("the worker process did not start; see its output above (stderr)")
        self._devices = list(message.devices)[: self._max_workers or None]
        first.device = self._devices[0]
        self._workers.append(first)
        for device in self._devices[1:]:
            self._workers.append(self._spawn(device, announce=False))
        if self._devices == ["cpu"]:
            self._workers.extend(self._early)
            self._workers.extend(
                self._spawn("cpu", announce=False) for _ in range(self._cpu_workers - len(self._workers))
            )
        self._early = []
        return self._devices

    def close(self, timeout: float = 10.0) -> None:
        """Ask the workers to stop; kill those that do not within `timeout`."""
        for launched in [w for w in (self._starting, *self._early) if w is not None]:
            # launched but never needed: no reason to wait for them
            self._kill(launched)
            launched.conn.close()
        self._starting, self._early = None, []
        for worker in self._workers:
            with contextlib.suppress(OSError, BrokenPipeError):
                worker.conn.send(Stop())
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                self._kill(worker)
            worker.conn.close()
        self._workers.clear()

    def cancel(self) -> None:
        """Stop handing out groups and ask workers to stop after their current trial (thread-safe).

        The `run` in progress then raises `Cancelled` once no worker is busy any more.
        """
        self._cancelled = True
        self._stop.set()

    def abandon(self) -> None:
        """Kill the workers now (after `cancel`, when the grace period is over); thread-safe."""
        self._cancelled = True
        self._stop.set()
        for worker in list(self._workers):
            if worker.process.is_alive():
                worker.process.kill()

    def __enter__(self) -> LocalExecutor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- running ------------------------------------------------------------------------------

    def run(self, groups: Sequence[WorkGroup], on_result: ResultCallback) -> None:
        self.start()
        self._crashes.clear()
        queue: deque[WorkGroup] = deque(groups)
        while queue or any(w.group is not None for w in self._workers):
            if self._cancelled:
                queue.clear()  # never started: no results, the resumed run will do them
            for worker in self._workers:
                if worker.group is None and queue:
                    self._assign(worker, queue.popleft())
            self._rebalance()
            busy = [w for w in self._workers if w.group is not None]
            if not busy:
                continue
            timeout = max(0.0, min(w.deadline for w in busy) - time.monotonic())
            ready = wait(
                [w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=min(timeout, 1.0)
            )
            for worker in busy:
                if worker.conn in ready or worker.process.sentinel in ready:
                    self._drain(worker, on_result, queue)
                elif time.monotonic() > worker.deadline:
                    self._on_hang(worker, on_result, queue)
        if self._cancelled:
            raise Cancelled("the run was cancelled (shutdown); finished fine-tunes are stored")

    def _assign(self, worker: _Worker, group: WorkGroup) -> None:
        # A worker can die while idle (the OOM killer, a crash after its last group): that is no
        # fault of the next group, which simply goes to a fresh worker.
        for _ in range(3):
            if not worker.process.is_alive():
                log.warning("worker on %s was found dead while idle; starting a new one", worker.device)
                self._respawn(worker)
            try:
                worker.conn.send(RunGroup(group))
                break
            except (OSError, EOFError):
                self._respawn(worker)
        else:
            raise MonitorError(f"cannot start a working worker process on {worker.device}; see the log above")
        worker.group = group
        worker.remaining = {t.key: t for t in group.jobs}
        worker.running = set()
        worker.deadline = time.monotonic() + self._cell_timeout

    def _respawn(self, worker: _Worker) -> None:
        self._kill(worker)
        with contextlib.suppress(OSError):
            worker.conn.close()
        fresh = self._spawn(worker.device, announce=False, threads=worker.threads)
        worker.process, worker.conn = fresh.process, fresh.conn
        worker.group, worker.remaining, worker.running = None, {}, set()
        worker.deadline = float("inf")

    def _drain(self, worker: _Worker, on_result: ResultCallback, queue: deque[WorkGroup]) -> None:
        while worker.group is not None:
            try:
                if not worker.conn.poll():
                    if not worker.process.is_alive():
                        raise EOFError
                    return
                message = worker.conn.recv()
            except (EOFError, OSError):
                self._on_crash(worker, on_result, queue)
                return
            if isinstance(message, Started):
                worker.running = set(message.keys)
                worker.deadline = time.monotonic() + self._cell_timeout
            elif isinstance(message, Result):
                result: TrialResult = message.result
                trial = worker.remaining.pop(result.key, None)
                worker.running.discard(result.key)
                worker.deadline = time.monotonic() + self._cell_timeout
                if trial is not None:
                    on_result(trial, result)
            elif isinstance(message, GroupFailed):
                for trial in worker.remaining.values():
                    on_result(trial, failed_result(trial, message.message))
                worker.remaining.clear()
            elif isinstance(message, Done):
                if not self._cancelled:  # (a cancelled worker stops early on purpose)
                    for trial in worker.remaining.values():  # defensive: the worker forgot some
                        on_result(
                            trial,
                            failed_result(trial, "the worker finished the group without a result for it"),
                        )
                worker.group = None
                worker.remaining.clear()
                worker.deadline = float("inf")

    def _on_crash(self, worker: _Worker, on_result: ResultCallback, queue: deque[WorkGroup]) -> None:
        worker.process.join(1.0)
        code = worker.process.exitcode
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        self._replace(worker, f"the worker process died ({how}) while running it", on_result, queue)

    def _on_hang(self, worker: _Worker, on_result: ResultCallback, queue: deque[WorkGroup]) -> None:
        self._replace(
            worker,
            f"timed out after {self._cell_timeout:.0f}s (executor.cell_timeout); the worker was replaced",
            on_result,
            queue,
        )

    def _replace(
        self, worker: _Worker, reason: str, on_result: ResultCallback, queue: deque[WorkGroup]
    ) -> None:
        group = worker.group
        assert group is not None
        if self._cancelled:  # killed on purpose at shutdown: nothing failed, nothing to redo now
            self._kill(worker)
            worker.group, worker.remaining, worker.running = None, {}, set()
            worker.deadline = float("inf")
            return
        log.warning("work group %s: %s", group.id, reason)
        self._kill(worker)
        rest = recover(group, worker.remaining, worker.running, self._crashes, reason, on_result)
        if rest is not None:
            queue.appendleft(rest)
        self._respawn(worker)

    # -- processes ----------------------------------------------------------------------------

    def _spawn(self, device: str, *, announce: bool, threads: Any = None) -> _Worker:
        if threads is None:
            # CPU workers start with an equal share of the cores; `_rebalance` adjusts it.
            share = (
                thread_shares(self._cores, self._cpu_workers)[-1]
                if device == "cpu" and self._cpu_workers > 1
                else 0
            )
            threads = self._context.Value("i", share, lock=False)
        parent, child = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=_worker_main,
            args=(child, device, announce, self._options, self._stop, threads),
            name=f"pm-worker-{device}",
            daemon=True,
        )
        process.start()
        child.close()
        return _Worker(device=device, process=process, conn=parent, threads=threads)

    def _rebalance(self) -> None:
        """Share the cores among the CPU workers that have a group: a lone busy one gets them all.

        Workers read their share before each trial, so a change takes effect at the next one.
        """
        cpu = [w for w in self._workers if w.device == "cpu"]
        if len(cpu) < 2:
            return
        busy = [w for w in cpu if w.group is not None]
        if not busy:
            return
        for worker, share in zip(busy, thread_shares(self._cores, len(busy)), strict=True):
            worker.threads.value = share

    @staticmethod
    def _recv(worker: _Worker, *, timeout: float) -> ToParent | None:
        if worker.conn.poll(timeout):
            try:
                return worker.conn.recv()
            except (EOFError, OSError):
                return None
        return None

    @staticmethod
    def _kill(worker: _Worker) -> None:
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join(5.0)
