"""The worker process loop: receive work groups over a pipe, run them, send results back."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from .._executor import EngineOptions
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
    """Serve groups until ("stop",) or the parent goes away. See `monitor.engine._executor`.

    `threads()`: the CPU threads this worker may use now (0: torch's default), read before each
    trial; the parent shares the cores among its busy CPU workers.
    """
    # Ctrl-C is the parent's to handle: it decides whether the running cell finishes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s [worker] %(message)s")
    if announce:
        try:
            devices = resolve_devices(device)
        except RuntimeError as exc:
            conn.send(("fatal", str(exc)))
            return
        conn.send(("hello", devices))
        device = devices[0]
    cache = ModelCache()

    def emit(message: tuple[Any, ...]) -> None:
        conn.send(message)

    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        if message[0] == "stop":
            return
        group = message[1]
        try:
            run_group(
                group, device, emit, cache=cache, options=options, should_stop=should_stop, threads=threads
            )
        except Exception as exc:
            text = str(exc) if _is_monitor_error(exc) else f"{type(exc).__name__}: {exc}"
            log.warning("work group %s cannot run: %s", group.id, text)
            conn.send(("error", text))
        conn.send(("done",))


def _is_monitor_error(exc: BaseException) -> bool:
    from ...errors import MonitorError

    return isinstance(exc, MonitorError)
