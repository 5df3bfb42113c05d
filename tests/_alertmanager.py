"""A real Alertmanager (Debian's `prometheus-alertmanager`) on loopback (a pytest plugin).

Loaded from tests/conftest.py (`pytest_plugins`). Fixture:

    alertmanager  (module)  the URL of an isolated Alertmanager (no gossip, a "null" receiver),
                            stopped after the module's last test

Skipped when the binary is missing, unless PM_TEST_ALERTMANAGER=require (CI sets it: there a
missing binary is a broken image, not a reason to skip). PM_ALERTMANAGER_BINARY names another one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests._services import free_port, wait_until

__all__ = ["alertmanager"]

BINARY = (
    os.environ.get("PM_ALERTMANAGER_BINARY")
    or shutil.which("prometheus-alertmanager")
    or ("/usr/bin/prometheus-alertmanager")
)
CONFIG = """\
route:
  receiver: "null"
receivers:
  - name: "null"
"""


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory):
    if not Path(BINARY).is_file():
        message = f"Alertmanager binary not found at {BINARY} (apt install prometheus-alertmanager)"
        if os.environ.get("PM_TEST_ALERTMANAGER") == "require":
            pytest.fail(message + "; PM_TEST_ALERTMANAGER=require")
        pytest.skip(message)
    folder = tmp_path_factory.mktemp("alertmanager")
    (folder / "alertmanager.yml").write_text(CONFIG)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (folder / "alertmanager.log").open("wb")
    process = subprocess.Popen(
        [
            BINARY,
            f"--config.file={folder / 'alertmanager.yml'}",
            f"--storage.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",  # no gossip: a single, isolated instance
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"alertmanager exited:\n{(folder / 'alertmanager.log').read_text()}")
            return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200

        wait_until(ready, timeout=30, every=0.05, what="Alertmanager /-/ready")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
