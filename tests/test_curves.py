"""Training curves: every training path records its loss per epoch and where it diverged; the run
view, its JSON, the report and TensorBoard event files show them (real digits, a tiny CNN)."""

from __future__ import annotations

import base64
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from monitor.api import create_app
from monitor.cli import main
from monitor.cli._report import write_report
from monitor.engine import CellRef, EngineOptions, TrialSpec
from monitor.engine.training import GroupData, finetune, image_feed, runtime_for, train_linear_heads
from monitor.engine.training._batched import finetune_batched
from monitor.errors import ConfigError
from monitor.models import load_backbone
from monitor.pipeline import RunReport
from monitor.settings import ModelSpec, Settings, StrategySpec, load_settings
from monitor.store import Store, TrialPlace, new_run_id
from monitor.types import TrialResult
from tests._api import Stand
from tests._pipeline import evaluate
from tests._workspace import digit_picture, digits, write_config, write_tiny_cnn

CPU = runtime_for("cpu", EngineOptions(precision="fp32"))


def trial(name: str, seed: int, **strategy) -> TrialSpec:
    spec = StrategySpec(name=name, **{"epochs": 3, "batch_size": 16, **strategy})
    return TrialSpec(
        key=f"{name}-{seed}-{spec.lr}", cell=CellRef("m", "t", "d", name), seed=seed, strategy=spec
    )


@pytest.fixture(scope="module")
def digit_data() -> GroupData:
    """Real digits 0-2 at 16 px: 48 training and 24 test images (learnable in a few epochs)."""
    images, labels = digits()
    picked = [i for i in range(len(labels)) if labels[i] < 3][:72]
    x = torch.stack(
        [torch.from_numpy(np.array(digit_picture(images[i], 16))).expand(3, -1, -1) for i in picked]
    )
    y = torch.from_numpy(labels[picked])
    return GroupData(
        train_x=x[:48].contiguous(),
        train_y=y[:48],
        test_x=x[48:].contiguous(),
        test_y=y[48:],
        num_classes=3,
        scale=torch.full((1, 3, 1, 1), 1 / 255),
        shift=torch.zeros(1, 3, 1, 1),
        channels_last=False,
    )


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("curves")
    arch = write_tiny_cnn(root, name="curves_cnn")
    backbone = load_backbone(ModelSpec(name="m", architecture=arch, image_size=16), config_dir=root)
    return backbone, {k: v.clone() for k, v in backbone.module.state_dict().items()}


def _finite(curve) -> bool:
    return all(v is not None and math.isfinite(v) for v in curve)


# -- the training paths ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["partial", "full", "linear-augmented"])
def test_the_loop_records_the_mean_loss_of_every_epoch(tiny, digit_data, mode):
    backbone, master = tiny
    fields = {"mode": mode, "lr": 0.05, "epochs": 4}
    if mode == "partial":
        fields["trainable_blocks"] = 1
    if mode == "linear-augmented":  # a probe that augments trains through the loop
        fields = {**fields, "mode": "linear", "augment": "flip", "lr": 0.5}
    result = finetune(backbone, master, digit_data, trial("s", 0, **fields), "accuracy", CPU)
    curve = result.details["loss_curve"]
    assert result.status == "ok" and result.details["diverged_at"] is None
    assert len(curve) == 4 and _finite(curve)
    assert curve[-1] < curve[0]  # digits are learnable: the loss goes down
    assert all(round(v, 12) == float(f"{v:.5g}") for v in curve)  # stored compactly


def test_stacked_linear_heads_record_a_curve_per_head(digit_data):
    x = digit_data.train_x.float().flatten(1) / 255
    tx = digit_data.test_x.float().flatten(1) / 255
    trials = [trial("a", 0, mode="linear", lr=0.5, epochs=6), trial("a", 1, mode="linear", lr=0.1, epochs=6)]
    together = train_linear_heads(x, digit_data.train_y, tx, digit_data.test_y, 3, trials, "accuracy")
    for t, result in zip(trials, together, strict=True):
        curve = result.details["loss_curve"]
        assert len(curve) == 6 and _finite(curve) and curve[-1] < curve[0]
        assert result.details["diverged_at"] is None
        alone = train_linear_heads(x, digit_data.train_y, tx, digit_data.test_y, 3, [t], "accuracy")[0]
        assert curve == pytest.approx(alone.details["loss_curve"], rel=1e-4)


