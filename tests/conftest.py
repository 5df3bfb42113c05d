"""Fixtures shared by the notifier tests: one HTTP client, and a real receiver on loopback."""

import pytest

from monitor.notifiers import new_http_client
from tests._receivers import Receiver

pytest_plugins = ["tests._postgres"]


@pytest.fixture
def client():
    with new_http_client() as shared:
        yield shared


@pytest.fixture
def receiver():
    with Receiver() as running:
        yield running
