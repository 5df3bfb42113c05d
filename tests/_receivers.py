"""Real HTTP receivers on loopback for the notifier tests: they record requests and fail on cue.

A `Receiver` is a `ThreadingHTTPServer` on 127.0.0.1. Every request is recorded (method, path,
headers, body); the answer is the next scripted `Reply` if any (`fail_next`), else the default
status. It can be stopped ("down") and started again on the same port ("back").
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests._services import free_port


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0  # seconds to wait before answering (a slow receiver: client timeouts)


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    status: int  # what the receiver answered

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """Records every request; answers scripted replies first, then `default`."""

    def __init__(self, *, default: Reply | None = None, port: int | None = None) -> None:
        self.default = default or Reply()
        self.port = port or free_port()
        self.requests: list[Recorded] = []
        self._script: list[Reply] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail_next(self, count: int, status: int = 503, **reply: Any) -> Receiver:
        with self._lock:
            self._script.extend(Reply(status=status, **reply) for _ in range(count))
        return self

    def accepted(self) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if 200 <= r.status < 300]

    def _next_reply(self) -> Reply:
        with self._lock:
            return self._script.pop(0) if self._script else self.default

    def _record(self, entry: Recorded) -> None:
        with self._lock:
            self.requests.append(entry)

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                reply = receiver._next_reply()
                if reply.delay:
                    time.sleep(reply.delay)
                receiver._record(
                    Recorded(
                        method=self.command,
                        path=self.path,
                        headers={k.lower(): v for k, v in self.headers.items()},
                        body=body,
                        status=reply.status,
                    )
                )
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("content-length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except OSError:  # the client gave up (a timeout test)
                    pass

            def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def alert_event(kind: str = "firing", **overrides: Any) -> dict[str, Any]:
    """An event document as the alert engine writes it (`monitor.alerts.event_document`)."""
    document: dict[str, Any] = {
        "id": uuid.uuid4().hex,
        "kind": kind,
        "model": "resnet18-prod",
        "alert": "PersistenceDrop",
        "rule_kind": "drop",
        "severity": "warning",
        "value": 0.81,
        "baseline": 0.86,
        "threshold": 0.03,
        "summary": "P(M) of resnet18-prod dropped 0.050 below its baseline (rolling median of 7 runs)",
        "description": "longer text",
        "run_id": uuid.uuid4().hex,
        "model_version": "3f0c1a2b4d5e",
        "episode": "e" * 32,
        "started_at": "2026-11-29T06:00:00+00:00",
        "at": "2026-11-29T06:10:00+00:00",
        "ends_at": "2026-11-29T06:10:00+00:00" if kind == "resolved" else None,
        "contributors": [
            {
                "task": "defect-type",
                "dataset": "line-a",
                "strategy": "full",
                "snapshot": "2026-11-29T06",
                "before": 0.91,
                "after": 0.80,
                "contribution": -0.0275,
            },
            {
                "task": "defect-type",
                "dataset": "line-b",
                "strategy": "linear-lr0.1",
                "snapshot": "2026-11-29T06",
                "before": 0.88,
                "after": 0.86,
                "contribution": -0.005,
            },
        ],
        "status_url": "http://127.0.0.1:9775/",
    }
    document.update(overrides)
    return document
