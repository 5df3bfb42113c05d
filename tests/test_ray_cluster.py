"""The Ray executor on a real two-node Ray cluster (both nodes on 127.0.0.1).

The head has no CPU for work, so every actor lands on the second node. The group reaches it
with nothing of the daemon's disk: data and weights through the object store (deleted here
before the run), the model code through `runtime_env` (a `working_dir` of its own).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from importlib import import_module
from pathlib import Path

import pytest

from monitor.engine import EngineOptions, InlineExecutor
from tests._engine import LINEAR, PARTIAL, engine_workspace, group, run
from tests._services import REPO, free_port
from tests._workspace import write_tiny_cnn

ray = pytest.importorskip("ray")
from monitor.engine._ray import RayExecutor  # noqa: E402

pytestmark = pytest.mark.slow

OPTIONS = EngineOptions(batch_finetunes="never", precision="fp32")


@pytest.fixture(scope="module")
def two_nodes():
    """A head (0 CPUs: it schedules, it runs nothing) and a worker node with 2 CPUs."""
    from ray import _private
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    # Ray advertises a node's routable address even when told 127.0.0.1; this switch (meant for
    # laptops) keeps every process of this test cluster on loopback.
    patch = pytest.MonkeyPatch()
    patch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    patch.setattr(_private.ray_constants, "ENABLE_RAY_CLUSTER", False)
    client_port = free_port()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "include_dashboard": False, "ray_client_server_port": client_port},
    )
    try:
        cluster.add_node(num_cpus=2)
        assert cluster.address.startswith("127.0.0.1:")
        cluster.client_address = f"ray://127.0.0.1:{client_port}"
        yield cluster
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
        patch.undo()


def _remote_work(tmp_path: Path):
    """A group whose model code lives in its own folder (shipped by Ray), and its local cells."""
    torch = pytest.importorskip("torch")
    (tmp_path / "daemon").mkdir()
    root, prepared = engine_workspace(tmp_path / "daemon")
    code = tmp_path / "code"  # the model code, shipped by Ray (runtime_env working_dir)
    code.mkdir()
    write_tiny_cnn(code, name="tiny_two")
    sys.path.insert(0, str(code))
    try:
        torch.manual_seed(0)
        module = import_module("tiny_two").build()
    finally:
        sys.path.remove(str(code))
    weights = tmp_path / "daemon" / "tiny.pt"
    torch.save(module.state_dict(), weights)
    work = group(root, prepared, "python:tiny_two:build", [LINEAR, PARTIAL], seeds=(0, 1))
    work = dataclasses.replace(
        work, model=work.model.model_copy(update={"weights": str(weights)}), config_dir=code
    )
    local = run(InlineExecutor("cpu", OPTIONS), [work])
    return work, code, local


def _executor(address: str, code: Path, *, cpus: int) -> RayExecutor:
    """CPU actors on the cluster at `address`, the model code shipped from `code`."""
    return RayExecutor(
        address=address,
        cpus_per_worker=cpus,
        options=OPTIONS,
        cpu_only=True,
        runtime_env={"working_dir": str(code)},
    )


def _same_cells(results: dict, local: dict) -> None:
    assert results.keys() == local.keys()
    for key, result in local.items():
        assert results[key].status == "ok", (key, results[key].error)
        assert results[key].score == pytest.approx(result.score, abs=1e-6), key
        assert results[key].predictions == result.predictions


def test_a_group_on_the_second_node_equals_the_local_cells_and_reads_nothing_of_ours(
    two_nodes, tmp_path: Path
) -> None:
    work, code, local = _remote_work(tmp_path)
    executor = _executor(two_nodes.address, code, cpus=1)
    results = {}
    try:
        devices = executor.start()
        assert len(devices) == 2  # two actors, both on the worker node (the head has no CPU)
        nodes = {n["NodeID"]: n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]}
        assert sorted(nodes.values()) == [0, 2]
        remote_group = dataclasses.replace(work, config_dir=Path("/nonexistent/daemon-config"))
        shipment = executor._ship(ray, remote_group)
        assert not shipment.group.data.path.exists() and shipment.group.model.weights_path == Path("tiny.pt")
        shutil.rmtree(tmp_path / "daemon")  # the daemon's data, weights and model folder: gone
        executor.run([remote_group], lambda trial, result: results.__setitem__(trial.key, result))
    finally:
        executor.close()
        ray.shutdown()
    _same_cells(results, local)


def test_through_ray_client_the_same_cells_arrive(two_nodes, tmp_path: Path) -> None:
    pytest.importorskip("grpc", reason="Ray Client needs ray[client]")
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "tests._ray_client", two_nodes.client_address, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=REPO,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert done.returncode == 0 and lines, done.stdout[-2000:] + done.stderr[-3000:]
    report = json.loads(lines[-1])
    assert report["client"]  # batches fetched from the actor: Ray Client cannot stream
    assert report["extra"] == [] and len(report["trials"]) == 4
    for key, trial in report["trials"].items():
        assert trial["same"], (key, trial)
