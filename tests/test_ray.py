"""The Ray executor on a real local Ray cluster (127.0.0.1): same cells as locally, faults contained."""

from __future__ import annotations

import dataclasses
import shutil
import sys
from importlib import import_module
from pathlib import Path

import pytest

from monitor.engine import EngineOptions, InlineExecutor
from tests._engine import FULL, LINEAR, PARTIAL, engine_workspace, group, run

ray = pytest.importorskip("ray")
from monitor.engine._ray import RayExecutor  # noqa: E402

pytestmark = pytest.mark.slow

OPTIONS = EngineOptions(batch_finetunes="never", precision="fp32")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> tuple[Path, object]:
    return engine_workspace(tmp_path_factory.mktemp("ray"))


@pytest.fixture(scope="module")
def cluster():
    """One local Ray instance for the module, two CPUs, on loopback only."""
    ray.init(
        address="local",  # a new instance, whatever else runs on this machine
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        namespace="persistence-monitor-tests",
        configure_logging=False,
        log_to_driver=False,
    )
    yield
    ray.shutdown()


def test_an_unreachable_cluster_is_a_clear_error() -> None:
    from monitor.errors import MonitorError

    if ray.is_initialized():
        pytest.skip("a Ray instance is up in this process")
    executor = RayExecutor(address="127.0.0.1:1", options=OPTIONS)
    with pytest.raises(MonitorError, match=r"cannot reach the Ray cluster \(127\.0\.0\.1:1\)"):
        executor.start()


def test_ray_cells_equal_the_local_executor_cells(workspace, cluster) -> None:
    root, prepared = workspace
    work = group(root, prepared, "python:tiny_exec:build", [LINEAR, PARTIAL, FULL], seeds=(0, 1))
    local = run(InlineExecutor("cpu", OPTIONS), [work])
    executor = RayExecutor(cpus_per_worker=1, options=OPTIONS, cpu_only=True)
    try:
        devices = executor.start()
        assert len(devices) == 2 and all(d.startswith("cpu@") for d in devices)
        # more groups than actors: each actor runs groups back to back (a late message of the
        # previous group must never end the next one)
        parts = [dataclasses.replace(work, trials=work.trials[i : i + 2]) for i in range(0, 6, 2)]
        remote = run(executor, parts)
    finally:
        executor.close()
    assert remote.keys() == local.keys()
    for key, result in local.items():
        assert result.status == "ok" and remote[key].status == "ok", (key, remote[key].error)
        assert remote[key].score == pytest.approx(result.score, abs=1e-6), key
        assert remote[key].predictions == result.predictions


def test_an_actor_killed_mid_group_costs_only_its_running_trials(workspace, cluster) -> None:
    root, prepared = workspace
    strategies = [FULL.model_copy(update={"name": f"full{i}"}) for i in range(4)]
    work = group(root, prepared, "python:tiny_exec:build", strategies)
    executor = RayExecutor(cpus_per_worker=2, max_workers=1, options=OPTIONS, cpu_only=True)
    results = {}
    killed = []

    def on_result(trial, result) -> None:
        results[trial.key] = result
        if not killed:  # after the first result: kill the actor while it runs the next trial
            killed.append(executor._slots[0].handle)
            ray.kill(killed[0])

    try:
        executor.start()
        executor.run([work], on_result)
    finally:
        executor.close()
    assert killed and len(results) == 4
    failed = [r for r in results.values() if r.status == "failed"]
    ok = [r for r in results.values() if r.status == "ok"]
    assert len(failed) <= 1 and len(ok) >= 3  # the running trial at most; the rest on a new actor
    for result in failed:
        assert "the Ray actor died while running it" in result.error


def test_the_actor_reads_nothing_of_the_daemons_disk(workspace, cluster, tmp_path) -> None:
    """Data and weights go through the object store: the daemon's copies can be gone by then."""
    torch = pytest.importorskip("torch")

    root, prepared = workspace
    task, info, data = prepared
    moved = tmp_path / "cache"
    shutil.copytree(data.path, moved)
    torch.manual_seed(0)
    sys.path.insert(0, str(root))
    try:
        module = import_module("tiny_exec").build()
    finally:
        sys.path.remove(str(root))
    weights = tmp_path / "tiny.pt"
    torch.save(module.state_dict(), weights)
    work = group(
        root, (task, info, dataclasses.replace(data, path=moved)), "python:tiny_exec:build", [LINEAR, PARTIAL]
    )
    work = dataclasses.replace(work, model=work.model.model_copy(update={"weights": str(weights)}))
    executor = RayExecutor(cpus_per_worker=1, max_workers=1, options=OPTIONS, cpu_only=True)
    results = {}
    try:
        executor.start()
        shipment = executor._ship(ray, work)  # (what `run` sends: no path of this machine in it)
        assert shipment.group.data.path != moved and not shipment.group.data.path.exists()
        assert shipment.group.model.weights_path == Path("tiny.pt")
        shutil.rmtree(moved)
        weights.unlink()
        executor.run([work], lambda trial, result: results.__setitem__(trial.key, result))
    finally:
        executor.close()
    assert [r.status for r in results.values()] == ["ok", "ok"], [r.error for r in results.values()]


def test_cancel_stops_the_actors_between_trials(workspace, cluster) -> None:
    from monitor.errors import Cancelled

    root, prepared = workspace
    strategies = [FULL.model_copy(update={"name": f"full{i}", "epochs": 3}) for i in range(6)]
    work = group(root, prepared, "python:tiny_exec:build", strategies)
    executor = RayExecutor(cpus_per_worker=2, max_workers=1, options=OPTIONS, cpu_only=True)
    results = {}

    def on_result(trial, result) -> None:
        results[trial.key] = result
        executor.cancel()  # (the daemon calls it from its signal handler's thread)

    try:
        executor.start()
        with pytest.raises(Cancelled):
            executor.run([work], on_result)
    finally:
        executor.close()
    # the trial in progress when `cancel` came may finish; nothing after it starts
    assert 1 <= len(results) <= 2 and all(r.status == "ok" for r in results.values())


def test_a_derived_dataset_is_corrupted_on_the_actor_as_locally(workspace, cluster, tmp_path) -> None:
    """The actor gets the source's files and makes the derived images itself (the same bytes)."""
    from monitor.data import derived_data, derived_digest
    from monitor.settings import DeriveSpec

    root, prepared = workspace
    task, info, data = prepared
    source = dataclasses.replace(data, path=tmp_path / "decoded" / data.key)
    shutil.copytree(data.path, source.path)
    spec = DeriveSpec.model_validate({"from": "d", "shift": "gaussian_noise", "severity": 4})
    derived = derived_data(source, spec, derived_digest(info.digest, spec), task)
    work = dataclasses.replace(group(root, prepared, "python:tiny_exec:build", [LINEAR]), data=derived)
    local = run(InlineExecutor("cpu", OPTIONS), [work])
    assert derived.path.is_dir()  # made here, beside its source
    executor = RayExecutor(cpus_per_worker=1, max_workers=1, options=OPTIONS, cpu_only=True)
    try:
        executor.start()
        shipment = executor._ship(ray, work)
        assert set(ray.get(shipment.files)) == {p.name for p in source.path.iterdir()}
        shutil.rmtree(tmp_path / "decoded")
        remote = run(executor, [work])
    finally:
        executor.close()
    for key, result in local.items():
        assert remote[key].status == "ok", remote[key].error
        assert remote[key].predictions == result.predictions
