"""Early warning: the `knn` strategy, transferability estimates (LogME, H-score), probe runs and
the `estimate_drop` rule, on real digits."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from monitor.api import render_status_page
from monitor.engine import InlineExecutor
from monitor.engine._keys import strategy_fingerprint
from monitor.engine.training._estimators import h_score, logme
from monitor.engine.training._knn import knn_predict
from monitor.errors import ConfigError
from monitor.metrics import StoreCollector
from monitor.pipeline import run_evaluation
from monitor.settings import StrategySpec, load_settings, settings_from_mapping
from monitor.store import Store
from tests._cli import cli
from tests._daemon import TOKEN
from tests._pipeline import Recorder
from tests._workspace import basic_config, digit_picture, digits, write_config, write_snapshot, write_tiny_cnn

# -- the estimators, against values worked out by hand ----------------------------------------


def test_logme_matches_the_evidence_worked_out_by_hand():
    # F = (1, 1, -sqrt 2) (n = 3, D = 1), labels (0, 0, 1). y ~ N(0, I/b + F F^T / a): along
    # u = F / |F| (|F|^2 = 4) the variance is 1/b + 4/a, across it (2 dims) 1/b. The evidence of
    # a Gaussian is largest where each variance equals the mean square of y in its directions:
    #   class 0, y = (1, 1, 0): (u.y)^2 = 1, rest 1 over 2 dims -> 1/b = 1/2, 1/b + 4/a = 1
    #     log p = -1/2 (log 2pi + 1) - (log pi + 1)
    #   class 1, y = (0, 0, 1): (u.y)^2 = 1/2, rest 1/2 over 2 dims -> 1/b = 1/4, 1/b + 4/a = 1/2
    #     log p = -1/2 (log pi + 1) - (log(pi / 2) + 1)
    # LogME = mean over classes of log p / n.
    class0 = -0.5 * (math.log(2 * math.pi) + 1) - (math.log(math.pi) + 1)
    class1 = -0.5 * (math.log(math.pi) + 1) - (math.log(math.pi / 2) + 1)
    expected = (class0 + class1) / 2 / 3
    features = torch.tensor([[1.0], [1.0], [-math.sqrt(2.0)]])
    assert logme(features, torch.tensor([0, 0, 1]), 2) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize(("n", "dim"), [(40, 6), (9, 24)])  # both eigenbases: n >= D and n < D
def test_logme_is_the_largest_evidence_over_alpha_and_beta(n, dim):
    """Checked against a brute-force maximisation of the Gaussian likelihood (scipy), not the
    fixed point: log N(y; 0, I/b + F F^T/a) over a log-spaced grid refined by Nelder-Mead."""
    from scipy.optimize import minimize
    from scipy.stats import multivariate_normal

    generator = torch.Generator().manual_seed(n)
    labels = torch.arange(n) % 3
    features = torch.randn(n, dim, generator=generator) + labels[:, None].float() * 0.7
    f = features.double().numpy()
    total = 0.0
    for c in range(3):
        y = (labels.numpy() == c).astype(float)

        def negative(log_ab: np.ndarray, y: np.ndarray = y) -> float:
            a, b = np.exp(log_ab)
            return -multivariate_normal(np.zeros(n), np.eye(n) / b + f @ f.T / a).logpdf(y)

        start = min(
            ((la, lb) for la in np.linspace(-6, 6, 13) for lb in np.linspace(-6, 6, 13)),
            key=lambda p: negative(np.array(p)),
        )
        found = minimize(
            negative, np.array(start), method="Nelder-Mead", options={"xatol": 1e-9, "fatol": 1e-12}
        )
        total += -found.fun / n
    assert logme(features, labels, 3) == pytest.approx(total / 3, abs=1e-6)


def test_h_score_worked_out_by_hand():
    # f = (0, 2, 4, 6), labels (0, 0, 1, 1): var f = (9 + 1 + 1 + 9) / 4 = 5; the class means
    # 1 and 5 give E[f|y] - E f = (-2, -2, 2, 2), variance 4: H = 4 / 5.
    assert h_score(
        torch.tensor([[0.0], [2.0], [4.0], [6.0]]), torch.tensor([0, 0, 1, 1]), 2
    ) == pytest.approx(0.8)
    # Two dimensions, the second one pure noise about the class: cov_f = diag(1, 1) once centred
    # (f = (+-1, +-1) in every combination), E[f|y] = (+-1, 0): H = tr(diag(1, 0)) = 1.
    f = torch.tensor([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]])
    assert h_score(f, torch.tensor([0, 0, 1, 1]), 2) == pytest.approx(1.0)


def test_estimates_rank_separable_features_above_shuffled_labels():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(120) % 4
    features = torch.randn(120, 16, generator=generator) + torch.nn.functional.one_hot(labels, 16).float() * 3
    shuffled = labels[torch.randperm(120, generator=generator)]
    assert logme(features, labels, 4) > logme(features, shuffled, 4) + 0.05
    assert h_score(features, labels, 4) > h_score(features, shuffled, 4) + 0.5


# -- knn ----------------------------------------------------------------------------------------


def test_knn_votes_by_similarity_weight_not_by_count():
    # The test point's 3 nearest: one class-0 neighbour at cosine 0.99 and two class-1 ones at
    # cosine 0.5. Counting votes picks class 1; the weights exp(s / 0.07) pick class 0:
    # e^(0.99/0.07) = 1.4e6 against 2 e^(0.5/0.07) = 2.5e3.
    angle = math.acos(0.99)
    train = torch.tensor(
        [
            [math.cos(angle), math.sin(angle)],
            [0.5, math.sqrt(0.75)],
            [0.5, -math.sqrt(0.75)],
            [-1.0, 0.0],  # far away: not among the 3
        ]
    )
    labels = torch.tensor([0, 1, 1, 0])
    test = torch.tensor([[3.0, 0.0]])  # the length does not matter (cosine)
    assert knn_predict(train, labels, test, 2, k=3).tolist() == [0]
    # With k = 1 only the nearest votes; with k larger than the split every image votes.
    assert knn_predict(train, labels, test, 2, k=1).tolist() == [0]
    assert knn_predict(train, labels, torch.tensor([[0.0, 1.0]]), 2, k=100).tolist() == [1]


# -- settings and keys --------------------------------------------------------------------------


def test_a_knn_strategy_takes_only_k():
    assert StrategySpec(name="nn", mode="knn").k == 20
    assert StrategySpec(name="nn", mode="knn", k=5).k == 5
    with pytest.raises(ValidationError, match="lr: a knn strategy does not train"):
        StrategySpec(name="nn", mode="knn", lr=0.1)
    with pytest.raises(ValidationError, match="k: only meaningful when mode is 'knn'"):
        StrategySpec(name="lin", mode="linear", lr=0.1, epochs=1, k=5)
    with pytest.raises(ValidationError, match="epochs: required when mode is 'linear'"):
        StrategySpec(name="lin", mode="linear", lr=0.1)


def test_the_new_fields_leave_every_other_strategy_key_as_it_was():
    """`k` and the now optional lr/epochs must not change the keys of stored trials."""
    linear = StrategySpec(name="lin", mode="linear", lr=0.1, epochs=5)
    assert strategy_fingerprint(linear) == {
        "mode": "linear",
        "optimizer": "sgd",
        "lr": 0.1,
        "epochs": 5,
        "batch_size": 64,
        "weight_decay": 0.0,
        "momentum": 0.9,
        "label_smoothing": 0.0,
        "trainable_blocks": None,
        "schedule": "constant",
        "warmup_epochs": 0,
        "augment": "none",
    }
    assert strategy_fingerprint(StrategySpec(name="a", mode="knn", k=5)) != strategy_fingerprint(
        StrategySpec(name="b", mode="knn", k=7)
    )


def test_early_warning_and_on_new_data_are_validated(tmp_path):
    base = basic_config([{"name": "m", "architecture": "python:x:build"}], {"t": [("d", "data")]})
    (tmp_path / "data").mkdir()
    for bad, message in (
        (
            {"early_warning": {"estimators": ["logme", "leep"]}},
            r"early_warning.estimators\[1\]: Input should be 'logme' or",
        ),
        ({"early_warning": {"estimators": ["logme", "logme"]}}, "duplicate estimator name 'logme'"),
        (
            {"schedule": {"on_new_data": "sometimes"}},
            "schedule.on_new_data: Input should be 'grid' or 'probes'",
        ),
    ):
        with pytest.raises(ConfigError, match=message):
            settings_from_mapping({**base, **bad}, base_dir=tmp_path)


# -- through the pipeline ---------------------------------------------------------------------

STRATEGIES = [
    {"name": "nn", "mode": "knn", "k": 10},
    {"name": "lin", "mode": "linear", "lr": 0.1, "epochs": 3, "batch_size": 16},
    {"name": "part", "mode": "partial", "trainable_blocks": 1, "lr": 0.05, "epochs": 1, "batch_size": 16},
]


@pytest.fixture()
def workspace(tmp_path: Path):
    write_tiny_cnn(tmp_path, name="ew_cnn")
    write_snapshot(tmp_path / "data" / "a" / "2026-01-01T00", (5, 6, 7), per_class=24)
    config = basic_config(
        [{"name": "cnn", "architecture": "python:ew_cnn:build"}],
        {"digits": [("a", "data/a")]},
        strategies=STRATEGIES,
    )
    config["early_warning"] = {"estimators": ["logme", "hscore"]}
    return tmp_path, config


def _evaluate(root: Path, config: dict, *, probes: bool = False):
    settings = load_settings(write_config(root / "persistence-monitor.yaml", config))
    store = Store.open(settings.resolved_database_url)
    report = run_evaluation(settings, store, InlineExecutor("cpu"), observer=Recorder(), probes=probes)
    return settings, report, store


def test_knn_cells_count_in_p_m_and_estimates_are_stored_and_reused(workspace):
    root, config = workspace
    settings, report, store = _evaluate(root, config)
    try:
        (model,) = report.models
        cells = {c.strategy: c for c in model.cells}
        knn = cells["nn"]
        assert knn.status == "ok" and 0.3 <= knn.score <= 1.0  # three digit classes, chance is 1/3
        assert len(set(knn.seed_scores)) == 1  # nothing random: every seed agrees
        # P(M) is the mean of the three cells (one task, one dataset), knn included
        assert model.score.persistence == pytest.approx(sum(c.score for c in model.cells) / 3)
        assert {(e.dataset, e.estimator, e.status) for e in model.estimates} == {
            ("a", "logme", "ok"),
            ("a", "hscore", "ok"),
        }
        assert all(math.isfinite(e.value) for e in model.estimates)
        stored = {(e.estimator, e.value) for e in store.run_estimates(report.run_id)}
        assert stored == {(e.estimator, e.value) for e in model.estimates}

        registry = CollectorRegistry()
        registry.register(StoreCollector(store, settings))
        for e in model.estimates:
            labels = {"model": "cnn", "task": "digits", "dataset": "a", "estimator": e.estimator}
            assert registry.get_sample_value("persistence_transferability_score", labels) == e.value
        # the status page (and the report, which renders it offline) shows them with their line
        page = render_status_page(store, settings, None, [])
        assert "transferability estimates on the frozen features" in page
        (logme_value,) = [e.value for e in model.estimates if e.estimator == "logme"]
        assert f"{logme_value:.4f}" in page and ">nn<" in page  # the knn column of the heat map
    finally:
        store.close()

    _, again, store = _evaluate(root, config)
    try:
        assert again.trials_run == 0  # knn trials and estimates come from the store like any trial
        assert {e.status for e in again.models[0].estimates} == {"cached"}
        assert [e.value for e in again.models[0].estimates] == [e.value for e in model.estimates]
    finally:
        store.close()


def test_run_once_json_lists_the_transferability_of_each_model(workspace):
    root, config = workspace
    config_file = write_config(root / "persistence-monitor.yaml", config)
    result = cli("run-once", "--config", str(config_file), "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    (model,) = document["models"]
    assert {c["strategy"] for c in model["cells"]} == {"nn", "lin", "part"}
    assert sorted((t["dataset"], t["estimator"]) for t in model["transferability"]) == [
        ("a", "hscore"),
        ("a", "logme"),
    ]
    assert {tuple(sorted(t)) for t in model["transferability"]} == {
        ("dataset", "estimator", "snapshot", "status", "task", "value")
    }
    assert all(t["snapshot"] == "2026-01-01T00" for t in model["transferability"])


def test_a_probe_run_computes_only_the_cheap_cells_and_no_p_m(workspace):
    root, config = workspace
    _, probe, store = _evaluate(root, config, probes=True)
    try:
        (model,) = probe.models
        assert {c.strategy for c in model.cells} == {"nn", "lin"}  # the partial fine-tune waits
        assert model.score.persistence is None and len(model.estimates) == 2
        assert store.latest_scores() == {}  # no P(M) history from a part of the grid
        assert store.latest_estimates(["cnn"])["cnn"]  # but the estimates are there
        assert store.get_run(probe.run_id).trigger == "cli"
    finally:
        store.close()
    _, grid, store = _evaluate(root, config)
    try:
        statuses = {c.strategy: c.status for c in grid.models[0].cells}
        assert statuses == {"nn": "cached", "lin": "cached", "part": "ok"}  # the probes are reused
        assert grid.models[0].score.persistence is not None
        assert set(store.latest_scores()) == {"cnn"}
    finally:
        store.close()


def _noisy_snapshot(root: Path, *, offset: int, noise: float, seed: int) -> None:
    """Digits with Gaussian pixel noise of `noise` (in units of the 0-255 range)."""
    images, labels = digits()
    rng = np.random.default_rng(seed)
    for cls in (5, 6, 7):
        for n, i in enumerate(np.flatnonzero(labels == cls)[offset : offset + 24]):
            split = "test" if n % 3 == 0 else "train"
            folder = root / split / str(cls)
            folder.mkdir(parents=True, exist_ok=True)
            pixels = np.asarray(digit_picture(images[i]), dtype=np.float32)
            pixels = np.clip(pixels + rng.normal(0, noise * 255, pixels.shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(folder / f"{i:04d}.png")
    (root / "_SUCCESS").touch()


def test_estimate_drop_fires_on_a_corrupted_snapshot_and_only_then(workspace):
    root, config = workspace
    config["strategies"] = [STRATEGIES[0]]  # the estimates are what this test is about
    config["alerts"] = {
        "rules": [{"name": "LogMEDrop", "kind": "estimate_drop", "estimators": ["logme"], "min_drop": 0.05}]
    }
    events = []
    for day, (offset, noise) in enumerate([(0, 0.0), (30, 0.0), (60, 0.0), (90, 0.8)], start=1):
        snapshot = root / "data" / "a" / f"2026-01-0{day}T00"
        if day > 1:
            _noisy_snapshot(snapshot, offset=offset % 100, noise=noise, seed=day)
        _, report, store = _evaluate(root, config, probes=True)
        try:
            (estimate,) = [e for e in report.models[0].estimates if e.estimator == "logme"]
            (state,) = store.alert_states()
        finally:
            store.close()
        events.append((estimate.snapshot, estimate.value, state.state, [e["kind"] for e in report.alerts]))
    values = [value for _, value, _, _ in events]
    assert [state for *_, state, _ in events] == ["ok", "ok", "ok", "firing"], events
    assert values[3] < min(values[:3]) - 0.05, values
    assert events[3][3] == ["firing"]


def test_a_grid_after_a_probe_run_on_the_same_snapshot_does_not_count_twice(workspace):
    root, config = workspace
    config["strategies"] = [STRATEGIES[0]]
    config["alerts"] = {
        "rules": [{"name": "LogMEDrop", "kind": "estimate_drop", "estimators": ["logme"], "for_runs": 2}]
    }
    write_snapshot(root / "data" / "a" / "2026-01-02T00", (5, 6, 7), per_class=24, offset=30)
    updated = []
    for probes in (True, True, False, False):  # the snapshot never changes after the first
        _, _, store = _evaluate(root, config, probes=probes)
        try:
            (state,) = store.alert_states() or [None]
            updated.append(state.last_run_id if state else None)
        finally:
            store.close()
    # Judged once (the first run, on the new estimate); the later runs reuse the same value.
    assert updated[0] is not None and set(updated) == {updated[0]}


# -- the daemon: a new snapshot starts a probe run, the grid waits for its schedule -------------


@pytest.mark.slow
def test_on_the_demo_a_new_snapshot_is_probed_within_a_minute_while_the_grid_waits(tmp_path):
    """The demo as shipped (on_new_data: probes), with lighter fine-tunes: its feed publishes a new
    snapshot of every dataset; estimates and the cheap cells must be there within a minute."""
    import yaml

    from monitor.demo import DemoFeed, build_demo
    from tests._services import DaemonProcess, free_port, wait_until

    config_file = build_demo(tmp_path / "demo", pretrain_epochs=1)
    config = yaml.safe_load(config_file.read_text())
    assert config["schedule"]["on_new_data"] == "probes"
    for strategy in config["strategies"]:
        if strategy["mode"] != "knn":
            strategy["epochs"] = 1
    config["server"] = {"host": "127.0.0.1", "port": free_port(), "api_token": TOKEN}
    config["schedule"].update(evaluate="0 0 1 1 *", poll="1s")  # the grid: once a year, or on request
    write_config(config_file, config)
    daemon = DaemonProcess(config_file).start()
    try:
        (startup,) = wait_until(
            lambda: [r for r in daemon.runs() if r["status"] == "completed"],
            timeout=180,
            what="the start-up grid",
        )
        assert startup["trigger"] == "startup" and startup["models"][0]["persistence"] is not None
        before = set((config_file.parent / "data" / "all-digits" / "scanner-a").iterdir())
        DemoFeed(config_file.parent)()  # a new snapshot of every dataset, one after the other
        published = time.monotonic()
        (new_folder,) = set((config_file.parent / "data" / "all-digits" / "scanner-a").iterdir()) - before
        snapshot = new_folder.name

        def probed() -> dict | None:
            # (a poll may catch the feed half way: then a second probe run takes the rest)
            latest = next((r for r in daemon.runs() if r["status"] == "completed"), None)
            if latest is None or latest["trigger"] != "probes":
                return None
            run = daemon.get(f"/api/v1/runs/{latest['run_id']}").json()
            cells = [c for m in run["models"] for c in m["cells"]]
            return run if {c["snapshot"] for c in cells} == {snapshot} else None

        run = wait_until(probed, timeout=60, what="probes of the new snapshots within a minute")
        assert time.monotonic() - published < 60
        for model in run["models"]:  # the deployed model and the candidate, without P(M)
            assert model["persistence"] is None
            assert {c["strategy"] for c in model["cells"]} == {"knn20", "linear-lr0.1", "linear-lr0.03"}
            assert {t["snapshot"] for t in model["transferability"]} == {snapshot}
            assert len(model["transferability"]) == 4 * 2  # 4 datasets (not the test-only shift) x 2
        # P(M) is still the start-up grid's; the new estimates are exported at once
        assert {m["run_id"] for m in daemon.get("/api/v1/models").json()} == {startup["run_id"]}
        metrics = daemon.get("/metrics").text
        new = {t["value"] for t in run["models"][0]["transferability"]}
        exported = {
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("persistence_transferability_score{") and 'model="digits-cnn"' in line
        }
        assert exported == new
        time.sleep(3)  # three more polls: nothing new, so no grid until the schedule
        runs = daemon.runs()  # newest first
        assert [r["trigger"] for r in runs[:-1]] == ["probes"] * (len(runs) - 1)
        # asked for, the grid runs the rest and reuses the probes
        assert daemon.post("/api/v1/runs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 202
        grid = wait_until(
            lambda: (
                (done := [r for r in daemon.runs() if r["status"] == "completed"])
                and done[0]["trigger"] == "api"
                and done[0]
            ),
            timeout=180,
            what="the requested grid",
        )
        cells = daemon.get(f"/api/v1/runs/{grid['run_id']}").json()["models"][0]["cells"]
        statuses = {(c["strategy"], c["status"]) for c in cells if c["dataset"] == "scanner-a"}
        assert statuses == {
            ("knn20", "cached"),
            ("linear-lr0.1", "cached"),
            ("linear-lr0.03", "cached"),
            ("last-block", "ok"),
            ("full-adamw", "ok"),
        }
        assert grid["models"][0]["persistence"] is not None
    finally:
        daemon.stop()


def test_a_waiting_probe_run_becomes_a_grid_when_a_grid_is_asked_for():
    from monitor.daemon._queue import PROBES, EvaluationQueue

    queue = EvaluationQueue()
    run_id, joined = queue.request(PROBES)
    assert not joined
    assert queue.request("schedule") == (run_id, True)  # the grid takes the probe run's place
    assert [(r.run_id, r.trigger) for r in queue.waiting] == [(run_id, "schedule")]
    assert queue.request(PROBES) == (run_id, True)  # a probe joins a waiting grid
    assert [r.trigger for r in queue.waiting] == ["schedule"]


def test_a_dataset_shifted_only_at_test_time_gets_no_estimates_of_its_own(tmp_path):
    from monitor.engine import plan_estimates
    from monitor.types import ModelVersion, SnapshotInfo

    (tmp_path / "data").mkdir()
    config = basic_config([{"name": "m", "architecture": "python:x:build"}], {"t": [("d", "data")]})
    config["tasks"][0]["datasets"] += [
        {"name": "d-noisy", "derive": {"from": "d", "shift": "gaussian_noise", "severity": 2}},
        {
            "name": "d-noisy-both",
            "derive": {"from": "d", "shift": "gaussian_noise", "severity": 2, "apply_to": "both"},
        },
    ]
    config["early_warning"] = {"estimators": ["logme"]}
    settings = settings_from_mapping(config, base_dir=tmp_path)
    snapshot = SnapshotInfo("t", "d", "s1", "a" * 64, tmp_path, "data", 0.0)
    planned = plan_estimates(
        settings,
        {"m": ModelVersion("m", "python:x:build", "b" * 64, None)},
        {("t", name): snapshot for name in ("d", "d-noisy", "d-noisy-both")},
    )
    assert [(e.dataset, e.estimator) for e in planned] == [("d", "logme"), ("d-noisy-both", "logme")]
