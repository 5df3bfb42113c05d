"""`serve`: the daemon and its HTTP server in one process, and a clean exit on SIGTERM/SIGINT.

SIGTERM/SIGINT -> the HTTP server stops accepting, the scheduler stops, the running
fine-tune finishes (or is abandoned after executor.shutdown_grace), workers exit,
the store closes, exit code 0. The interrupted run is resumed at the next start.
A second SIGINT during the grace period abandons at once.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Iterator
from types import FrameType

import uvicorn
from apscheduler.triggers.interval import IntervalTrigger
from prometheus_client import CollectorRegistry

from ..api import create_app
from ..daemon import Daemon
from ..engine import build_executor
from ..notifiers import build_notifiers, new_http_client
from ..settings import Settings
from ..store import Store

__all__ = ["serve"]

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn, minus its habit of re-raising the signal after shutdown (we exit 0 instead)."""

    def __init__(self, config: uvicorn.Config, on_signal: Callable[[int], None]) -> None:
        super().__init__(config)
        self._on_signal = on_signal

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        def handler(sig: int, frame: FrameType | None) -> None:
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            self.should_exit = True
            self._on_signal(sig)

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)


def serve(settings: Settings, *, feed: Callable[[], None] | None = None, feed_every: float = 180.0) -> int:
    """Run the daemon until SIGTERM/SIGINT; returns the exit code."""
    registry = CollectorRegistry(auto_describe=True)
    store = Store.open(settings.resolved_database_url)
    executor = build_executor(settings)
    client = new_http_client()
    notifiers = build_notifiers(settings.alerts.notifiers, client)
    daemon = Daemon(settings, store, executor, registry=registry, notifiers=notifiers)
    if feed is not None:
        daemon.add_job(feed, IntervalTrigger(seconds=feed_every), "demo-feed")
    app = create_app(controller=daemon, store=store, settings=settings, registry=registry)
    config = uvicorn.Config(
        app,
        host=settings.server.host,
        port=settings.server.port,
        log_config=None,  # our logging, not uvicorn's
        access_log=False,  # a scrape every few seconds would drown the log
        lifespan="off",
    )
    signals: list[int] = []
    server = _Server(config, signals.append)
    daemon.start()
    log.info("serving on http://%s:%d (metrics at /metrics)", settings.server.host, settings.server.port)
    try:
        server.run()
    finally:
        grace = 0.0 if server.force_exit else settings.executor.shutdown_grace
        daemon.stop(grace)
        client.close()
        store.close()
    if not server.started and not signals:
        log.error(
            "the HTTP server could not start on %s:%d (port in use?)",
            settings.server.host,
            settings.server.port,
        )
        return 1
    name = signal.Signals(signals[0]).name if signals else "shutdown"
    log.info("stopped after %s", name)
    print(f"persistence-monitor stopped ({name})", file=sys.stderr)
    return 0
