"""The pipeline end to end on real images and real models (in-process executor, SQLite in tmp)."""

from __future__ import annotations

import shutil
import statistics

import pytest

from monitor.engine import InlineExecutor
from monitor.pipeline import run_evaluation
from monitor.scoring import score_model
from monitor.settings import load_settings
from monitor.store import Store
from tests._pipeline import Recorder, evaluate
from tests._workspace import write_config, write_snapshot


@pytest.mark.slow
def test_a_run_scores_every_cell_and_a_repeat_is_all_cached(workspace):
    root, config = workspace
    report, _recorder, store = evaluate(root, config)
    assert report.status == "completed" and report.trials_run == 2 * 4 * 2
    (model,) = report.models
    assert len(model.cells) == 2 * 4
    for cell in model.cells:
        assert cell.status == "ok" and cell.snapshot == "2026-01-02T00"  # the newest snapshot
        assert len(cell.seed_scores) == 2 and cell.score == pytest.approx(statistics.fmean(cell.seed_scores))
    # P(M) from the cells, by the formula: one task, two datasets, four strategies -> plain mean.
    assert model.score.persistence == pytest.approx(statistics.fmean(c.score for c in model.cells))
    assert model.score.coverage == 1.0
    stored = store.get_run(report.run_id)
    assert stored is not None and stored.status == "completed"
    assert [c.score for c in stored.cells] == [c.score for c in model.cells]

    again, recorder2, _ = evaluate(root, config)
    assert again.trials_run == 0 and recorder2.trials == 0
    assert {c.status for c in again.models[0].cells} == {"cached"}
    assert again.models[0].score.persistence == model.score.persistence


@pytest.mark.slow
def test_a_new_snapshot_recomputes_only_its_dataset(workspace):
    root, config = workspace
    evaluate(root, config)
    write_snapshot(root / "data" / "b" / "2026-01-03T00", (5, 6, 7), per_class=24, offset=60)
    report, _, _ = evaluate(root, config)
    assert report.trials_run == 4 * 2  # dataset b only
    statuses = {(c.dataset, c.status) for c in report.models[0].cells}
    assert statuses == {("a", "cached"), ("b", "ok")}
    assert {c.snapshot for c in report.models[0].cells if c.dataset == "b"} == {"2026-01-03T00"}


@pytest.mark.slow
def test_incomplete_snapshots_are_ignored(workspace):
    root, config = workspace
    write_snapshot(root / "data" / "a" / "2026-01-09T00", (5, 6, 7), per_class=24, marker=False)
    report, _, _ = evaluate(root, config)
    assert {c.snapshot for c in report.models[0].cells if c.dataset == "a"} == {"2026-01-02T00"}


@pytest.mark.slow
def test_a_rejected_snapshot_never_replaces_the_last_good_one(workspace):
    root, config = workspace
    write_snapshot(root / "data" / "a" / "2026-01-05T00", (5,), per_class=24)  # one class only
    report, recorder, store = evaluate(root, config)
    assert report.status == "completed"
    assert {c.snapshot for c in report.models[0].cells if c.dataset == "a"} == {"2026-01-02T00"}
    assert any("2026-01-05T00 rejected (too_few_classes)" in w for w in recorder.warnings)
    assert store.snapshot_error_counts()[("digits", "a", "too_few_classes")] == 1


@pytest.mark.slow
def test_a_dataset_without_snapshots_fails_its_cells_and_the_rest_carries_on(workspace):
    root, config = workspace
    (root / "data" / "c").mkdir()
    config["tasks"][0]["datasets"].append({"name": "c", "source": "data/c"})
    report, _, _ = evaluate(root, config)
    assert report.status == "partial"
    cells = report.models[0].cells
    failed = [c for c in cells if c.status == "failed"]
    assert {c.dataset for c in failed} == {"c"} and len(failed) == 4
    assert "no complete snapshot yet" in failed[0].error and "_SUCCESS" in failed[0].error
    score = report.models[0].score
    assert score.coverage == pytest.approx(8 / 12)
    # P(M) leaves the failed cells out: the mean over datasets a and b.
    assert score.persistence == pytest.approx(
        statistics.fmean(c.score for c in cells if c.status != "failed")
    )


@pytest.mark.slow
def test_corrupt_images_are_skipped_and_counted(workspace):
    root, config = workspace
    bad = root / "data" / "a" / "2026-01-02T00" / "6" / "zz-corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    report, recorder, store = evaluate(root, config)
    assert report.status == "completed"
    assert any("skipped 1 undecodable image" in w and "zz-corrupt.png" in w for w in recorder.warnings)
    assert store.snapshot_error_counts()[("digits", "a", "undecodable_image")] == 1


