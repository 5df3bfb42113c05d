"""Weights from a real MLflow Model Registry: `models:/name@alias`, `/version`, `/stage`.

One `mlflow server` per module on loopback (SQLite backend, artifacts served by the server from
a local folder, the default `--serve-artifacts`), started with the module's first test and
stopped after its last. The tests register real torchvision resnet18 state_dicts the way a
training job would (a run artifact folder, then `create_model_version`), move aliases, and read
what the monitor fetched. Without mlflow the tests are skipped, unless PM_TEST_MLFLOW=require
(CI): then they fail, so a lost dependency cannot silently drop them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from monitor.errors import SourceError
from monitor.settings import ModelSpec
from monitor.sources import model_version
from monitor.sources._mlflow import mlflow_weights
from tests._services import REPO, free_port, wait_until

RESNET = "torchvision:resnet18"


def _mlflow() -> ModuleType:
    """mlflow (with its server), or a skip that says how to get it (a failure under require)."""
    try:
        import flask  # noqa: F401  (the server's; mlflow-skinny has the client only)
        import mlflow
        import mlflow.artifacts
    except ImportError as exc:
        message = f"the MLflow registry tests need mlflow with its server ({exc}): pip install -e '.[test]'"
        if os.environ.get("PM_TEST_MLFLOW") == "require":
            pytest.fail(f"{message} (PM_TEST_MLFLOW=require)", pytrace=False)
        pytest.skip(f"{message}; PM_TEST_MLFLOW=require fails instead")
    return mlflow


def _spec(weights: str, architecture: str = RESNET) -> ModelSpec:
    return ModelSpec(name="r18", architecture=architecture, weights=weights)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- the server ------------------------------------------------------------------------------------


@dataclass
class MlflowServer:
    """A running `mlflow server`; `register` publishes files as a new version of a model."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path
    workdir: Path
    ready: bool = False
    runs: int = 0

    def wait_ready(self) -> MlflowServer:
        if not self.ready:

            def healthy() -> bool:
                if self.process.poll() is not None:
                    raise AssertionError(f"mlflow server exited:\n{self.log.read_text()[-3000:]}")
                return httpx.get(f"{self.url}/health", timeout=2).status_code == 200

            # Cold start is slow (imports, then the SQLite schema's migrations): 20 s on 2 CPUs.
            wait_until(healthy, timeout=120, every=0.25, what=f"mlflow server (log: {self.log})")
            self.ready = True
        return self

    def client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.url, registry_uri=self.url)

    def register(self, model: str, files: dict[str, Path | bytes]) -> str:
        """Log `files` as a run's `weights/` folder and register it as the next version of `model`.

        This is what the README tells users to do: `mlflow.register_model("runs:/…")` is for
        logged MLflow models only in MLflow 3, so a plain folder goes through create_model_version.
        """
        client = self.client()
        run = client.create_run("0")
        self.runs += 1
        folder = self.workdir / f"run-{self.runs}" / "weights"
        folder.mkdir(parents=True)
        for name, content in files.items():
            target = folder / name
            if isinstance(content, Path):
                target.write_bytes(content.read_bytes())
            else:
                target.write_bytes(content)
        client.log_artifacts(run.info.run_id, str(folder), artifact_path="weights")
        client.set_terminated(run.info.run_id)
        if not client.search_registered_models(filter_string=f"name = '{model}'"):
            client.create_registered_model(model)
        version = client.create_model_version(
            model, source=f"runs:/{run.info.run_id}/weights", run_id=run.info.run_id
        )
        return str(version.version)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """Start the server (not waiting: the weights are built meanwhile); stop it with its workers."""
    _mlflow()
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    log = root / "server.log"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job workers: faster start
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}"]
    command += ["--artifacts-destination", str(root / "artifacts"), "--workers", "1"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=root,
            start_new_session=True,  # its uvicorn worker is a child: stop the whole group
        )
    server = MlflowServer(f"http://127.0.0.1:{port}", process, log, root)
    try:
        yield server
    finally:
        _stop_group(process)


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group, then SIGKILL whatever outlived it (a stuck worker)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(20)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


