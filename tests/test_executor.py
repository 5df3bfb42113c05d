"""The executor: real worker processes; a crash or a hang fails only its own trials."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from monitor.engine import EngineOptions, InlineExecutor, LocalExecutor
from tests._engine import FULL, LINEAR, PARTIAL, engine_workspace, group, run


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> tuple[Path, object]:
    return engine_workspace(tmp_path_factory.mktemp("executor"))


@pytest.mark.slow
def test_a_crashing_trial_fails_alone_and_the_worker_is_replaced(workspace):
    root, prepared = workspace
    crash = group(root, prepared, "python:trouble:crash", [LINEAR, FULL, PARTIAL], seeds=(0, 1))
    healthy = group(root, prepared, "python:tiny_exec:build", [LINEAR, PARTIAL])
    with LocalExecutor("cpu", cell_timeout=120) as executor:
        results = run(executor, [crash, healthy])
    by_strategy = {k: r for k, r in results.items()}
    for key, result in by_strategy.items():
        if key.startswith("full-"):
            assert result.status == "failed"
            assert "worker process died (exit code 3)" in result.error
        else:
            assert result.status == "ok", (key, result.error)
            assert 0.0 <= result.score <= 1.0


@pytest.mark.slow
def test_a_hanging_trial_times_out_and_the_group_goes_on(workspace):
    root, prepared = workspace
    hang = group(root, prepared, "python:trouble:hang", [LINEAR, FULL, PARTIAL])
    with LocalExecutor("cpu", cell_timeout=6) as executor:
        results = run(executor, [hang])
    assert results["full-0-python:trouble:hang"].status == "failed"
    assert "timed out after 6s" in results["full-0-python:trouble:hang"].error
    assert results["lin-0-python:trouble:hang"].status == "ok"
    assert results["part-0-python:trouble:hang"].status == "ok"


@pytest.mark.slow
@pytest.mark.parametrize("batch_finetunes", ["never", "always"])
def test_each_strategy_trains_on_what_its_fields_allow(workspace, batch_finetunes):
    """Cached activations only where the frozen prefix computes the same thing every step
    (bn frozen, no augmentation); augmented linear probes run the backbone on every batch."""
    root, prepared = workspace
    variants = [
        LINEAR,
        LINEAR.model_copy(update={"name": "lin-aug", "augment": "flip"}),
        PARTIAL,
        PARTIAL.model_copy(update={"name": "part-bn", "bn": "train"}),
        PARTIAL.model_copy(update={"name": "part-aug", "augment": "crop_flip"}),
        FULL.model_copy(update={"name": "full-aug", "augment": "flip", "schedule": "cosine"}),
    ]
    work = group(root, prepared, "python:tiny_exec:build", variants, seeds=(0, 1))
    results = run(
        InlineExecutor("cpu", EngineOptions(batch_finetunes=batch_finetunes, precision="fp32")), [work]
    )
    inputs = {key.split("-python")[0]: r.details.get("inputs") for key, r in results.items()}
    assert all(r.status == "ok" for r in results.values()), results
    assert (
        inputs["lin-0"] == "features"
        and results["lin-0-python:tiny_exec:build"].details["models_batched"] == 2
    )
    assert inputs["lin-aug-0"] == inputs["lin-aug-1"] == "images"
    assert inputs["part-0"] == "activations"
    assert inputs["part-bn-0"] == inputs["part-aug-0"] == inputs["full-aug-0"] == "images"
    if batch_finetunes == "always":  # the stack of a schedule holds its seeds, never a linear probe
        assert results["part-aug-0-python:tiny_exec:build"].details["models_batched"] == 2
        assert "models_batched" not in results["lin-aug-0-python:tiny_exec:build"].details


@pytest.mark.slow
def test_a_group_that_cannot_load_fails_all_its_trials_with_the_reason(workspace):
    root, prepared = workspace
    broken = group(root, prepared, "python:no_such_module:build", [LINEAR, PARTIAL])
    for executor in (InlineExecutor("cpu"), LocalExecutor("cpu", cell_timeout=60)):
        try:
            results = run(executor, [broken])
        finally:
            executor.close()
        assert {r.status for r in results.values()} == {"failed"}
        assert all("cannot import no_such_module" in r.error for r in results.values())


@pytest.mark.slow
def test_inline_and_worker_processes_compute_the_same(workspace):
    root, prepared = workspace
    work = group(root, prepared, "python:tiny_exec:build", [LINEAR, PARTIAL, FULL], seeds=(0, 1))
    inline = run(InlineExecutor("cpu"), [work])
    with LocalExecutor("cpu") as executor:
        process = run(executor, [work])
    assert {k: (r.status, r.score) for k, r in inline.items()} == {
        k: (r.status, r.score) for k, r in process.items()
    }


@pytest.mark.slow
def test_a_worker_that_died_while_idle_is_replaced_before_the_next_group(workspace):
    import os
    import signal

    root, prepared = workspace
    work = group(root, prepared, "python:tiny_exec:build", [LINEAR])
    with LocalExecutor("cpu", cell_timeout=60) as executor:
        assert {r.status for r in run(executor, [work]).values()} == {"ok"}
        (worker,) = executor._workers
        os.kill(worker.process.pid, signal.SIGKILL)  # e.g. the OOM killer, between two runs
        worker.process.join(10)
        assert {r.status for r in run(executor, [work]).values()} == {"ok"}


@pytest.mark.parametrize(
    ("cores", "busy", "shares"),
    [(2, 2, [1, 1]), (2, 1, [2]), (5, 2, [3, 2]), (8, 3, [3, 3, 2]), (1, 2, [1, 1]), (4, 0, [4])],
)
def test_cores_are_shared_evenly_among_busy_workers(cores, busy, shares):
    from monitor.engine._executor import thread_shares

    assert thread_shares(cores, busy) == shares


def test_a_lone_busy_cpu_worker_gets_every_core():
    from monitor.engine._executor import _Worker

    executor = LocalExecutor("cpu", options=EngineOptions(cpu_workers=3))
    executor._cores = 6
    workers = [_Worker("cpu", None, None, SimpleNamespace(value=0)) for _ in range(3)]  # type: ignore[arg-type]
    executor._workers = workers
    workers[0].group = workers[2].group = object()  # type: ignore[assignment]
    executor._rebalance()
    assert [w.threads.value for w in workers] == [3, 0, 3]
    workers[2].group = None
    executor._rebalance()
    assert workers[0].threads.value == 6
    workers[0].group = None
    executor._rebalance()  # nobody busy (the end of a run, a shutdown): nothing to share
    assert workers[0].threads.value == 6


def test_auto_cpu_workers_is_two_where_there_are_two_cores(monkeypatch):
    from monitor.engine import _options

    settings = SimpleNamespace(batch_finetunes="auto", compile=False, precision="auto", cpu_workers="auto")
    monkeypatch.setattr(_options, "cpu_count", lambda: 1)
    assert EngineOptions.from_settings(settings).cpu_workers == 1
    monkeypatch.setattr(_options, "cpu_count", lambda: 16)
    assert EngineOptions.from_settings(settings).cpu_workers == 2
    settings.cpu_workers = 5
    assert EngineOptions.from_settings(settings).cpu_workers == 5


@pytest.mark.slow
def test_two_cpu_workers_run_groups_side_by_side_and_survive_a_crash(workspace):
    root, prepared = workspace
    crash = group(root, prepared, "python:trouble:crash", [LINEAR, FULL])
    healthy = [
        group(root, prepared, "python:tiny_exec:build", [LINEAR, PARTIAL, FULL], (s,)) for s in (0, 1, 2)
    ]
    with LocalExecutor("cpu", cell_timeout=120, options=EngineOptions(cpu_workers=2)) as executor:
        assert len(executor._workers) == 2
        results = run(executor, [crash, *healthy])
        assert all(w.process.is_alive() for w in executor._workers)  # the crashed one was replaced
    for key, result in results.items():
        if key.startswith("full-") and "trouble" in key:
            assert result.status == "failed" and "worker process died" in result.error
        else:
            assert result.status == "ok", (key, result.error)
            assert result.details["device"] == "cpu"