@pytest.mark.slow
def test_a_model_with_bad_weights_fails_only_its_own_cells(workspace):
    root, config = workspace
    (root / "wrong.safetensors").write_bytes(b"not safetensors at all")
    config["models"].append(
        {
            "name": "broken",
            "architecture": "python:pipe_cnn:build",
            "weights": "wrong.safetensors",
            "image_size": 32,
        }
    )
    report, _, _ = evaluate(root, config)
    assert report.status == "partial"
    good, broken = report.models
    assert {c.status for c in good.cells} == {"ok"}
    assert {c.status for c in broken.cells} == {"failed"}
    assert all("wrong.safetensors" in c.error for c in broken.cells)
    assert broken.score.persistence is None and broken.score.coverage == 0.0


@pytest.mark.slow
def test_the_stored_result_matches_the_scoring_of_its_cells(workspace):
    """Hand check of the whole chain: rescore the stored cells with the §1 formula."""
    root, config = workspace
    config["tasks"].append(
        {
            "name": "other",
            "metric": "macro_f1",
            "train_per_class": 8,
            "test_per_class": 4,
            "datasets": [{"name": "a", "source": "data/a"}],
        }
    )
    report, _, store = evaluate(root, config)
    stored = store.get_run(report.run_id)
    cells = stored.cells
    by_task = {}
    for cell in cells:
        by_task.setdefault(cell.task, {}).setdefault(cell.dataset, []).append(cell.score)
    expected = statistics.fmean(
        statistics.fmean(statistics.fmean(scores) for scores in datasets.values())
        for datasets in by_task.values()
    )
    (model,) = stored.models
    assert model.persistence == pytest.approx(expected)
    planned = [(c.task, c.dataset, c.strategy) for c in cells]
    assert score_model("cnn", model.version, cells, planned).persistence == pytest.approx(expected)


@pytest.mark.slow
def test_deleting_the_decoded_cache_recomputes_nothing_stored(workspace):
    """The decoded-data cache is a cache: deleting it recomputes nothing that is stored."""
    root, config = workspace
    evaluate(root, config)
    shutil.rmtree(root / "state" / "cache")
    report, _, _ = evaluate(root, config)
    assert report.trials_run == 0 and report.status == "completed"


@pytest.mark.slow
def test_a_diverged_cell_stays_diverged_when_it_comes_from_the_store(workspace):
    root, config = workspace
    config["strategies"] = [{"name": "wild", "mode": "full", "lr": 1e12, "epochs": 2, "batch_size": 16}]
    first, _, _ = evaluate(root, config)
    second, _, _ = evaluate(root, config)
    assert {c.status for c in first.models[0].cells} == {"diverged"}
    assert {c.status for c in second.models[0].cells} == {"diverged"}
    assert second.trials_run == 0
    assert all(isinstance(c.seconds, float) for c in second.models[0].cells)


@pytest.mark.slow
def test_strategies_that_differ_only_by_name_train_once(workspace):
    root, config = workspace
    same = {"mode": "linear", "lr": 0.1, "epochs": 2, "batch_size": 16}
    config["strategies"] = [{"name": "one", **same}, {"name": "two", **same}]
    report, recorder, _ = evaluate(root, config)
    assert report.trials_run == 2 * 2 and recorder.trials == 2 * 2  # 2 datasets × 2 seeds
    by_strategy = {}
    for cell in report.models[0].cells:
        by_strategy.setdefault(cell.dataset, {})[cell.strategy] = cell.score
    assert all(scores["one"] == scores["two"] for scores in by_strategy.values())


@pytest.mark.slow
def test_a_run_that_breaks_is_recorded_as_failed_not_left_running(workspace):
    root, config = workspace

    class Broken:
        def run(self, groups, on_result):
            raise RuntimeError("the device fell off the bus")

        def close(self):
            pass

    with pytest.raises(RuntimeError):
        evaluate(root, config, executor=Broken())
    store = Store.open(load_settings(root / "persistence-monitor.yaml").resolved_database_url)
    (run,) = store.list_runs()
    assert run.status == "failed" and "the device fell off the bus" in run.error
    assert store.unfinished_runs() == []