def test_a_diverging_trial_records_where_its_loss_stopped_being_finite(tiny, digit_data):
    backbone, master = tiny
    loop = finetune(
        backbone, master, digit_data, trial("f", 0, mode="full", lr=1e12, epochs=4), "accuracy", CPU
    )
    assert loop.status == "diverged"
    curve, at = loop.details["loss_curve"], loop.details["diverged_at"]
    assert curve[-1] is None and _finite(curve[:-1])  # the curve ends in the epoch that diverged
    assert at["epoch"] == len(curve) and 1 <= at["step"] <= 4 * 3  # 48 images in batches of 16
    assert (at["epoch"] - 1) * 3 < at["step"] <= at["epoch"] * 3

    x = digit_data.train_x.float().flatten(1) * 1e6
    tx = digit_data.test_x.float().flatten(1)
    good, bad = trial("a", 0, mode="linear", lr=0.1), trial("a", 1, mode="linear", lr=1e30)
    heads = train_linear_heads(x, digit_data.train_y, tx, digit_data.test_y, 3, [good, bad], "accuracy")
    assert heads[1].status == "diverged"
    assert heads[1].details["loss_curve"] == [None]
    assert heads[1].details["diverged_at"]["epoch"] == 1 and heads[1].details["diverged_at"]["step"] >= 1
    assert heads[0].status == "ok" and len(heads[0].details["loss_curve"]) == 3


@pytest.mark.parametrize(
    "strategy",
    [{"mode": "full", "optimizer": "sgd"}, {"mode": "partial", "trainable_blocks": 1, "optimizer": "adamw"}],
    ids=["full-sgd", "partial-adamw"],
)
def test_stacked_fine_tunes_record_the_curves_of_the_loop(tiny, digit_data, strategy):
    backbone, master = tiny
    lrs = (0.02, 0.005) if strategy["optimizer"] == "sgd" else (2e-3, 5e-4)
    trials = [trial("s", 0, lr=lrs[0], **strategy), trial("s", 1, lr=lrs[1], **strategy)]
    feed = image_feed(backbone, digit_data)
    stacked = finetune_batched(backbone, master, digit_data, trials, "accuracy", CPU, feed=feed)
    for t, result in zip(trials, stacked, strict=True):
        looped = finetune(backbone, master, digit_data, t, "accuracy", CPU, feed=feed)
        assert len(result.details["loss_curve"]) == 3 and result.details["diverged_at"] is None
        assert result.details["loss_curve"] == pytest.approx(looped.details["loss_curve"], rel=2e-3, abs=1e-4)


def test_a_diverging_stacked_model_ends_its_curve_like_the_loop(tiny, digit_data):
    backbone, master = tiny
    trials = [trial("s", 0, mode="full", lr=0.01), trial("s", 1, mode="full", lr=1e12)]
    stacked = finetune_batched(
        backbone, master, digit_data, trials, "accuracy", CPU, feed=image_feed(backbone, digit_data)
    )
    looped = finetune(backbone, master, digit_data, trials[1], "accuracy", CPU)
    assert stacked[0].status == "ok" and _finite(stacked[0].details["loss_curve"])
    assert stacked[1].status == looped.status == "diverged"
    assert stacked[1].details["diverged_at"] == looped.details["diverged_at"]
    assert len(stacked[1].details["loss_curve"]) == len(looped.details["loss_curve"])


def test_curves_round_trip_through_the_store(store):
    details = {"final_loss": math.nan, "loss_curve": [1.25, None], "diverged_at": {"epoch": 2, "step": 5}}
    result = TrialResult(key="k" * 64, seed=3, status="diverged", score=0.3, seconds=1.0, details=details)
    run_id = new_run_id()
    store.begin_run(run_id, trigger="cli", config_digest="x", plan={"cells": []})
    store.save_trials([(result, TrialPlace("m", "t", "d", "s1", "s"))], run_id=run_id)
    for found in (store.find_trials([result.key]), store.trial_details([result.key])):
        back = found[result.key].details
        assert back["loss_curve"] == [1.25, None] and back["diverged_at"] == {"epoch": 2, "step": 5}
        assert math.isnan(back["final_loss"])
    assert store.trial_details([result.key])[result.key].predictions is None  # not read


