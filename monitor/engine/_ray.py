"""Run work groups on a Ray cluster: long-lived actors run the same training code as local workers.

`executor: {kind: ray}`. Each actor holds one GPU (`gpus_per_worker`, fractions allowed) or, on
a cluster without GPUs, `cpus_per_worker` CPUs; it runs one work group at a time and streams the
messages of `monitor.engine._messages` back as they happen (a Ray streaming generator; through
Ray Client, `ray://…`, which has none, the driver fetches them in batches from the actor), so a
group that dies half way keeps its finished trials.

Data and weights travel through Ray's object store, never through a path: the decoded snapshot
files are put once per snapshot and run, the weights file once per digest, and an actor writes
them to its own temporary folder. Nothing on another node reads the daemon's disk (a shared
`state_dir` is not assumed: most clusters have none, and the object store is Ray's own way to
move bytes to the node that needs them). A `python:` model factory must be importable on the
workers (installed there, or shipped with `executor.runtime_env`).

The guarantee is the local executor's: every trial handed to `run` gets exactly one result,
`failed` with a reason when its actor died (OOM, node lost, `ray kill`), hung past
`cell_timeout`, or the group could not run; the dead actor is replaced and the group's
unfinished trials go on in the new one. After `cancel()` actors stop between trials and `run`
raises `Cancelled`.

This module imports neither torch nor Ray at import time: the daemon imports it, and Ray only
when the executor starts (`pip install 'persistence-monitor[ray]'`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import logging
import os
import queue
import shutil
import socket
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..data import PreparedData
from ..errors import Cancelled, ConfigError, MonitorError
from ._executor import recover
from ._messages import Done, GroupFailed, Result, Started, ToParent, failed_result, failure_text
from ._options import EngineOptions
from ._plan import Job, WorkGroup

__all__ = ["RayExecutor"]

log = logging.getLogger(__name__)

_TRAINING = "monitor.engine.training"
_START_TIMEOUT = 300.0  # actors import torch (and initialise CUDA) before they answer
_TAKE_WAIT = 1.0  # Ray Client: an actor call waits this long for the group's next messages
_NAMESPACE = "persistence-monitor"
_NOWHERE = Path("/nonexistent/shipped-through-the-ray-object-store")


def _ray() -> Any:
    try:
        return importlib.import_module("ray")
    except ImportError:
        raise ConfigError(
            [("executor.kind", "ray needs the Ray package: pip install 'persistence-monitor[ray]'")]
        ) from None


@dataclasses.dataclass(frozen=True)
class _Shipment:
    """A work group as it travels: its files replaced by object references."""

    group: WorkGroup
    files: Any  # ObjectRef of {file name: bytes} of the decoded snapshot
    weights: Any  # ObjectRef of the weights file's bytes, or None


class _GroupActor:
    """The Ray actor: one device, one work group at a time (torch is imported in its process)."""

    def __init__(self, device: str, options: EngineOptions, threads: int) -> None:
        if threads > 0:
            os.environ["OMP_NUM_THREADS"] = str(threads)
        self._training: Any = importlib.import_module(_TRAINING)
        if threads > 0:
            self._training.use_threads(threads)
        self._device = self._training.resolve_devices(device)[0]
        self._options = options
        self._cache = self._training.ModelCache()
        self._stop = threading.Event()
        self._one_at_a_time = threading.Lock()  # (the actor is threaded only so that `stop` gets in)
        self._dir = Path(tempfile.mkdtemp(prefix="pm-ray-"))
        self._box: queue.Queue[ToParent] | None = None  # the messages of `begin`'s group

    def hello(self) -> tuple[str, str]:
        return self._device, socket.gethostname()

    def stop(self) -> None:
        """Finish the trial in progress, then end the group (called while `run` runs)."""
        self._stop.set()

    def run(self, group: WorkGroup, files: dict[str, bytes], weights: bytes | None) -> Iterator[ToParent]:
        """Run `group`, yielding its messages as they happen (a Ray streaming generator)."""
        with self._one_at_a_time:
            yield from self._run(group, files, weights)

    def begin(self, group: WorkGroup, files: dict[str, bytes], weights: bytes | None) -> None:
        """Start `group` in the background; `take` hands its messages out (for Ray Client, which
        has no streaming generators)."""
        box: queue.Queue[ToParent] = queue.Queue()
        self._box = box

        def pump() -> None:
            try:
                for message in self.run(group, files, weights):
                    box.put(message)
            except BaseException as exc:  # (run itself turns a group's failure into messages)
                box.put(GroupFailed(failure_text(exc)))
                box.put(Done())

        threading.Thread(target=pump, name=f"pm-group-{group.id}", daemon=True).start()

    def take(self, wait: float) -> list[ToParent]:
        """The messages of the running group since the last call, waiting up to `wait` seconds."""
        box = self._box
        if box is None:
            return []
        try:
            taken = [box.get(timeout=wait)]
        except queue.Empty:
            return []
        while True:
            try:
                taken.append(box.get_nowait())
            except queue.Empty:
                return taken

    def _run(self, group: WorkGroup, files: dict[str, bytes], weights: bytes | None) -> Iterator[ToParent]:
        self._stop.clear()
        local = self._localize(group, files, weights)
        messages: queue.Queue[ToParent | None] = queue.Queue()

        def work() -> None:
            try:
                self._training.run_group(
                    local,
                    self._device,
                    messages.put,
                    cache=self._cache,
                    options=self._options,
                    should_stop=self._stop.is_set,
                )
            except Exception as exc:
                log.warning("work group %s cannot run: %s", group.id, failure_text(exc))
                messages.put(GroupFailed(failure_text(exc)))
            finally:
                self._training.release_memory()
                messages.put(None)

        thread = threading.Thread(target=work, name=f"pm-group-{group.id}", daemon=True)
        thread.start()
        while (message := messages.get()) is not None:
            yield message
        thread.join()
        yield Done()

    def _localize(self, group: WorkGroup, files: dict[str, bytes], weights: bytes | None) -> WorkGroup:
        """The group with its data and weights in this actor's folder (written once each)."""
        # A derived dataset's files are its source's: the actor corrupts them into a folder of its
        # own beside them, kept for the groups after this one.
        data_dir = self._dir / "data" / group.data.decoded.key
        if not data_dir.exists():
            partial = data_dir.with_name(data_dir.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            for name, content in files.items():
                (partial / name).write_bytes(content)
            partial.rename(data_dir)
        model = group.model
        if weights is not None and model.weights_path is not None:
            path = self._dir / "weights" / group.version.digest / model.weights_path.name
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(path.name + ".partial")
                tmp.write_bytes(weights)
                tmp.rename(path)
            model = model.model_copy(update={"weights": str(path)})
        return dataclasses.replace(group, data=_placed(group.data, self._dir / "data"), model=model)


@dataclasses.dataclass
class _Slot:
    """One actor and the group it is running."""

    handle: Any
    device: str = ""
    group: WorkGroup | None = None
    remaining: dict[str, Job] = dataclasses.field(default_factory=dict)
    running: set[str] = dataclasses.field(default_factory=set)
    deadline: float = float("inf")
    ticket: int = (
        0  # one per group handed out: messages of an earlier one (a late end, a dead actor) are dropped
    )


class RayExecutor:
    """Work groups on Ray actors; the `Executor` protocol of `monitor.engine._executor`."""

    def __init__(
        self,
        *,
        address: str | None = None,
        gpus_per_worker: float = 1.0,
        cpus_per_worker: float = 1.0,
        max_workers: int | None = None,
        runtime_env: dict[str, Any] | None = None,
        cell_timeout: float = 3600.0,
        options: EngineOptions | None = None,
        cpu_only: bool = False,
    ) -> None:
        self._address = address
        self._client = bool(address and address.startswith("ray://"))  # Ray Client
        self._cpu_only = cpu_only  # `device: cpu`: CPU actors even on a cluster with GPUs
        self._gpus = gpus_per_worker
        self._cpus = cpus_per_worker
        self._max_workers = max_workers
        self._runtime_env = runtime_env
        self._cell_timeout = cell_timeout
        self._options = options or EngineOptions()
        self._slots: list[_Slot] = []
        self._actor_options: dict[str, Any] = {}
        self._actor_device = "cpu"
        self._started_ray = False
        self._cancelled = False
        self._crashes: dict[str, int] = {}
        self._files: dict[str, Any] = {}  # decoded-data key -> ObjectRef (this run)
        self._weights: dict[str, Any] = {}  # weights digest -> ObjectRef (this run)
        self._lock = threading.Lock()

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, *, wait: bool = True) -> list[str]:
        """Connect to (or start) Ray and start the actors; returns their devices.

        `wait=False` does nothing yet: connecting is quick, and the cluster may be down now and
        up by the first run (the daemon keeps serving and retries at each run).
        """
        if self._slots or not wait:
            return [s.device for s in self._slots]
        ray = _ray()
        if not ray.is_initialized():
            self._connect(ray)
        resources = ray.cluster_resources()
        gpus = float(resources.get("GPU", 0.0))
        if gpus >= self._gpus and not self._cpu_only:
            count = int(gpus // self._gpus)
            self._actor_options = {"num_gpus": self._gpus, "num_cpus": self._cpus}
            self._actor_device = "cuda"
        else:
            count = max(1, int(float(resources.get("CPU", 1.0)) // self._cpus))
            self._actor_options = {"num_cpus": self._cpus}
            self._actor_device = "cpu"
        if self._max_workers:
            count = min(count, self._max_workers)
        self._slots = [_Slot(self._new_actor(ray)) for _ in range(count)]
        try:
            hellos = ray.get([s.handle.hello.remote() for s in self._slots], timeout=_START_TIMEOUT)
        except Exception as exc:
            self.close()
            raise MonitorError(f"the Ray actors did not start: {failure_text(exc)}") from None
        for slot, (device, host) in zip(self._slots, hellos, strict=True):
            slot.device = f"{device}@{host}"
        log.info("ray: %d actor(s): %s", len(self._slots), ", ".join(s.device for s in self._slots))
        return [s.device for s in self._slots]

    def _connect(self, ray: Any) -> None:
        where = self._address or "a local Ray instance on 127.0.0.1"
        kwargs: dict[str, Any] = {
            "namespace": _NAMESPACE,
            "runtime_env": self._runtime_env,
            "configure_logging": False,
            "log_to_driver": True,
        }
        if self._address is None:
            # "local": a new instance of our own, never one that `ray start` left on this host.
            kwargs.update(address="local", include_dashboard=False, _node_ip_address="127.0.0.1")
            self._started_ray = True
        elif self._client:  # Ray Client takes fewer arguments (its logs stay on the cluster)
            kwargs = {"address": self._address, "namespace": _NAMESPACE, "runtime_env": self._runtime_env}
        else:
            kwargs["address"] = self._address
            problem = _unreachable(self._address)
            if problem is not None:  # (ray.init itself would retry for minutes)
                raise MonitorError(
                    f"cannot reach the Ray cluster ({where}): {problem}; check executor.address (or "
                    "RAY_ADDRESS with address: auto) and that the cluster is up"
                )
        try:
            ray.init(**kwargs)
        except Exception as exc:
            self._started_ray = False
            raise MonitorError(
                f"cannot reach the Ray cluster ({where}): {failure_text(exc)}; check executor.address "
                "(or RAY_ADDRESS with address: auto) and that the cluster is up"
            ) from None

    def _new_actor(self, ray: Any) -> Any:
        remote = ray.remote(max_restarts=0, max_concurrency=2)(_GroupActor)
        threads = int(self._cpus) if self._actor_device == "cpu" else 0
        return remote.options(**self._actor_options).remote(self._actor_device, self._options, threads)

    def close(self, timeout: float = 10.0) -> None:
        if not self._slots and not self._started_ray:
            return
        ray = _ray()
        for slot in self._slots:
            with contextlib.suppress(Exception):
                ray.kill(slot.handle)
        self._slots = []
        self._files.clear()
        self._weights.clear()
        if self._started_ray and ray.is_initialized():
            ray.shutdown()
            self._started_ray = False

    def cancel(self) -> None:
        self._cancelled = True
        for slot in list(self._slots):
            if slot.group is not None:
                with contextlib.suppress(Exception):
                    slot.handle.stop.remote()

    def abandon(self) -> None:
        self._cancelled = True
        if not self._slots:
            return
        ray = _ray()
        for slot in list(self._slots):
            with contextlib.suppress(Exception):
                ray.kill(slot.handle)

    # -- running ------------------------------------------------------------------------------

    def run(self, groups: Sequence[WorkGroup], on_result: Any) -> None:
        self.start()
        ray = _ray()
        self._crashes.clear()
        inbox: queue.Queue[tuple[_Slot, int, ToParent | BaseException | None]] = queue.Queue()
        todo: deque[WorkGroup] = deque(groups)
        try:
            while todo or any(s.group is not None for s in self._slots):
                if self._cancelled:
                    todo.clear()
                for slot in self._slots:
                    if slot.group is None and todo:
                        self._assign(ray, slot, todo.popleft(), inbox)
                busy = [s for s in self._slots if s.group is not None]
                if not busy:
                    continue
                wait = max(0.0, min(s.deadline for s in busy) - time.monotonic())
                try:
                    slot, ticket, message = inbox.get(timeout=min(wait, 1.0))
                except queue.Empty:
                    for slot in busy:
                        if time.monotonic() > slot.deadline:
                            self._replace(
                                ray,
                                slot,
                                f"timed out after {self._cell_timeout:.0f}s (executor.cell_timeout); "
                                "the Ray actor was replaced",
                                on_result,
                                todo,
                            )
                    continue
                if ticket != slot.ticket or slot.group is None:
                    continue  # about a group this slot no longer runs
                self._handle(ray, slot, message, on_result, todo)
        finally:
            self._files.clear()  # the object store may free them: the next run puts its own
            self._weights.clear()
        if self._cancelled:
            raise Cancelled("the run was cancelled (shutdown); finished fine-tunes are stored")

    def _handle(
        self,
        ray: Any,
        slot: _Slot,
        message: ToParent | BaseException | None,
        on_result: Any,
        todo: deque[WorkGroup],
    ) -> None:
        if isinstance(message, BaseException):
            self._replace(
                ray, slot, f"the Ray actor died while running it ({_died(message)})", on_result, todo
            )
        elif isinstance(message, Started):
            slot.running = set(message.keys)
            slot.deadline = time.monotonic() + self._cell_timeout
        elif isinstance(message, Result):
            trial = slot.remaining.pop(message.result.key, None)
            slot.running.discard(message.result.key)
            slot.deadline = time.monotonic() + self._cell_timeout
            if trial is not None:
                on_result(trial, message.result)
        elif isinstance(message, GroupFailed):
            for trial in slot.remaining.values():
                on_result(trial, failed_result(trial, message.message))
            slot.remaining.clear()
        elif isinstance(message, Done) or message is None:  # (None: the stream ended without Done)
            if not self._cancelled:
                for trial in slot.remaining.values():
                    on_result(
                        trial, failed_result(trial, "the actor finished the group without a result for it")
                    )
            slot.group, slot.remaining, slot.running = None, {}, set()
            slot.deadline = float("inf")

    def _assign(self, ray: Any, slot: _Slot, group: WorkGroup, inbox: queue.Queue[Any]) -> None:
        shipment = self._ship(ray, group)
        slot.group = group
        slot.remaining = {t.key: t for t in group.jobs}
        slot.running = set()
        slot.deadline = time.monotonic() + self._cell_timeout
        slot.ticket += 1
        ticket = slot.ticket
        if self._client:
            threading.Thread(
                target=self._poll,
                args=(ray, slot, ticket, shipment, inbox),
                name=f"pm-ray-{group.id}",
                daemon=True,
            ).start()
            return
        stream = slot.handle.run.options(num_returns="streaming").remote(
            shipment.group, shipment.files, shipment.weights
        )

        def pump() -> None:
            done = False
            try:
                for ref in stream:
                    message = ray.get(ref)
                    done = isinstance(message, Done)
                    inbox.put((slot, ticket, message))
            except BaseException as exc:  # the actor died, or the generator was cancelled
                inbox.put((slot, ticket, exc))
                return
            if not done:
                inbox.put((slot, ticket, None))

        threading.Thread(target=pump, name=f"pm-ray-{group.id}", daemon=True).start()

    def _poll(self, ray: Any, slot: _Slot, ticket: int, shipment: _Shipment, inbox: queue.Queue[Any]) -> None:
        """Ray Client: start the group, then fetch its messages in batches until `Done`."""
        try:
            ray.get(slot.handle.begin.remote(shipment.group, shipment.files, shipment.weights))
            while True:
                for message in ray.get(slot.handle.take.remote(_TAKE_WAIT)):
                    inbox.put((slot, ticket, message))
                    if isinstance(message, Done):
                        return
        except BaseException as exc:  # the actor died
            inbox.put((slot, ticket, exc))

    def _ship(self, ray: Any, group: WorkGroup) -> _Shipment:
        """The group with its snapshot files and weights in the object store (once per run each)."""
        decoded = group.data.decoded  # a derived dataset travels as its source's files
        key = decoded.key
        if key not in self._files:
            self._files[key] = ray.put(
                {p.name: p.read_bytes() for p in sorted(decoded.path.iterdir()) if p.is_file()}
            )
        weights = None
        if group.model.weights_path is not None:
            digest = group.version.digest
            if digest not in self._weights:
                self._weights[digest] = ray.put(_weights_path(group).read_bytes())
            weights = self._weights[digest]
        # The paths of this machine mean nothing on another node: the actor gets none of them
        # (it writes the shipped bytes to its own folder and points the group there).
        model = group.model
        if model.weights_path is not None:
            model = model.model_copy(update={"weights": model.weights_path.name})
        shipped = dataclasses.replace(group, data=_placed(group.data, _NOWHERE), model=model)
        return _Shipment(shipped, self._files[key], weights)

    def _replace(self, ray: Any, slot: _Slot, reason: str, on_result: Any, todo: deque[WorkGroup]) -> None:
        """Fail the trials that were running, requeue the rest of the group, start a new actor."""
        group = slot.group
        assert group is not None
        with contextlib.suppress(Exception):
            ray.kill(slot.handle)
        slot.ticket += 1
        if self._cancelled:
            slot.group, slot.remaining, slot.running = None, {}, set()
            slot.deadline = float("inf")
            slot.handle = self._new_actor(ray)
            return
        log.warning("work group %s: %s", group.id, reason)
        rest = recover(group, slot.remaining, slot.running, self._crashes, reason, on_result)
        if rest is not None:
            todo.appendleft(rest)
        slot.group, slot.remaining, slot.running = None, {}, set()
        slot.deadline = float("inf")
        slot.handle = self._new_actor(ray)


def _placed(data: PreparedData, folder: Path) -> PreparedData:
    """`data` with its entry in `folder` (and a derived dataset's source entry beside it)."""
    derivation = data.derivation
    if derivation is not None:
        source = dataclasses.replace(derivation.source, path=folder / derivation.source.key)
        derivation = dataclasses.replace(derivation, source=source)
    return dataclasses.replace(data, path=folder / data.key, derivation=derivation)


def _weights_path(group: WorkGroup) -> Path:
    assert group.model.weights_path is not None
    path = group.model.weights_path
    if not path.is_absolute() and group.config_dir is not None:
        path = group.config_dir / path
    return path


def _died(exc: BaseException) -> str:
    """A one-line reason from Ray's actor-death errors (their text runs to many lines)."""
    text = str(exc).strip().splitlines()
    first = next((line for line in text if line.strip()), type(exc).__name__)
    return f"{type(exc).__name__}: {first.strip()[:300]}"


def _unreachable(address: str) -> str | None:
    """Why the cluster at `address` cannot be reached (a TCP connect, 5 s at most), or None."""
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS", "")
        if not address or address == "auto":
            return None  # Ray looks for a cluster started on this machine itself
    host_port = address.removeprefix("ray://").rsplit("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        return None
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=5.0):
            return None
    except OSError as exc:
        return f"nothing answers at {host}:{port} ({exc.strerror or type(exc).__name__})"
