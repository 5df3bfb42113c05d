"""A real PostgreSQL for the tests, started once per test session (a pytest plugin).

Load it from tests/conftest.py with `pytest_plugins = ["tests._postgres"]`. Fixtures:

    postgres_url        (session)   a database made for this test session, dropped at its end
    postgres_fresh_url  (function)  an empty schema in that database, dropped after the test
    postgres_cluster    (function)  a throwaway server of the test's own, which it may stop and
                                    start again (`halt()`, `resume()`); `.url` is its database

Both are SQLAlchemy URLs (`postgresql+psycopg://…`). Where the server comes from:

1. `PM_TEST_DATABASE_URL` (any role that may create databases, else schemas, there): the session
   creates `pm_test_<hex>` on that server and drops it afterwards.
2. Otherwise the PostgreSQL server binaries (initdb, pg_ctl, postgres) from `PM_TEST_POSTGRES_BIN`,
   PATH, or /usr/lib/postgresql/<version>/bin: a throwaway cluster is initialised in a temporary
   folder, started on a free loopback port (its unix socket in that folder too), and stopped and
   deleted at the end of the session. PostgreSQL refuses to run as root, so under root the cluster
   runs as the `postgres` user, which is created (`useradd --system`) if it does not exist.
3. Otherwise the tests that need PostgreSQL are skipped, with a reason that says how to enable them.

`PM_TEST_POSTGRES=require` turns that skip into a failure (CI must not silently lose a backend);
`PM_TEST_POSTGRES=skip` skips them on purpose.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
from sqlalchemy import URL, make_url

__all__ = ["postgres_cluster", "postgres_fresh_url", "postgres_url"]

_HOW_TO_ENABLE = (
    "set PM_TEST_DATABASE_URL=postgresql+psycopg://user:password@host:port/database, or install the "
    "PostgreSQL server binaries (Debian: apt-get install postgresql; or set PM_TEST_POSTGRES_BIN to "
    "the folder holding initdb and pg_ctl)"
)


def _unavailable(why: str) -> NoReturn:
    message = f"PostgreSQL tests need a server: {why}; {_HOW_TO_ENABLE}"
    if os.environ.get("PM_TEST_POSTGRES") == "require":
        pytest.fail(f"{message} (PM_TEST_POSTGRES=require)", pytrace=False)
    pytest.skip(message)


def _libpq(url: URL) -> str:
    """The URL as a libpq connection string, for psycopg itself."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _execute(url: URL, *statements: str) -> None:
    import psycopg

    with psycopg.connect(_libpq(url), autocommit=True, connect_timeout=10) as connection:
        for statement in statements:
            connection.execute(statement.encode())


# -- a throwaway cluster -------------------------------------------------------------------------