@pytest.mark.slow
def test_a_rejection_depends_on_the_protocol_that_caused_it(workspace):
    """A snapshot rejected under one test_fraction is judged again under another."""
    root, config = workspace
    shutil.rmtree(root / "data" / "b")
    (root / "data" / "b").mkdir()
    write_snapshot(root / "data" / "b" / "2026-01-01T00", (5, 6, 7), per_class=3, layout="hashed")
    config["tasks"][0]["test_fraction"] = 0.95  # nearly everything lands in test: train classes empty
    report, recorder, _ = evaluate(root, config)
    assert any("rejected (empty_class)" in w for w in recorder.warnings)
    config["tasks"][0]["test_fraction"] = 0.3
    report, recorder, _ = evaluate(root, config)
    assert not any("rejected" in w for w in recorder.warnings), recorder.warnings
    assert {c.status for c in report.models[0].cells if c.dataset == "b"} == {"ok"}


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_each_stored_trial_says_where_and_in_what_precision_it_ran(workspace, precision):
    from monitor.engine import EngineOptions

    root, config = workspace
    executor = InlineExecutor("cpu", EngineOptions(precision=precision, batch_finetunes="never"))
    _, recorder, store = evaluate(root, config, executor)
    stored = store.find_trials([r.key for r in recorder.results])
    store.close()
    assert len(stored) == len(recorder.results) > 0
    for result in stored.values():
        assert result.details["device"] == "cpu"
        assert result.details["precision"] == precision
        assert isinstance(result.details["threads"], int) and result.details["threads"] >= 1


@pytest.mark.slow
def test_a_stacked_cpu_trial_records_that_it_trained_in_fp32(workspace):
    from monitor.engine import EngineOptions

    root, config = workspace
    executor = InlineExecutor("cpu", EngineOptions(precision="bf16", batch_finetunes="always"))
    _, recorder, store = evaluate(root, config, executor)
    store.close()
    stacked = [
        r for r in recorder.results if "models_batched" in r.details and r.details["inputs"] != "features"
    ]
    assert stacked and all(r.details["precision"] == "fp32" for r in stacked)
    linear = [r for r in recorder.results if r.details.get("inputs") == "features"]
    assert linear and all(r.details["precision"] == "bf16" for r in linear)


