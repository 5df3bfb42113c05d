"""Model selection: the comparison of models (pure scoring, by hand) and `compare` on a real grid."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from monitor.scoring import ModelCells, compare_models
from monitor.types import CellResult, Predictions
from tests._cli import cli
from tests._workspace import basic_config, digit_picture, digits, write_config, write_snapshot, write_tiny_cnn


def _cell(model, dataset, strategy, seeds, *, snapshot="s1", status="ok", predictions=()):
    score = sum(seeds) / len(seeds) if seeds and status != "failed" else None
    return CellResult(
        model, "t", dataset, snapshot, strategy, status, score, tuple(seeds), 1.0, predictions=predictions
    )


def _predictions(labels, predicted, classes=2):
    encode = lambda values: b"".join(int(v).to_bytes(2, "little") for v in values)  # noqa: E731
    return Predictions(encode(labels), encode(predicted), classes)


def test_ranking_and_paired_difference_by_hand():
    # A: d1 {s1, s2}, d2 {s1; s2 failed}, d3 s1 on snapshot s1.
    a = [
        _cell("a", "d1", "s1", (0.80, 0.90)),
        _cell("a", "d1", "s2", (0.70, 0.74)),
        _cell("a", "d2", "s1", (0.60, 0.64)),
        _cell("a", "d2", "s2", (), status="failed"),
        _cell("a", "d3", "s1", (0.50, 0.50)),
    ]
    # B: everything scored; d3 on another snapshot, so it is not paired.
    b = [
        _cell("b", "d1", "s1", (0.70, 0.80)),
        _cell("b", "d1", "s2", (0.72, 0.72)),
        _cell("b", "d2", "s1", (0.50, 0.56)),
        _cell("b", "d2", "s2", (0.90, 0.90)),
        _cell("b", "d3", "s1", (0.50, 0.50), snapshot="s2"),
    ]
    comparison = compare_models([ModelCells("a", "va", a), ModelCells("b", "vb", b)])

    # P(a) = mean over d1 (0.85, 0.72), d2 (0.62), d3 (0.5) = (0.785 + 0.62 + 0.5) / 3 = 0.635
    # P(b) = (0.735 + (0.53 + 0.9) / 2 + 0.5) / 3 = (0.735 + 0.715 + 0.5) / 3 = 0.65: b ranks first
    first, second = comparison.ranking
    assert (first.model, second.model) == ("b", "a")
    assert first.persistence == pytest.approx(0.65) and second.persistence == pytest.approx(0.635)
    assert (first.coverage, second.coverage) == (1.0, 0.8)

    (pair,) = comparison.pairs
    assert (pair.first, pair.second, pair.shared, pair.unpaired) == ("b", "a", 3, 1)
    # Shared: d1/s1, d1/s2, d2/s1. Weights on them: d1's two cells 1/4 each, d2/s1 1/2.
    # P_b|C = (0.75 + 0.72) / 4 + 0.53 / 2 = 0.6325;  P_a|C = (0.85 + 0.72) / 4 + 0.62 / 2 = 0.7025
    assert pair.first_persistence == pytest.approx(0.6325)
    assert pair.second_persistence == pytest.approx(0.7025)
    assert pair.difference == pytest.approx(-0.07)
    # Seed variances s² (two seeds: (x1 - x2)² / 2), per cell: a 0.005, 0.0008, 0.0008;
    # b 0.005, 0, 0.0018. Dataset terms (1/N_S)² Σ s²/n: d1: a 0.25 (0.0025 + 0.0004) = 0.000725,
    # b 0.25 (0.0025 + 0) = 0.000625; d2: a 0.0004, b 0.0009. W_j = 1/2 for both datasets:
    # Var = 0.25 (0.000725 + 0.000625) + 0.25 (0.0004 + 0.0009) = 0.0006625
    assert pair.stderr_seeds == pytest.approx(math.sqrt(0.0006625))
    assert pair.stderr == pytest.approx(math.sqrt(0.0006625))  # no predictions: seeds alone
    assert pair.z == pytest.approx(-0.07 / math.sqrt(0.0006625))
    # d1/s1 differs by -0.10 (term -0.025), d2/s1 by -0.09 (term -0.045); d1/s2 not at all
    assert [(c.dataset, c.strategy) for c in pair.cells] == [("d1", "s1"), ("d2", "s1")]
    assert [c.difference for c in pair.cells] == pytest.approx([-0.10, -0.09])
    assert [c.contribution for c in pair.cells] == pytest.approx([-0.025, -0.045])
    assert compare_models([ModelCells("a", "va", a), ModelCells("b", "vb", b)], top=1).pairs[0].cells == (
        pair.cells[0],
    )


def test_the_test_sample_noise_of_a_difference_is_that_of_the_paired_examples():
    # One cell, one seed each, accuracy on 4 test examples of 2 classes (2 each).
    labels = [0, 0, 1, 1]
    a = _cell("a", "d", "s", (0.75,), predictions=(_predictions(labels, [0, 0, 1, 0]),))  # right: 1 1 1 0
    b = _cell("b", "d", "s", (0.50,), predictions=(_predictions(labels, [0, 1, 0, 1]),))  # right: 1 0 0 1
    (pair,) = compare_models([ModelCells("a", "x", [a]), ModelCells("b", "y", [b])], {"t": "accuracy"}).pairs
    # Influence of the difference per example: (c_a - c_b) / 4 = [0, 1/4, 1/4, -1/4].
    # Class 0: values (0, 1/4), s² = 1/32, n s² = 1/16; class 1: (1/4, -1/4), s² = 1/8, n s² = 1/4.
    assert pair.difference == pytest.approx(0.25)
    assert pair.stderr_seeds is None  # a single seed everywhere: no seed noise to estimate
    assert pair.stderr == pytest.approx(math.sqrt(1 / 16 + 1 / 4))

    # A model right and wrong where the other is, but for one example: the shared noise cancels.
    # Influence of the difference: [0, 0, 0, 1/4]: class 1 (0, 1/4), n s² = 1/16; class 0: 0.
    c = _cell("c", "d", "s", (1.0,), predictions=(_predictions(labels, [0, 0, 1, 1]),))
    (pair,) = compare_models([ModelCells("c", "x", [c]), ModelCells("a", "y", [a])], {"t": "accuracy"}).pairs
    assert (pair.first, pair.difference) == ("c", pytest.approx(0.25))
    assert pair.stderr == pytest.approx(math.sqrt(1 / 16))
    # (each model's own test noise: a 1/16, c 0 — their sum is what independent samples would give)


def test_one_model_under_two_names_differs_by_exactly_nothing():
    a = [_cell("a", "d", "s", (0.6, 0.7))]
    a = [CellResult(**{**vars(a[0]), "keys": ("k0", "k1")})]
    b = [CellResult(**{**vars(a[0]), "model": "b"})]
    (pair,) = compare_models([ModelCells("a", "v", a), ModelCells("b", "v", b)]).pairs
    assert (pair.difference, pair.stderr, pair.stderr_seeds, pair.z, pair.cells) == (0.0, 0.0, 0.0, None, ())


def test_the_role_is_not_part_of_a_trial_key():
    from monitor.engine._keys import trial_key
    from monitor.settings import ModelSpec, StrategySpec, TaskSpec
    from monitor.types import ModelVersion

    task = TaskSpec(name="t", datasets=[{"name": "d", "source": "/data"}])
    strategy = StrategySpec(name="s", mode="linear", lr=0.1, epochs=1)
    version = ModelVersion("m", "python:m:build", "ab" * 32, None)
    keys = {
        role: trial_key(
            ModelSpec(name="m", architecture="python:m:build", role=role),
            version,
            task,
            "cd" * 32,
            strategy,
            0,
        )
        for role in ("deployed", "candidate")
    }
    assert keys["deployed"] == keys["candidate"]  # a promoted candidate keeps its stored results


def test_models_without_results_rank_last_and_pair_with_nothing():
    a = [_cell("a", "d", "s", (0.6, 0.7))]
    empty = [_cell("n", "d", "s", (), status="failed")]
    comparison = compare_models([ModelCells("n", "v", empty), ModelCells("a", "v", a)])
    assert [r.model for r in comparison.ranking] == ["a", "n"]
    assert comparison.ranking[1].persistence is None
    (pair,) = comparison.pairs
    assert (pair.difference, pair.stderr, pair.shared, pair.cells) == (None, None, 0, ())
    with pytest.raises(ValueError, match="more than once"):
        compare_models([ModelCells("a", "v", a), ModelCells("a", "v", a)])


# -- on a real grid: a pre-trained deployed model and a candidate trained from scratch ----------------


@pytest.fixture(scope="module")
def selection(tmp_path_factory) -> Path:
    """A tiny CNN pre-trained (briefly) on the digits 0-4, deployed, beside the same CNN untrained
    as a candidate; one task on two datasets of the digits 5-7; a first run-once already done."""
    import numpy as np
    import torch

    root = tmp_path_factory.mktemp("selection")
    write_tiny_cnn(root, name="select_cnn")
    images, labels = digits()
    seen = np.flatnonzero(labels < 5)[:300]
    x = torch.stack([torch.from_numpy(np.array(digit_picture(images[i]))) for i in seen])
    x = x.float().div(255)[:, None].expand(-1, 3, -1, -1)
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
        3, 1, 1
    )
    y = torch.from_numpy(labels[seen])
    sys.path.insert(0, str(root))
    try:
        from select_cnn import build  # the very module the config names
    finally:
        sys.path.remove(str(root))
    torch.manual_seed(0)
    model = build()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(4):
        for batch in torch.randperm(len(seen)).split(32):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    torch.save(model.state_dict(), root / "tiny-prod.pt")
    for dataset, offset in (("a", 0), ("b", 40)):
        write_snapshot(root / "data" / dataset / "2026-01-01T00", (5, 6, 7), per_class=30, offset=offset)
    config = basic_config(
        [
            {"name": "tiny-prod", "architecture": "python:select_cnn:build", "weights": "tiny-prod.pt"},
            {"name": "tiny-scratch", "architecture": "python:select_cnn:build", "role": "candidate"},
        ],
        {"digits": [("a", "data/a"), ("b", "data/b")]},
        strategies=[
            {"name": "lin-a", "mode": "linear", "lr": 0.1, "epochs": 5, "batch_size": 16},
            {"name": "lin-b", "mode": "linear", "lr": 0.02, "epochs": 5, "batch_size": 16},
        ],
    )
    # Every default rule, and one that judges the candidate by name.
    config["alerts"] = {
        "rules": [
            {"name": "Low", "kind": "below", "threshold": 0.999},
            {"name": "ScratchLow", "kind": "below", "threshold": 0.999, "models": ["tiny-scratch"]},
        ]
    }
    write_config(root / "persistence-monitor.yaml", config)
    return root


@pytest.fixture(scope="module")
def first_run(selection) -> dict:
    result = cli("run-once", "--json", cwd=selection)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.slow  # real CLI processes on a real grid
def test_run_once_says_each_models_role_and_alerts_only_what_the_rules_judge(selection, first_run):
    assert [(m["model"], m["role"]) for m in first_run["models"]] == [
        ("tiny-prod", "deployed"),
        ("tiny-scratch", "candidate"),
    ]
    fired = {(a["model"], a["alert"]) for a in first_run["alerts"]}
    # `Low` names no model: the deployed one only; `ScratchLow` names the candidate.
    assert fired == {("tiny-prod", "Low"), ("tiny-scratch", "ScratchLow")}
    check = cli("check-config", cwd=selection)
    assert check.returncode == 0, check.stderr
    assert "candidate" in check.stdout and "deployed" in check.stdout


@pytest.mark.slow
def test_compare_json_ranks_the_models_and_pairs_them_on_their_cells(selection, first_run):
    result = cli("compare", "--json", cwd=selection)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    run = {m["model"]: m for m in first_run["models"]}
    ranking = document["models"]
    assert [m["rank"] for m in ranking] == [1, 2]
    assert {m["model"]: m["role"] for m in ranking} == {"tiny-prod": "deployed", "tiny-scratch": "candidate"}
    assert ranking[0]["persistence"] >= ranking[1]["persistence"]
    for entry in ranking:  # the very numbers the run stored
        assert entry["persistence"] == pytest.approx(run[entry["model"]]["persistence"])
        assert entry["stderr"] == pytest.approx(run[entry["model"]]["stderr"])
        assert entry["run_id"] == first_run["run_id"] and entry["coverage"] == 1.0
    (pair,) = document["pairs"]
    first, second = run[pair["first"]], run[pair["second"]]
    assert (pair["first"], pair["second"]) == (ranking[0]["model"], ranking[1]["model"])
    # Every cell is shared (one snapshot per dataset); a complete rectangular grid: the
    # difference is the plain mean of the cell differences.
    assert (pair["shared_cells"], pair["unpaired_cells"]) == (4, 0)
    differences = {
        (a["dataset"], a["strategy"]): a["score"] - b["score"]
        for a, b in zip(first["cells"], second["cells"], strict=True)
    }
    assert pair["difference"] == pytest.approx(sum(differences.values()) / 4)
    assert pair["stderr"] > 0 and pair["stderr_seeds"] > 0 and pair["stderr"] >= pair["stderr_seeds"]
    assert pair["z"] == pytest.approx(pair["difference"] / pair["stderr"])
    listed = [(c["dataset"], c["strategy"]) for c in pair["cells"]]
    assert listed == sorted(listed, key=lambda k: -abs(differences[k]))
    assert [c["difference"] for c in pair["cells"]] == pytest.approx([differences[k] for k in listed])


@pytest.mark.slow
def test_compare_table_filter_and_bad_names(selection, first_run):
    table = cli("compare", cwd=selection)
    assert table.returncode == 0, table.stderr
    assert "models ranked by P(M)" in table.stdout and "paired differences" in table.stdout
    assert "tiny-scratch" in table.stdout and "candidate" in table.stdout

    one = cli("compare", "--json", "--models", "tiny-scratch", cwd=selection)
    assert one.returncode == 0, one.stderr
    document = json.loads(one.stdout)
    assert [m["model"] for m in document["models"]] == ["tiny-scratch"] and document["pairs"] == []

    bad = cli("compare", "--models", "tiny-prod,nope,nada", cwd=selection)
    assert bad.returncode == 2 and bad.stdout == ""
    assert "--models: unknown model(s) nope, nada" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_compare_before_any_run_says_so(tmp_path):
    write_tiny_cnn(tmp_path, name="empty_cnn")
    (tmp_path / "data").mkdir()
    config = basic_config(
        [
            {"name": "one", "architecture": "python:empty_cnn:build"},
            {"name": "two", "architecture": "python:empty_cnn:build", "role": "candidate"},
        ],
        {"t": [("d", "data")]},
    )
    write_config(tmp_path / "persistence-monitor.yaml", config)
    result = cli("compare", "--json", cwd=tmp_path)
    assert result.returncode == 1 and result.stdout == ""
    assert "no finished run of one, two yet" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_status_page_metrics_and_report_show_the_comparison(selection, first_run, tmp_path):
    from fastapi.testclient import TestClient
    from prometheus_client import CollectorRegistry

    from monitor.api import create_app
    from monitor.metrics import StoreCollector
    from monitor.settings import load_settings
    from monitor.store import Store
    from tests._api import Stand

    settings = load_settings(selection / "persistence-monitor.yaml")
    store = Store.open(settings.resolved_database_url)
    try:
        registry = CollectorRegistry()
        registry.register(StoreCollector(store, settings))
        client = TestClient(create_app(controller=Stand(), store=store, settings=settings, registry=registry))
        page = client.get("/").text
        compared = json.loads(cli("compare", "--json", cwd=selection).stdout)
        (pair,) = compared["pairs"]
        assert "Model comparison" in page and "(candidate)" in page
        assert f"{pair['difference']:+.3f}" in page and f"{pair['stderr']:.3f}" in page
        models = {m["model"]: m["role"] for m in client.get("/api/v1/models").json()}
        assert models == {"tiny-prod": "deployed", "tiny-scratch": "candidate"}
        value = registry.get_sample_value
        scratch = next(m for m in compared["models"] if m["model"] == "tiny-scratch")
        info = {"model": "tiny-scratch", "version": scratch["version"], "role": "candidate"}
        assert value("persistence_model_info", info) == 1.0
        assert value("persistence_score", {"model": "tiny-scratch"}) == pytest.approx(scratch["persistence"])
        # alert series only where a rule judges the model
        assert value("persistence_alert_firing", {"model": "tiny-scratch", "alert": "Low"}) is None
        assert value("persistence_alert_firing", {"model": "tiny-scratch", "alert": "ScratchLow"}) == 1.0
        assert value("persistence_alert_firing", {"model": "tiny-prod", "alert": "Low"}) == 1.0
        assert {(a["model"], a["alert"]) for a in client.get("/api/v1/alerts").json()} == {
            ("tiny-prod", "Low"),
            ("tiny-scratch", "ScratchLow"),
        }
    finally:
        store.close()

    result = cli("report", "--out", str(tmp_path / "report.html"), cwd=selection)
    assert result.returncode == 0, result.stderr
    html = (tmp_path / "report.html").read_text()
    assert "Model comparison" in html and f"{pair['difference']:+.3f}" in html
    assert (tmp_path / "report_comparison.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