@pytest.fixture
def registry(mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch) -> MlflowServer:
    """The server, and MLFLOW_TRACKING_URI pointing at it (as a deployment sets it)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    return mlflow_server.wait_ready()


@dataclass
class Weights:
    v1: Path  # a resnet18 state_dict, torch.save
    v2: Path  # another resnet18 state_dict, safetensors


@pytest.fixture(scope="module")
def resnet_weights(mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory) -> Weights:
    import torch
    import torchvision
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    first = folder / "resnet18.pt"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), first)
    torch.manual_seed(1)
    second = folder / "resnet18.safetensors"
    save_file(
        {k: v.contiguous() for k, v in torchvision.models.resnet18(weights=None).state_dict().items()}, second
    )
    return Weights(first, second)


@pytest.fixture
def downloads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every artifact download the monitor starts (a counting wrapper around mlflow's own)."""
    mlflow = _mlflow()
    calls: list[str] = []
    real: Callable[..., str] = mlflow.artifacts.download_artifacts

    def counting(*args: Any, **kwargs: Any) -> str:
        calls.append(str(kwargs.get("artifact_uri") or args[0]))
        return real(*args, **kwargs)

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", counting)
    return calls


_DAEMON_FETCH = """
import json, sys
from pathlib import Path
from monitor.settings import ModelSpec
from monitor.sources._mlflow import mlflow_weights
spec = ModelSpec(name="r18", architecture="torchvision:resnet18", weights=sys.argv[1])
path, digest, label = mlflow_weights(spec, state_dir=Path(sys.argv[2]))
torch = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision"))
print(json.dumps({"path": str(path), "digest": digest, "label": label, "torch": torch}))
"""