def test_the_run_view_marks_divergence_and_caps_its_panels(store, monkeypatch):
    from monitor.api import _run_page, render_run_page
    from monitor.types import CellResult

    curves = {
        "a" * 64: ([1.1, 0.9, 0.7], None),
        "b" * 64: ([1.2, None], {"epoch": 2, "step": 5}),
        "c" * 64: ([None], {"epoch": 1, "step": 1}),
    }
    trials = [
        TrialResult(
            key=key,
            seed=seed,
            status="ok" if at is None else "diverged",
            score=0.5,
            seconds=1.0,
            details={"loss_curve": curve, "diverged_at": at},
        )
        for seed, (key, (curve, at)) in enumerate(curves.items())
    ]
    run_id = new_run_id()
    store.begin_run(run_id, trigger="cli", config_digest="x", plan={"cells": []})
    store.save_trials([(t, TrialPlace("m", "t", "d", "s1", "s")) for t in trials], run_id=run_id)
    cells = [
        CellResult("m", "t", "d", "s1", "s", "diverged", 0.5, (0.5, 0.5), 2.0, keys=("a" * 64, "b" * 64)),
        CellResult("m", "t", "d", "s1", "boom", "diverged", 0.5, (0.5,), 1.0, keys=("c" * 64,)),
    ]
    store.finish_run(run_id, status="completed", seconds=3.0, scores=[], cells=cells)
    page = render_run_page(store, store.get_run(run_id))
    assert page.count("<polyline") == 1  # seed 0's three epochs; seed 1 has one finite epoch
    assert "seed 1: score 0.500, diverged in epoch 2 (step 5)" in page and ">×" in page
    assert "diverged in its first epoch: no finite epoch loss to draw" in page
    monkeypatch.setattr(_run_page, "MAX_PANELS", 1)
    capped = render_run_page(store, store.get_run(run_id))
    assert capped.count('class="panel"') == 1 and "curves of the first 1 of 2 cells shown" in capped


# -- a run of the pipeline: run view, JSON, report, TensorBoard -----------------------------------


@dataclass
class Evaluated:
    root: Path
    config: dict
    report: RunReport
    store: Store

    @property
    def settings(self) -> Settings:
        return load_settings(self.root / "persistence-monitor.yaml")


@pytest.fixture()
def curves_run(workspace):
    """One evaluation of the digits workspace with TensorBoard event files (4 strategies, 2 seeds)."""
    root, config = workspace
    config = {**config, "executor": {"tensorboard_dir": "tb"}}
    report, _, store = evaluate(root, config)
    try:
        yield Evaluated(root, config, report, store)
    finally:
        store.close()


def test_every_trial_of_a_run_has_a_curve_of_its_epochs(curves_run):
    report, store = curves_run.report, curves_run.store
    epochs = {s["name"]: s["epochs"] for s in curves_run.config["strategies"]}
    cells = report.models[0].cells
    trials = store.trial_details(k for c in cells for k in c.keys)
    assert len(trials) == len(cells) * 2
    for cell in cells:
        for key in cell.keys:
            curve = trials[key].details["loss_curve"]
            assert len(curve) == epochs[cell.strategy] and _finite(curve), cell.strategy
            assert trials[key].details["diverged_at"] is None


def test_the_run_view_plots_each_cells_seeds(curves_run):
    report, store = curves_run.report, curves_run.store
    app = create_app(
        controller=Stand(), store=store, settings=curves_run.settings, registry=CollectorRegistry()
    )
    with TestClient(app) as http:
        assert f"href='/runs/{report.run_id}'" in http.get("/").text  # linked from the status page
        page = http.get(f"/runs/{report.run_id}")
        assert page.status_code == 200
        cells = report.models[0].cells
        for cell in cells:
            anchor = f"cell/cnn/{cell.task}/{cell.dataset}/{cell.strategy}"
            assert f"href='#{anchor}'" in page.text and f'id="{anchor}"' in page.text
        assert page.text.count("<polyline") == 2 * sum(1 for c in cells if c.strategy != "full")
        assert "seed 0: score" in page.text and "seed 1: score" in page.text

        trials = http.get(f"/api/v1/runs/{report.run_id}/trials")
        assert trials.status_code == 200
        body = trials.json()
        assert len(body) == 2 * len(cells)
        by_strategy = {(t["dataset"], t["strategy"], t["seed"]): t for t in body}
        first = by_strategy[("a", "lin-a", 0)]
        assert len(first["loss_curve"]) == 5 and first["diverged_at"] is None and first["status"] == "ok"
        assert http.get("/runs/" + "0" * 32).status_code == 404
        assert http.get("/api/v1/runs/" + "0" * 32 + "/trials").status_code == 404
        assert http.get("/runs/not-an-id").status_code == 404
        assert "/api/v1/runs/{run_id}/trials" in http.get("/openapi.json").json()["paths"]