def _protocol_1_key(model, version, task, snapshot_digest: str, strategy, seed: int) -> str:
    """A trial key as protocol 1 wrote it, before strategies had a schedule, warm-up, `bn` or
    `augment` (every fine-tune then decayed on a cosine). A frozen copy of that format, pinned
    below to keys the protocol-1 code computed."""
    import hashlib
    import json

    fields = ("mode", "optimizer", "lr", "epochs", "batch_size", "weight_decay", "momentum")
    old = {
        k: v
        for k, v in strategy.model_dump().items()
        if k in (*fields, "label_smoothing", "trainable_blocks")
    }
    if strategy.optimizer != "sgd":
        old.pop("momentum")
    payload = {
        "protocol": 1,
        "data_protocol": 1,
        "model": {
            "architecture": model.architecture,
            "weights_digest": version.digest,
            "head": model.head,
            "blocks": model.blocks,
            "image_size": model.image_size,
            "normalize": [list(model.normalize.mean), list(model.normalize.std)],
        },
        "task": {
            "metric": task.metric,
            "train_per_class": task.train_per_class,
            "test_per_class": task.test_per_class,
            "test_fraction": task.test_fraction,
        },
        "snapshot": snapshot_digest,
        "strategy": old,
        "seed": seed,
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def test_the_protocol_1_key_format_is_the_one_that_code_wrote():
    from monitor.settings import ModelSpec, StrategySpec, TaskSpec
    from monitor.types import ModelVersion

    model = ModelSpec(name="m", architecture="python:digits_cnn:build", image_size=32)
    version = ModelVersion("m", model.architecture, "ab" * 32, None)
    task = TaskSpec(name="t", datasets=[{"name": "d", "source": "/x"}])
    pinned = {  # computed by the protocol-1 code (commit d0a2764) for these inputs
        "2d76aa7e03b4f071c2daca3c628aeaadd05d51e2181a62f08c1dea943e815f09": StrategySpec(
            name="s", mode="full", optimizer="adamw", lr=0.001, epochs=3, weight_decay=0.05
        ),
        "af10b6f30675913b8d93c053b23dc8172690d040e5910e7fc777a8f7de862800": StrategySpec(
            name="p", mode="partial", trainable_blocks=1, lr=0.01, epochs=5
        ),
        "fa96d4f1f52a17d30f4d9ea09c8a37ad1c61dbf799e9e869aa7e0743edf827e1": StrategySpec(
            name="l", mode="linear", lr=0.1, epochs=10, batch_size=32
        ),
    }
    for key, strategy in pinned.items():
        assert _protocol_1_key(model, version, task, "cd" * 32, strategy, 0) == key


@pytest.mark.slow
def test_trials_stored_under_the_old_protocol_are_recomputed_and_kept(workspace):
    """A store written before strategies had a schedule holds cosine-trained trials under
    protocol-1 keys: after the upgrade every cell trains again (at a constant learning rate, as
    its strategy now says), and the old rows stay where they were."""
    from monitor.pipeline._resolve import resolve
    from monitor.types import TrialResult

    root, config = workspace
    settings = load_settings(write_config(root / "persistence-monitor.yaml", config))
    store = Store.open(settings.resolved_database_url)
    old_run = "0" * 32  # a run of the old code, which the stored trials belong to
    resolution = resolve(settings, store, Recorder())
    store.begin_run(old_run, trigger="cli", config_digest="old", plan={"cells": []})
    old_keys = []
    for model in settings.models:
        version = resolution.versions[model.name]
        for task in settings.tasks:
            for dataset in task.datasets:
                snapshot = resolution.snapshots[(task.name, dataset.name)]
                for strategy in settings.strategies:
                    for seed in settings.seeds:
                        key = _protocol_1_key(model, version, task, snapshot.digest, strategy, seed)
                        store.save_trial(
                            TrialResult(key, seed, "ok", 0.123, 1.0),
                            run_id=old_run,
                            model=model.name,
                            task=task.name,
                            dataset=dataset.name,
                            snapshot=snapshot.snapshot,
                            strategy=strategy.name,
                        )
                        old_keys.append(key)
    store.finish_run(old_run, status="completed", seconds=1.0, scores=[], cells=[])
    report = run_evaluation(settings, store, InlineExecutor("cpu"), observer=Recorder())
    assert report.trials_cached == 0 and report.trials_run == len(old_keys) == 2 * 4 * 2
    assert all(c.status == "ok" and 0.123 not in c.seed_scores for c in report.models[0].cells)
    assert set(store.find_trials(old_keys)) == set(old_keys)  # nothing stored is lost


@pytest.mark.slow
def test_each_trial_keeps_its_test_predictions_and_p_m_gets_both_error_bars(workspace):
    root, config = workspace
    report, _recorder, store = evaluate(root, config)
    (model,) = report.models
    score = model.score
    keys = [k for c in model.cells for k in c.keys]
    stored = store.find_trials(keys)
    for trial in stored.values():
        assert trial.predictions is not None and trial.predictions.count == trial.details["n_test"]
    # the predictions score the trial: its stored score is the accuracy of its stored predictions
    one = stored[keys[0]].predictions
    right = sum(a == b for a, b in zip(one.labels[::2], one.predicted[::2], strict=True))
    assert stored[keys[0]].score == pytest.approx(right / one.count)
    # two datasets, each with its snapshot and both noises. This untrained CNN guesses (P(M) is
    # about chance): its seeds err on different examples, so the test noise they share, what is
    # added to theirs, is about nil (tests/test_error_bars.py has a model that has learnt)
    assert set(score.noise["digits"]) == {"a", "b"}
    for noise in score.noise["digits"].values():
        assert noise.snapshot == "2026-01-02T00" and noise.seeds is not None and noise.test >= 0
    assert score.stderr >= score.stderr_seeds > 0
    (stored_score,) = store.get_run(report.run_id).models
    assert (stored_score.stderr, stored_score.stderr_seeds, stored_score.noise) == (
        score.stderr,
        score.stderr_seeds,
        score.noise,
    )
    # a cached repeat reports the same error bars
    again, _, _ = evaluate(root, config)
    assert again.models[0].score.stderr == score.stderr


@pytest.mark.slow
def test_a_test_split_too_small_for_the_drop_rule_is_warned_about_once_per_snapshot(workspace):
    root, config = workspace
    _, first, _ = evaluate(root, config)
    small = [w for w in first.warnings if "test split holds" in w]
    assert len(small) == 2 and all("fewer than 400" in w for w in small), first.warnings  # 3 classes × 8
    _, again, _ = evaluate(root, config)
    assert not [w for w in again.warnings if "test split holds" in w]
    config = {**config, "alerts": {"rules": [{"name": "Low", "kind": "below", "threshold": 0.5}]}}
    (root / "state").rename(root / "state-before")
    _, no_drop_rule, _ = evaluate(root, config)
    assert not [w for w in no_drop_rule.warnings if "test split holds" in w]