def _fetch_in_a_daemon_process(uri: str, state_dir: Path) -> dict[str, Any]:
    """mlflow_weights in a fresh process, as the daemon runs it: it must never import torch."""
    done = subprocess.run(
        [sys.executable, "-c", _DAEMON_FETCH, uri, str(state_dir)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# -- fetching, memoising, moving the alias -----------------------------------------------------------


@pytest.mark.slow
def test_an_alias_is_fetched_once_and_follows_the_registry(
    resnet_weights: Weights, registry: MlflowServer, downloads: list[str], tmp_path: Path
) -> None:
    from monitor.models._weights import read_state_dict

    client = registry.client()
    assert registry.register("r18-alias", {"resnet18.pt": resnet_weights.v1}) == "1"
    client.set_registered_model_alias("r18-alias", "champion", "1")
    state = tmp_path / "state"

    fetched = _fetch_in_a_daemon_process("models:/r18-alias@champion", state)

    assert fetched["torch"] == []
    path, digest = Path(fetched["path"]), fetched["digest"]
    assert (digest, fetched["label"]) == (_sha256(resnet_weights.v1), "v1")
    assert path == state / "weights" / digest / "resnet18.pt"
    assert read_state_dict(path).keys() == read_state_dict(resnet_weights.v1).keys()  # loads weights-only
    before = path.stat()

    # The next poll: one registry request, no download, the same file untouched.
    assert mlflow_weights(_spec("models:/r18-alias@champion"), state_dir=state) == (path, digest, "v1")
    assert downloads == []
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert not [p.name for p in (state / "weights").iterdir() if p.name.startswith(".")]  # no temp left

    # What the daemon's poll compares (DESIGN: a new version behind the alias triggers a run).
    from monitor.daemon._fingerprint import changes, inputs_fingerprint
    from monitor.settings import settings_from_mapping

    (tmp_path / "data").mkdir()
    settings = settings_from_mapping(
        {
            "state_dir": str(state),
            "models": [
                {
                    "name": "r18",
                    "architecture": "torchvision:resnet18",
                    "weights": "models:/r18-alias@champion",
                }
            ],
            "tasks": [{"name": "t", "datasets": [{"name": "d", "source": "data"}]}],
            "strategies": [{"name": "lin", "mode": "linear", "lr": 0.1, "epochs": 1}],
        },
        base_dir=tmp_path,
    )
    polled = inputs_fingerprint(settings)
    assert inputs_fingerprint(settings) == polled and downloads == []

    # A new version and the alias moved: a new digest and label; the worker's file is .safetensors.
    assert registry.register("r18-alias", {"resnet18.safetensors": resnet_weights.v2}) == "2"
    client.set_registered_model_alias("r18-alias", "champion", "2")
    moved = inputs_fingerprint(settings)
    assert changes(polled, moved) == f"new model r18: weights {_sha256(resnet_weights.v2)[:12]}"
    path2, digest2, label2 = mlflow_weights(_spec("models:/r18-alias@champion"), state_dir=state)
    assert (digest2, label2) == (_sha256(resnet_weights.v2), "v2") and digest2 != digest
    assert path2 == state / "weights" / digest2 / "resnet18.safetensors"
    assert downloads == ["models:/r18-alias/2"]
    version = model_version(_spec("models:/r18-alias@champion"), state_dir=state)
    assert (version.digest, version.weights, version.version) == (digest2, path2, f"v2-{digest2[:8]}")

    # A number and a stage name the same immutable versions: nothing more is downloaded.
    assert mlflow_weights(_spec("models:/r18-alias/1"), state_dir=state) == (path, digest, "v1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # stages are deprecated upstream, still served
        client.transition_model_version_stage("r18-alias", "2", "Production")
    assert mlflow_weights(_spec("models:/r18-alias/Production"), state_dir=state)[1:] == (digest2, "v2")
    assert mlflow_weights(_spec("models:/r18-alias/production"), state_dir=state)[1:] == (digest2, "v2")
    assert mlflow_weights(_spec("models:/r18-alias/latest"), state_dir=state)[1:] == (digest2, "v2")
    assert len(downloads) == 1

    # A cached file that is gone (pruned, deleted by hand) is fetched again, not trusted.
    path2.unlink()
    assert mlflow_weights(_spec("models:/r18-alias@champion"), state_dir=state) == (path2, digest2, "v2")
    assert len(downloads) == 2 and _sha256(path2) == digest2


@pytest.mark.slow
def test_a_model_registered_again_under_its_name_is_not_served_from_the_old_cache(
    registry: MlflowServer, tmp_path: Path
) -> None:
    registry.register("again", {"w.safetensors": b"old"})
    _, old, _ = mlflow_weights(_spec("models:/again/1"), state_dir=tmp_path)
    registry.client().delete_registered_model("again")
    registry.register("again", {"w.safetensors": b"new"})  # numbering restarts: version 1 again

    path, new, label = mlflow_weights(_spec("models:/again/1"), state_dir=tmp_path)

    assert (label, path.read_bytes()) == ("v1", b"new") and new != old


# -- what a version must hold ----------------------------------------------------------------------


@pytest.mark.slow
def test_the_weights_file_is_chosen_by_the_documented_rule(registry: MlflowServer, tmp_path: Path) -> None:
    state = tmp_path / "state"
    # mlflow.pytorch.log_state_dict's state_dict.pth wins over other pickles (a checkpoint, say).
    registry.register("rule-pick", {"state_dict.pth": b"weights", "optimizer.pt": b"opt", "notes.md": b""})
    path, _, _ = mlflow_weights(_spec("models:/rule-pick/1"), state_dir=state)
    assert (path.name, path.read_bytes()) == ("state_dict.pth", b"weights")
    # A .safetensors file wins over any pickle; hidden files never count.
    registry.register(
        "rule-pick", {"model.safetensors": b"st", "extra.pt": b"x", ".hidden.safetensors": b"h"}
    )
    assert mlflow_weights(_spec("models:/rule-pick/2"), state_dir=state)[0].name == "model.safetensors"

    registry.register("rule-none", {"README.md": b"", "config.json": b"{}"})
    with pytest.raises(SourceError) as none:
        mlflow_weights(_spec("models:/rule-none/1"), state_dir=state)
    message = str(none.value)
    assert "models:/rule-none/1 (v1) holds no weights file" in message
    assert "found README.md, config.json" in message and "log_state_dict" in message

    registry.register("rule-two", {"a.pt": b"a", "b.pth": b"b"})
    with pytest.raises(SourceError, match=r"several weights files: a\.pt, b\.pth; register a folder"):
        mlflow_weights(_spec("models:/rule-two/1"), state_dir=state)
    assert not [p for p in (state / "weights").iterdir() if p.name.startswith(".")]  # temp folders gone


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.:FutureWarning")  # TorchScript is deprecated, still loads
def test_a_pytorch_flavour_model_is_refused_unless_it_is_torchscript(
    registry: MlflowServer, tmp_path: Path
) -> None:
    import mlflow.pytorch
    import torch

    with mlflow.start_run():
        # serialization_format="pickle": the whole module pickled into data/model.pth (MLflow 3's
        # default, "pt2", writes a torch.export program instead, refused the same way).
        mlflow.pytorch.log_model(
            torch.nn.Linear(4, 2),
            name="model",
            registered_model_name="flavour-pickle",
            serialization_format="pickle",
            pip_requirements=[],  # no dependency inference: it would load the model in a subprocess
        )
        mlflow.pytorch.log_model(
            torch.jit.script(torch.nn.Linear(4, 2)),
            name="scripted",
            registered_model_name="flavour-scripted",
            serialization_format="pickle",
            pip_requirements=[],
        )

    with pytest.raises(SourceError) as refused:
        mlflow_weights(_spec("models:/flavour-pickle/1"), state_dir=tmp_path)
    message = str(refused.value)
    assert "models:/flavour-pickle/1 (v1) is an MLflow pytorch-flavour model" in message
    assert "data/model.pth (the whole module, pickled)" in message and "weights-only" in message
    assert "mlflow.pytorch.log_state_dict(model.state_dict()" in message and "create_model_version" in message

    # A scripted module's data/model.pth is a TorchScript archive: architecture torchscript loads it.
    path, _, label = mlflow_weights(_spec("models:/flavour-scripted/1", "torchscript"), state_dir=tmp_path)
    assert (path.name, label) == ("model.pth", "v1")
    assert isinstance(torch.jit.load(str(path)), torch.jit.ScriptModule)


# -- errors that say what to check -----------------------------------------------------------------


@pytest.mark.slow
def test_unknown_models_aliases_versions_and_stages_say_what_to_check(
    registry: MlflowServer, tmp_path: Path
) -> None:
    registry.register("known", {"w.safetensors": b"w"})
    registry.client().set_registered_model_alias("known", "champion", "1")

    def error(uri: str) -> str:
        with pytest.raises(SourceError) as caught:
            mlflow_weights(_spec(uri), state_dir=tmp_path)
        return str(caught.value)

    assert error("models:/unknown@champion") == (
        "model r18: models:/unknown@champion: the registry has no registered model unknown; check the name "
        "in models[].weights (MLflow UI → Models, or MlflowClient().search_registered_models())"
    )
    message = error("models:/known@chmpion")
    assert "registered model known has no alias chmpion (its aliases: champion)" in message
    assert "set_registered_model_alias('known', 'chmpion', <version>)" in message
    assert "registered model known has no version 7" in error("models:/known/7")
    assert "no version of registered model known is in stage Staging" in error("models:/known/Staging")
    assert "models:/known@<alias>" in error("models:/known/Staging")
    assert "Prod is neither a version number nor an MLflow stage" in error("models:/known/Prod")


def test_a_registry_that_is_down_is_a_source_error_without_secrets(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _mlflow()
    url = f"http://monitor:hunter2@127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "tok-secret-1234")

    started = time.monotonic()
    with pytest.raises(SourceError) as first:
        mlflow_weights(_spec("models:/r18@champion"), state_dir=tmp_path)
    elapsed = time.monotonic() - started
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the next poll, without the wait
    with pytest.raises(SourceError) as second:
        mlflow_weights(_spec("models:/r18@champion"), state_dir=tmp_path)

    message = str(first.value)
    assert message.startswith(
        "model r18: models:/r18@champion: cannot reach the MLflow registry at http://127.0.0.1:"
    )
    assert "check MLFLOW_TRACKING_URI and that the server is up" in message
    assert "hunter2" not in message and "tok-secret" not in message and "monitor@" not in message
    assert str(second.value) == message  # the same at every poll: the daemon compares it to see a change
    assert elapsed < 20  # bounded retries: MLflow's own defaults would take about four minutes


def test_without_a_tracking_uri_nothing_is_guessed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _mlflow()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        SourceError, match="MLFLOW_TRACKING_URI is not set; set it in the daemon's environment"
    ):
        mlflow_weights(_spec("models:/r18@champion"), state_dir=tmp_path / "state")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no mlflow.db, no mlruns/ made on the side


def test_without_mlflow_installed_the_error_says_which_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` now raises ImportError
    with pytest.raises(SourceError) as caught:
        mlflow_weights(_spec("models:/r18@champion"), state_dir=tmp_path)
    assert str(caught.value) == (
        "model r18: weights models:/r18@champion are in an MLflow registry, but mlflow cannot be imported; "
        "pip install 'persistence-monitor[mlflow]'"
    )
