"""Derived shift datasets: a deterministic corruption of another dataset's current snapshot.

The corruption per image and severity (on real digits), the settings that declare a derived
dataset, its digest and cache, and a grid that runs it next to its source.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import subprocess
import sys
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from rich.console import Console

from monitor.cli._check import check_config
from monitor.cli._report import write_report
from monitor.daemon._fingerprint import inputs_fingerprint
from monitor.data import (
    SHIFTS,
    PreparedData,
    derived_data,
    derived_digest,
    image_paths,
    load_arrays,
    prepare_snapshot,
)
from monitor.engine._ray import _placed
from monitor.engine.training import _shifts
from monitor.engine.training._shifts import corrupt, derived_entry
from monitor.errors import ConfigError
from monitor.metrics import StoreCollector
from monitor.settings import DeriveSpec, Shift, TaskSpec, load_settings, settings_from_mapping
from monitor.types import SnapshotInfo
from tests._pipeline import evaluate
from tests._workspace import basic_config, digit_picture, digits, write_config, write_snapshot, write_tiny_cnn

SIZE = 32


def _digit_images(count: int, size: int = SIZE) -> tuple[np.ndarray, list[str]]:
    images, labels = digits()
    picked = range(0, 50 * count, 50)
    x = np.stack(
        [np.asarray(digit_picture(images[i], size).convert("RGB")).transpose(2, 0, 1) for i in picked]
    )
    return x, [f"train/{labels[i]}/{i:04d}.png" for i in picked]


def _change(before: np.ndarray, after: np.ndarray) -> float:
    return float(np.abs(after.astype(np.int64) - before.astype(np.int64)).mean())


# -- the corruptions --------------------------------------------------------------------------------


def test_the_severity_table_covers_every_shift_with_five_levels() -> None:
    assert set(SHIFTS) == set(Shift.__args__)  # type: ignore[attr-defined]
    assert all(len(table.levels) == 5 for table in SHIFTS.values())


def test_every_shift_changes_an_image_more_at_each_severity() -> None:
    x, paths = _digit_images(24, size=64)
    for shift in SHIFTS:
        changes = [_change(x, corrupt(x, paths, shift, severity, 0)) for severity in range(1, 6)]
        assert changes[2] > 0.3, (shift, changes)  # severity 3 visibly changes the images
        assert all(a <= b for a, b in itertools.pairwise(changes)), (shift, changes)
        assert changes[0] < changes[-1], (shift, changes)
    # (below a pixel, a blur changes nothing: at 64 px severity 1 is a σ of 0.29 pixels)


def test_each_image_is_corrupted_by_its_path_and_the_seed_alone() -> None:
    x, paths = _digit_images(8)
    for shift in ("gaussian_noise", "rotation"):  # the two with random draws
        out = corrupt(x, paths, shift, 3, 0)
        assert np.array_equal(out, corrupt(x, paths, shift, 3, 0))
        # the same image under the same path, in another order and among other images: the same result
        order = [5, 2, 7, 0]
        assert np.array_equal(corrupt(x[order], [paths[i] for i in order], shift, 3, 0), out[order])
        assert not np.array_equal(corrupt(x, paths, shift, 3, 1), out)  # another seed
    # another path, another draw of noise for the very same pixels
    same = np.repeat(x[:1], 2, axis=0)
    twins = corrupt(same, ["a/1.png", "a/2.png"], "gaussian_noise", 3, 0)
    assert not np.array_equal(twins[0], twins[1])


@pytest.mark.slow
def test_a_corruption_is_the_same_in_another_process() -> None:
    x, paths = _digit_images(4)
    here = {shift: corrupt(x, paths, shift, 3, 7).tobytes().hex() for shift in SHIFTS}
    program = (
        "import json, sys, numpy as np\n"
        "from monitor.engine.training._shifts import corrupt\n"
        "x = np.frombuffer(bytes.fromhex(sys.argv[1]), dtype=np.uint8).reshape(4, 3, 32, 32)\n"
        "paths = json.loads(sys.argv[2])\n"
        "print(json.dumps({s: corrupt(x, paths, s, 3, 7).tobytes().hex() for s in json.loads(sys.argv[3])}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program, x.tobytes().hex(), json.dumps(paths), json.dumps(list(SHIFTS))],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert json.loads(done.stdout) == here


# -- settings ---------------------------------------------------------------------------------------


def _settings(tmp_path: Path, datasets: list[dict]):
    (tmp_path / "src").mkdir(exist_ok=True)
    (tmp_path / "w.safetensors").write_bytes(b"x")
    return settings_from_mapping(
        {
            "models": [{"name": "m", "architecture": "torchvision:resnet18", "weights": "w.safetensors"}],
            "tasks": [{"name": "t", "datasets": datasets}],
            "strategies": [{"name": "lin", "mode": "linear", "lr": 0.1, "epochs": 1}],
        },
        base_dir=tmp_path,
    )


def test_a_derived_dataset_in_the_settings(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path,
        [
            {"name": "a", "source": "src"},
            {"name": "a-blur", "derive": {"from": "a", "shift": "gaussian_blur", "severity": 3}},
        ],
    )
    derived = settings.tasks[0].datasets[1]
    assert derived.source is None and derived.kind == "derived"
    assert derived.derive == DeriveSpec(from_="a", shift="gaussian_blur", severity=3, apply_to="test", seed=0)


@pytest.mark.parametrize(
    ("dataset", "field", "message"),
    [
        (
            {"derive": {"from": "x", "shift": "jpeg", "severity": 2}},
            "[1].derive.from",
            "no dataset 'x' in task t",
        ),
        ({"derive": {"from": "b", "shift": "jpeg", "severity": 2}}, "[1].derive.from", "from itself"),
        ({"derive": {"from": "a", "shift": "jpg", "severity": 2}}, "[1].derive.shift", "'jpeg'"),
        (
            {"derive": {"from": "a", "shift": "jpeg", "severity": 6}},
            "[1].derive.severity",
            "less than or equal to 5",
        ),
        (
            {"derive": {"from": "a", "shift": "jpeg", "severity": 0}},
            "[1].derive.severity",
            "greater than or equal to 1",
        ),
        (
            {"derive": {"from": "a", "shift": "jpeg", "severity": 2, "apply_to": "train"}},
            "[1].derive.apply_to",
            "'both'",
        ),
        (
            {"derive": {"from": "a", "shift": "jpeg", "severity": 2, "sed": 1}},
            "[1].derive.sed",
            "did you mean 'seed'",
        ),
        ({"derive": {"frm": "a", "shift": "jpeg", "severity": 2}}, "[1].derive.frm", "did you mean 'from'"),
        (
            {"derive": {"from": "a", "shift": "jpeg", "severity": 2}, "source": "src"},
            "[1].derive",
            "not both",
        ),
        ({}, "[1].source", "required"),
        (
            {"derive": {"from": "a", "shift": "jpeg", "severity": 2}, "ready_marker": None},
            "[1].ready_marker",
            "derived",
        ),
    ],
)
def test_a_bad_derived_dataset_is_refused_naming_the_field(
    tmp_path: Path, dataset: dict, field: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        _settings(tmp_path, [{"name": "a", "source": "src"}, {"name": "b", **dataset}])
    problems = dict(caught.value.problems)
    assert f"tasks[0].datasets{field}" in problems, problems
    assert message in problems[f"tasks[0].datasets{field}"]


def test_a_dataset_derived_from_a_derived_one_is_refused(tmp_path: Path) -> None:
    blur = {"from": "a", "shift": "gaussian_blur", "severity": 1}
    with pytest.raises(ConfigError) as caught:
        _settings(
            tmp_path,
            [
                {"name": "a", "source": "src"},
                {"name": "b", "derive": blur},
                {"name": "c", "derive": {**blur, "from": "b"}},
            ],
        )
    assert "is itself derived" in dict(caught.value.problems)["tasks[0].datasets[2].derive.from"]


# -- digest and cache -------------------------------------------------------------------------------


def test_the_derived_digest_changes_with_the_source_and_the_corruption() -> None:
    spec = DeriveSpec(from_="a", shift="jpeg", severity=2)
    digest = derived_digest("1" * 64, spec)
    assert digest == derived_digest("1" * 64, spec) and digest != "1" * 64
    others = [
        derived_digest("2" * 64, spec),
        *(
            derived_digest("1" * 64, spec.model_copy(update=change))
            for change in ({"shift": "contrast"}, {"severity": 3}, {"apply_to": "both"}, {"seed": 1})
        ),
    ]
    assert len({digest, *others}) == 6


@pytest.fixture()
def decoded(tmp_path: Path) -> tuple[TaskSpec, PreparedData]:
    snapshot = write_snapshot(tmp_path / "snap", (0, 1, 2), per_class=9)
    task = TaskSpec(
        name="t", train_per_class=6, test_per_class=3, datasets=[{"name": "d", "source": str(tmp_path)}]
    )
    info = SnapshotInfo("t", "d", "s1", "0" * 64, snapshot, str(tmp_path), 0.0)
    return task, prepare_snapshot(info, task, SIZE, cache_dir=tmp_path / "cache")


def test_a_decoded_entry_without_its_images_paths_is_decoded_again_once(decoded, tmp_path: Path) -> None:
    task, source = decoded
    meta_path = source.path / "meta.json"
    meta = json.loads(meta_path.read_text())
    paths = meta.pop("paths")  # as an earlier release wrote it
    meta_path.write_text(json.dumps(meta))
    info = SnapshotInfo("t", "d", "s1", "0" * 64, tmp_path / "snap", str(tmp_path), 0.0)
    again = prepare_snapshot(info, task, SIZE, cache_dir=tmp_path / "cache")
    assert again == source and json.loads(meta_path.read_text())["paths"] == paths
    assert image_paths(again) == (paths["train"], paths["test"])


def _derive(task: TaskSpec, source: PreparedData, **fields) -> PreparedData:
    spec = DeriveSpec.model_validate({"from": "d", "shift": "gaussian_noise", "severity": 3, **fields})
    return derived_data(source, spec, derived_digest("0" * 64, spec), task)


def test_apply_to_test_corrupts_the_test_split_only_and_both_corrupts_both(decoded) -> None:
    task, source = decoded
    clean = load_arrays(source)
    train_paths, test_paths = image_paths(source)
    assert len(train_paths) == len(clean.train_y) and len(set(train_paths + test_paths)) == len(
        train_paths + test_paths
    )

    on_test = load_arrays(derived_entry(_derive(task, source)))
    assert np.array_equal(on_test.train_x, clean.train_x) and not np.array_equal(on_test.test_x, clean.test_x)
    assert np.array_equal(on_test.test_x, corrupt(clean.test_x, test_paths, "gaussian_noise", 3, 0))
    assert np.array_equal(on_test.train_y, clean.train_y) and np.array_equal(on_test.test_y, clean.test_y)

    on_both = load_arrays(derived_entry(_derive(task, source, apply_to="both")))
    assert not np.array_equal(on_both.train_x, clean.train_x)
    assert np.array_equal(on_both.test_x, on_test.test_x)  # the same test images, the same corruption


def test_a_derived_entry_is_cached_and_a_damaged_one_made_again(decoded, monkeypatch) -> None:
    task, source = decoded
    wanted = _derive(task, source)
    first = derived_entry(wanted)
    assert first.path == wanted.path and first.path.parent == source.path.parent  # beside its source
    made = load_arrays(first)

    def refuse(*args, **kwargs):
        raise AssertionError("corrupted a second time")

    with monkeypatch.context() as patched:
        patched.setattr(_shifts, "corrupt", refuse)
        assert derived_entry(wanted) == first  # found in the cache, checksums verified

    with open(first.path / "test_x.npy", "r+b") as fh:  # damage that keeps the size
        fh.seek(-64, 2)
        fh.write(bytes(64))
    again = derived_entry(wanted)
    assert np.array_equal(load_arrays(again).test_x, made.test_x)


# -- a grid with a derived dataset ------------------------------------------------------------------


def _publish(root: Path, snapshot: str, offset: int) -> None:
    write_snapshot(root / "data" / "a" / snapshot, (5, 6, 7), per_class=24, offset=offset)


@pytest.fixture()
def shifted_workspace(tmp_path: Path):
    write_tiny_cnn(tmp_path, name="shift_cnn")
    _publish(tmp_path, "2026-01-01T00", 0)
    config = basic_config(
        [{"name": "cnn", "architecture": "python:shift_cnn:build"}],
        {"digits": [("a", "data/a")]},
        strategies=[{"name": "lin", "mode": "linear", "lr": 0.1, "epochs": 5, "batch_size": 16}],
        seeds=[0],
    )
    config["tasks"][0]["datasets"].append(
        {"name": "a-noise", "derive": {"from": "a", "shift": "gaussian_noise", "severity": 5}}
    )
    return tmp_path, config


@pytest.mark.slow
def test_a_derived_dataset_runs_beside_its_source_and_follows_its_snapshots(
    shifted_workspace, monkeypatch
) -> None:
    root, config = shifted_workspace
    report, recorder, store = evaluate(root, config)
    cells = {c.dataset: c for c in report.models[0].cells}
    assert set(cells) == {"a", "a-noise"} and report.status == "completed"
    assert (
        cells["a-noise"].status == "ok"
        and cells["a-noise"].snapshot == cells["a"].snapshot == "2026-01-01T00"
    )
    assert set(cells["a-noise"].keys).isdisjoint(cells["a"].keys)
    assert recorder.trials == 2

    # what serve exports and shows, and what report writes, name the derived dataset like any other
    settings = load_settings(root / "persistence-monitor.yaml")
    registry = CollectorRegistry()
    registry.register(StoreCollector(store, settings))
    labels = {"model": "cnn", "task": "digits", "dataset": "a-noise", "strategy": "lin"}
    assert registry.get_sample_value("persistence_cell_score", labels) == pytest.approx(
        cells["a-noise"].score
    )
    info = {"task": "digits", "dataset": "a-noise", "snapshot": "2026-01-01T00"}
    assert registry.get_sample_value("persistence_snapshot_info", info) == 1.0
    html = write_report(settings, store, root / "report.html")[0].read_text()
    assert "a-noise" in html

    # another model of the same image size finds the corrupted images in the cache
    config["models"].append({**config["models"][0], "name": "cnn2", "architecture": "python:shift_cnn:build"})
    config["models"][1]["head"] = "fc"  # another model spec: its own trial keys
    monkeypatch.setattr(_shifts, "corrupt", lambda *a, **k: pytest.fail("corrupted a second time"))
    report, recorder, store = evaluate(root, config)
    assert recorder.trials == 2 and all(c.status in ("ok", "cached") for m in report.models for c in m.cells)
    monkeypatch.undo()

    # a new snapshot of the source: the derived dataset follows it, and runs again
    _publish(root, "2026-01-02T00", 30)
    report, recorder, store = evaluate(root, config)
    for model in report.models:
        cells = {c.dataset: c for c in model.cells}
        assert cells["a-noise"].snapshot == "2026-01-02T00" and cells["a-noise"].status == "ok"
    assert recorder.trials == 4


def test_check_config_and_the_daemons_poll_see_a_derived_dataset_through_its_source(
    shifted_workspace,
) -> None:
    root, config = shifted_workspace
    settings = load_settings(write_config(root / "persistence-monitor.yaml", config))
    out = StringIO()
    assert check_config(settings, Console(file=out, width=240)) == 0
    shown = out.getvalue()
    assert "derived from a: gaussian_noise 5 (noise σ 0.38 of the pixel range) on the test split" in shown
    before = inputs_fingerprint(settings)
    _publish(root, "2026-01-02T00", 30)
    assert inputs_fingerprint(settings) != before


def test_a_derived_dataset_is_unavailable_with_its_source(shifted_workspace) -> None:
    root, config = shifted_workspace
    config["tasks"][0]["datasets"][0]["source"] = "data/empty"
    (root / "data" / "empty").mkdir(parents=True)
    report, _, _ = evaluate(root, config)
    cells = {c.dataset: c for c in report.models[0].cells}
    assert cells["a-noise"].status == "failed"
    assert "derived from digits/a, which is unavailable: no complete snapshot yet" in (
        cells["a-noise"].error or ""
    )


def test_a_derived_dataset_travels_to_a_ray_actor_as_its_source_files(decoded, tmp_path: Path) -> None:
    task, source = decoded
    wanted = _derive(task, source)
    assert wanted.decoded == source
    placed = _placed(wanted, tmp_path / "actor")
    assert placed.path == tmp_path / "actor" / wanted.key
    assert placed.derivation is not None and placed.derivation.source.path == tmp_path / "actor" / source.key
    assert dataclasses.replace(placed.derivation.source, path=source.path) == source
