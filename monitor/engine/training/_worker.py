"""The worker process loop: receive work groups over a pipe, run them, send results back."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from multiprocessing.connection import Connection

from ...errors import DeviceError
from .._messages import Done, Fatal, GroupFailed, Hello, RunGroup, ToParent, failure_text
from .._options import EngineOptions
from ._device import resolve_devices
from ._group import ModelCache, run_group

__all__ = ["serve"]

log = logging.getLogger(__name__)


def serve(
    conn: Connection,
    device: str,
    announce: bool,
    options: EngineOptions | None = None,
    should_stop: Callable[[], bool] | None = None,
    threads: Callable[[], int] | None = None,
) -> None:
    """Serve `RunGroup`s until `Stop` or the parent goes away (the protocol: `engine._messages`).

    `threads()`: the CPU threads this worker may use now (0: torch's default), read before each
    trial; the parent shares the cores among its busy CPU workers.
    """
    # Ctrl-C is the parent's to handle: it decides whether the running cell finishes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s [worker] %(message)s")
    if announce:
        try:
            devices = resolve_devices(device)
        except DeviceError as exc:
            conn.send(Fatal(str(exc)))
            return
        conn.send(Hello(tuple(devices)))
        device = devices[0]
    cache = ModelCache()

    def emit(message: ToParent) -> None:
        conn.send(message)

    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        if not isinstance(message, RunGroup):
            return  # Stop
        group = message.group
        try:
            run_group(
                group, device, emit, cache=cache, options=options, should_stop=should_stop, threads=threads
            )
        except Exception as exc:
            text = failure_text(exc)
            log.warning("work group %s cannot run: %s", group.id, text)
            conn.send(GroupFailed(text))
        conn.send(Done())
