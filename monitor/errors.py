"""The one exception tree of persistence-monitor.

Third-party errors (torch, PIL, SQLAlchemy, httpx, pydantic) are translated at the boundary into
one of these, with a message that says what is wrong *and* what the user should do about it.
Messages never contain secret values.

    MonitorError
    ├── ConfigError              bad configuration or usage            (CLI exit code 2)
    ├── SourceError              a snapshot source cannot be listed or read
    │   └── SnapshotRejected     a snapshot is unusable (reason code + explanation)
    ├── ModelError               a model cannot be built or its weights do not fit
    ├── DataError                a decoded-data cache file is unusable
    ├── StoreError               the database cannot be reached or migrated
    │   └── StoreGone            its SQLite file was deleted or replaced under the process
    ├── DeviceError              the configured device is not there (a worker cannot start)
    ├── CellError                one fine-tune cannot run as its strategy says (it becomes a
    │                            `failed` cell; never raised past the executor)
    ├── DeliveryError            one attempt to deliver a notification failed (retryable or not)
    └── Cancelled                the run was stopped on purpose (shutdown); it is resumed later
        └── RunTakenOver         another daemon leads now and has taken the run over (HA)

Everything persistence-monitor raises on purpose is one of these (a test holds every public
error class to it); anything else reaching a user is a bug.
"""

from __future__ import annotations

__all__ = [
    "Cancelled",
    "CellError",
    "ConfigError",
    "DataError",
    "DeliveryError",
    "DeviceError",
    "ModelError",
    "MonitorError",
    "RunTakenOver",
    "SnapshotRejected",
    "SourceError",
    "StoreError",
    "StoreGone",
]


class MonitorError(Exception):
    """Root of every error persistence-monitor raises on purpose."""


class ConfigError(MonitorError):
    """The configuration (or the command line) is invalid.

    `problems` holds one `(field_path, message)` pair per problem so that every mistake in a file
    is reported at once, e.g. `("tasks[0].datasets[1].source", "no such directory: /srv/x")`.
    """

    def __init__(self, problems: list[tuple[str, str]], *, origin: str | None = None) -> None:
        self.problems = problems
        self.origin = origin
        super().__init__(self.render())

    def render(self) -> str:
        head = f"invalid configuration in {self.origin}" if self.origin else "invalid configuration"
        lines = [f"  {path}: {message}" if path else f"  {message}" for path, message in self.problems]
        return "\n".join([head + ":", *lines])


class SourceError(MonitorError):
    """A snapshot source cannot be listed, fetched or read."""


class SnapshotRejected(SourceError):
    """A snapshot exists but cannot be used; the last good snapshot stays in use.

    `reason` is a short, bounded code (used as a metric label); the message explains it.
    """

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class ModelError(MonitorError):
    """A model cannot be built, or its weights do not fit its architecture."""


class DataError(MonitorError):
    """Decoded data (the uint8 tensor cache) is missing or unreadable."""


class StoreError(MonitorError):
    """The result store cannot be opened, migrated or written."""


class StoreGone(StoreError):
    """The SQLite file this process opened was deleted or replaced: nothing more may be written."""


class DeviceError(MonitorError):
    """The configured device (`device: cuda:1`, …) is not there."""


class CellError(MonitorError):
    """One fine-tune could not run. The executor turns it into a `failed` cell with this message."""


class DeliveryError(MonitorError):
    """One attempt to deliver a notification failed.

    `retryable` says whether the same request may succeed later (timeouts, connection errors,
    408, 429, 5xx); `retry_after` is the receiver's own wish in seconds (`Retry-After`), if any;
    `status` is the HTTP status when there was a response. The message is safe to log and to
    store: it names the destination by a redacted URL and never contains a secret.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status


class Cancelled(MonitorError):
    """A run was stopped on purpose (the daemon is shutting down). It stays resumable."""


class RunTakenOver(Cancelled):
    """Another daemon took the lead and the run over (HA): this one must not write its outcome.

    Raised by `Store.finish_run(..., owner=)` when the run's owner is no longer the caller, and
    by a daemon that lost its lease mid-run. The new leader resumes and finishes the run.
    """