def _find_bindir() -> Path | None:
    candidates: list[Path] = []
    if os.environ.get("PM_TEST_POSTGRES_BIN"):
        candidates.append(Path(os.environ["PM_TEST_POSTGRES_BIN"]))
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    candidates += [Path("/usr/local/pgsql/bin"), Path("/opt/homebrew/bin")]
    for folder in candidates:
        if all((folder / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return folder
    return None


def _server_account() -> pwd.struct_passwd | None:
    """The account the server runs as: None for ourselves, the `postgres` user when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "postgres"],
            capture_output=True,
            check=False,
        )
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        _unavailable("running as root, and no `postgres` user exists or can be created to run the server")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class _Cluster:
    """initdb + pg_ctl in a temporary folder, as the server account."""

    def __init__(self, bindir: Path, account: pwd.struct_passwd | None) -> None:
        self.bindir = bindir
        self.account = account
        self.root = Path(tempfile.mkdtemp(prefix="pm-test-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = _free_port()
        self.url = ""
        if account is not None:
            os.chown(self.root, account.pw_uid, account.pw_gid)

    def _run(self, *args: str) -> None:
        as_account: dict[str, Any] = {}
        if self.account is not None:
            as_account = {"user": self.account.pw_uid, "group": self.account.pw_gid, "extra_groups": []}
        result = subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            cwd=self.root,  # the server account may not be allowed into our working directory
            env={**os.environ, "LC_ALL": "C"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            **as_account,
        )
        if result.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{args[0]} failed ({result.returncode}) in {self.root}:\n"
                f"{result.stdout}\n{result.stderr}\n{log}"
            )

    def start(self) -> URL:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8")
        self.resume()
        return URL.create(
            "postgresql+psycopg", "postgres", host="127.0.0.1", port=self.port, database="postgres"
        )

    def resume(self) -> None:
        """Start the (initialised) server and wait until it takes connections."""
        # Durability is pointless for a cluster deleted in a minute: no fsync makes it much faster.
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -F "
            f"-c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o", options, "start"
        )

    def halt(self) -> None:
        """Stop the server at once (every connection is cut), keeping its data."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


# -- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _postgres_server() -> Iterator[URL]:
    """The URL of a server we may create databases on (a maintenance database)."""
    if os.environ.get("PM_TEST_POSTGRES") == "skip":
        pytest.skip("PostgreSQL tests skipped on purpose (PM_TEST_POSTGRES=skip)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("the psycopg driver is not installed (pip install 'psycopg[binary]')")
    external = os.environ.get("PM_TEST_DATABASE_URL")
    if external:
        url = make_url(external)
        yield url.set(drivername="postgresql+psycopg")
        return
    bindir = _find_bindir()
    if bindir is None:
        _unavailable("PM_TEST_DATABASE_URL is not set and no PostgreSQL server binaries were found")
    cluster = _Cluster(bindir, _server_account())
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture
def postgres_cluster() -> Iterator[_Cluster]:
    """A server of this test's own (never the shared one: the test stops and restarts it)."""
    if os.environ.get("PM_TEST_POSTGRES") == "skip":
        pytest.skip("PostgreSQL tests skipped on purpose (PM_TEST_POSTGRES=skip)")
    bindir = _find_bindir()
    if bindir is None:
        _unavailable("restarting a server needs the PostgreSQL server binaries (initdb, pg_ctl)")
    cluster = _Cluster(bindir, _server_account())
    try:
        cluster.url = cluster.start().render_as_string(hide_password=False)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def postgres_url(_postgres_server: URL) -> Iterator[str]:
    """A database of its own for this test session (dropped at the end), as a SQLAlchemy URL."""
    import psycopg

    name = f"pm_test_{uuid.uuid4().hex[:12]}"
    try:
        _execute(_postgres_server, f'CREATE DATABASE "{name}"')
    except psycopg.errors.InsufficientPrivilege:
        # A role without CREATEDB (a shared CI database): a schema of our own in the given database.
        _execute(_postgres_server, f'CREATE SCHEMA "{name}"')
        try:
            yield _with_search_path(_postgres_server, name).render_as_string(hide_password=False)
        finally:
            _execute(_postgres_server, f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        return
    try:
        yield _postgres_server.set(database=name).render_as_string(hide_password=False)
    finally:
        # FORCE: a store a failed test did not close must not keep the database alive.
        _execute(_postgres_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_fresh_url(postgres_url: str) -> Iterator[str]:
    """An empty schema in the session's database, first on the search path; dropped after the test."""
    session_url = make_url(postgres_url)
    schema = f"pm_t_{uuid.uuid4().hex[:12]}"
    _execute(session_url, f'CREATE SCHEMA "{schema}"')
    try:
        yield _with_search_path(session_url, schema).render_as_string(hide_password=False)
    finally:
        # A connection the test left open would block the drop forever; give up after a while
        # (the session's database goes at the end anyway).
        with contextlib.suppress(Exception):
            _execute(session_url, "SET lock_timeout = '10s'", f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _with_search_path(url: URL, schema: str) -> URL:
    return url.update_query_dict({"options": f"-csearch_path={schema}"})