def test_the_report_draws_the_curves_of_the_latest_cells(curves_run, tmp_path):
    written = write_report(curves_run.settings, curves_run.store, tmp_path / "report.html")
    curves = tmp_path / "report-cnn-curves.png"
    assert curves in written and curves.read_bytes().startswith(b"\x89PNG")
    html = (tmp_path / "report.html").read_text()
    assert "training curves of the latest cells of cnn" in html
    assert base64.b64encode(curves.read_bytes()).decode() in html


def test_tensorboard_event_files_per_run_cell_and_seed(curves_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root, report, store = curves_run.root, curves_run.report, curves_run.store
    run_dir = root / "tb" / report.run_id
    cells = report.models[0].cells
    trials = store.trial_details(k for c in cells for k in c.keys)
    for cell in cells:
        for key in cell.keys:
            trial_result = trials[key]
            folder = run_dir / "cnn" / cell.task / cell.dataset / cell.strategy / f"seed{trial_result.seed}"
            files = list(folder.glob("events.out.tfevents.*"))
            assert len(files) == 1, folder
            events = EventAccumulator(str(folder))
            events.Reload()
            assert set(events.Tags()["scalars"]) == {"loss/train", "score"}
            losses = events.Scalars("loss/train")
            curve = trial_result.details["loss_curve"]
            assert [e.step for e in losses] == list(range(1, len(curve) + 1))
            assert [e.value for e in losses] == pytest.approx(curve, rel=1e-6)
            (score,) = events.Scalars("score")
            assert score.value == pytest.approx(trial_result.score, abs=1e-6) and score.step == len(curve)

    # the next run reuses every trial from the store: its folder holds the whole grid as well
    again, _, second = evaluate(root, curves_run.config)
    try:
        assert {c.status for c in again.models[0].cells} == {"cached"}
        assert len(list((root / "tb" / again.run_id).rglob("events.out.tfevents.*"))) == 2 * len(cells)
    finally:
        second.close()


def test_tensorboard_dir_without_tensorboard_is_a_configuration_error(workspace, monkeypatch, capsys):
    import importlib.util

    root, config = workspace
    path = write_config(root / "persistence-monitor.yaml", {**config, "executor": {"tensorboard_dir": "tb"}})
    assert load_settings(path).executor.tensorboard_dir == (root / "tb").resolve()  # relative to the file
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a)
    )
    with pytest.raises(ConfigError) as error:
        load_settings(path)
    assert "executor.tensorboard_dir" in str(error.value)
    assert "pip install 'persistence-monitor[tensorboard]'" in str(error.value)
    assert main(["check-config", "--config", str(path)]) == 2
    assert main(["run-once", "--config", str(path)]) == 2
    assert "persistence-monitor[tensorboard]" in re.sub(r"\s+", " ", capsys.readouterr().err)


@pytest.mark.slow  # two CLI processes
def test_run_once_writes_event_files_and_report_draws_the_curves(workspace, tmp_path):
    import json

    from tests._cli import cli

    root, config = workspace
    write_config(root / "persistence-monitor.yaml", config)
    env = {"PM_EXECUTOR__TENSORBOARD_DIR": str(tmp_path / "tb")}  # from the environment: as the README shows
    ran = cli("run-once", "--json", cwd=root, env=env)
    assert ran.returncode == 0, ran.stderr
    run_id = json.loads(ran.stdout)["run_id"]
    files = list((tmp_path / "tb" / run_id / "cnn").rglob("events.out.tfevents.*"))
    assert len(files) == 2 * 4 * 2  # datasets × strategies × seeds
    made = cli("report", "--out", str(tmp_path / "out" / "report.html"), cwd=root)
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "out" / "report-cnn-curves.png").read_bytes().startswith(b"\x89PNG")
