"""Fixtures shared by several test modules.

Here: the notifier tests' HTTP client and a real receiver on loopback. From the plugins below:
PostgreSQL (tests/_postgres.py); the store backends `url` and `store` (tests/_store.py); a real
Alertmanager (tests/_alertmanager.py); a real S3 API (tests/_s3.py); the pipeline's `workspace`
(tests/_pipeline.py). A module that defines a fixture of the same name uses its own.
"""

import pytest

from monitor.notifiers import new_http_client
from tests._receivers import Receiver

pytest_plugins = ["tests._postgres", "tests._store", "tests._alertmanager", "tests._pipeline", "tests._s3"]


@pytest.fixture
def client():
    with new_http_client() as shared:
        yield shared


@pytest.fixture
def receiver():
    with Receiver() as running:
        yield running
