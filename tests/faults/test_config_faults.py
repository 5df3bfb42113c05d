"""Hostile configuration: an empty API token, receiver URLs, JSON overrides. Real processes, real exits.

check-config, run-once and serve read one schema, so they must refuse the same configurations,
and refuse them before any work (no grid resolved, no store created).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from monitor.api import create_app
from monitor.settings import settings_from_mapping
from monitor.store import Store
from tests._workspace import write_config

REPO = Path(__file__).resolve().parents[2]
COMMANDS = (["check-config"], ["run-once"], ["serve"])


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def workspace(tmp_path: Path, **sections: object) -> Path:
    (tmp_path / "src").mkdir(exist_ok=True)
    (tmp_path / "w.safetensors").write_bytes(b"x")
    document = {
        "state_dir": "state",
        "models": [{"name": "m", "architecture": "torchvision:resnet18", "weights": "w.safetensors"}],
        "tasks": [{"name": "t", "datasets": [{"name": "d", "source": "src"}]}],
        "strategies": [{"name": "s", "mode": "linear", "lr": 0.1, "epochs": 1}],
        **sections,
    }
    return write_config(tmp_path / "c.yaml", document)


def refused_by_all(
    config: Path, env: dict[str, str] | None = None, commands: tuple[list[str], ...] = COMMANDS
) -> list[str]:
    """Run every command on `config`; each must exit 2 before touching the state folder."""
    outputs = []
    for command in commands:
        result = cli(*command, "--config", str(config), cwd=config.parent, env=env)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        assert not (config.parent / "state").exists(), f"{command[0]} did work before refusing"
        outputs.append(result.stderr + result.stdout)
    return outputs


@pytest.mark.parametrize(
    ("where", "token"),
    [("file", ""), ("file", "   "), ("env", ""), ("env", "tok-SECRET-1\n")],
)
@pytest.mark.slow  # real check-config, run-once and serve processes
def test_an_empty_or_padded_api_token_is_a_config_error_everywhere(tmp_path, where, token):
    if where == "file":
        config, env = workspace(tmp_path, server={"api_token": token}), None
    else:
        config, env = workspace(tmp_path), {"PM_SERVER__API_TOKEN": token}
    # Every command on the first case; the others share the schema (check-config is enough).
    commands = COMMANDS if (where, token) == ("file", "") else COMMANDS[:1]
    for output in refused_by_all(config, env, commands):
        assert "server.api_token: " in output
        assert "SECRET" not in output


def test_an_empty_bearer_credential_never_matches(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "w.safetensors").write_bytes(b"x")
    settings = settings_from_mapping(
        {
            "server": {"api_token": "a-real-token"},
            "models": [{"name": "m", "architecture": "torchvision:resnet18", "weights": "w.safetensors"}],
            "tasks": [{"name": "t", "datasets": [{"name": "d", "source": "src"}]}],
            "strategies": [{"name": "s", "mode": "linear", "lr": 0.1, "epochs": 1}],
        },
        base_dir=tmp_path,
    )
    # Even a token that got past the schema (a programmatic caller) is never matched by "".
    emptied = settings.model_copy(
        update={"server": settings.server.model_copy(update={"api_token": SecretStr("")})}
    )

    class Controller:
        def request(self, trigger: str) -> tuple[str, bool]:
            raise AssertionError("an unauthorised call reached the daemon")

        def health(self):
            return True, {}

        def ready(self):
            return True, {}

    store = Store.open(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        for current in (settings, emptied):
            client = TestClient(
                create_app(
                    controller=Controller(), store=store, settings=current, registry=CollectorRegistry()
                )
            )
            for header in ("Bearer", "Bearer ", "Bearer    ", "bearer \t"):
                answer = client.post("/api/v1/runs", headers={"Authorization": header})
                assert answer.status_code == 401, (header, answer.status_code)
    finally:
        store.close()


@pytest.mark.slow  # real check-config, run-once and serve processes
def test_check_config_refuses_the_notifier_urls_serve_and_run_once_refuse(tmp_path):
    notifiers = [
        {"name": "hook", "kind": "webhook", "url": "not a url"},
        {"name": "am", "kind": "alertmanager", "url": "http://am:notaport"},
        {"name": "chat", "kind": "slack", "url": "hooks.slack.com/services/T/B/SLACKSECRET"},
        {"name": "signed", "kind": "webhook", "url": "https://h.example", "secret": "whsec_!!SECRET"},
    ]
    config = workspace(tmp_path, alerts={"notifiers": notifiers})
    for output in refused_by_all(config):
        assert "alerts.notifiers[0].url: expected an http:// or https:// URL" in output
        assert "alerts.notifiers[1].url: not a valid URL" in output
        assert "alerts.notifiers[2].url: expected an http:// or https:// URL" in output
        assert "alerts.notifiers[3].secret: the webhook secret is not 'whsec_' followed by base64" in output
        assert "SECRET" not in output and "configuration ok" not in output


@pytest.mark.slow  # real check-config, run-once and serve processes
def test_a_json_override_that_is_not_json_names_its_own_variable(tmp_path):
    config = workspace(tmp_path)
    env = {"PM_ALERTS__NOTIFIERS": "[{name: x, kind: log}]", "PM_SEEDS": "0,1"}
    for output in refused_by_all(config, env, COMMANDS[:2]):
        assert "alerts.notifiers: the PM_ALERTS__NOTIFIERS environment variable must hold JSON" in output
        assert (
            "seeds: the PM_SEEDS environment variable must hold JSON here (e.g. PM_SEEDS='[0, 1]')" in output
        )
        assert "PM_ALERTS environment" not in output
