"""The command line as a user meets it: real processes, exit codes, messages, the JSON document."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import torch
import torchvision
import yaml

from tests._cli import cli
from tests._workspace import basic_config, digit_picture, digits, write_config, write_snapshot


@pytest.mark.slow  # real CLI processes
def test_usage_errors_exit_2():
    assert cli().returncode == 2
    result = cli("run-once", "--bogus")
    assert result.returncode == 2 and "unrecognized arguments: --bogus" in result.stderr
    assert cli("--help").returncode == 0


@pytest.mark.slow  # real CLI processes
def test_missing_config_names_the_ways_to_give_one(tmp_path):
    result = cli("run-once", cwd=tmp_path, env={"PM_CONFIG": ""})
    assert result.returncode == 2
    assert "config file not found" in result.stderr and "--config" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow  # real CLI processes
def test_a_bad_config_names_every_field_and_never_a_secret(tmp_path):
    (tmp_path / "w.pt").write_bytes(b"x")
    config = {
        "server": {"api_token": "tok-SUPERSECRET-1"},
        "models": [{"name": "m", "architecture": "torchvision:resnet18", "weights": "w.pt", "imag_size": 32}],
        "tasks": [{"name": "t", "datasets": [{"name": "d", "source": "/srv/nowhere"}]}],
        "strategies": [{"name": "s", "mode": "partial", "lr": -1, "epochs": 1}],
        "alerts": {
            "notifiers": [{"name": "n", "kind": "webhook", "url": "http://x", "secret": "SUPERSECRET-2"}]
        },
    }
    path = write_config(tmp_path / "c.yaml", config)
    result = cli("check-config", "--config", str(path))
    assert result.returncode == 2, result.stderr
    err = result.stderr
    assert "models[0].imag_size: unknown field (did you mean 'image_size'?)" in err
    assert "strategies[0].lr: Input should be greater than 0" in err
    assert "alerts.notifiers[0].secret: expected a Standard Webhooks secret" in err
    assert "SUPERSECRET" not in err + result.stdout and "Traceback" not in err
    # once the schema is right, the paths are checked
    config["models"][0].pop("imag_size")
    config["strategies"][0].update(lr=0.1)
    config["alerts"]["notifiers"][0]["secret"] = "whsec_SUPERSECRET3"
    result = cli("check-config", "--config", str(write_config(tmp_path / "c.yaml", config)))
    assert result.returncode == 2
    assert "strategies[0].trainable_blocks: required when mode is 'partial'" in result.stderr
    config["strategies"][0].update(trainable_blocks=1)
    result = cli("check-config", "--config", str(write_config(tmp_path / "c.yaml", config)))
    assert result.returncode == 2
    assert "tasks[0].datasets[0].source: no such directory: /srv/nowhere" in result.stderr
    assert "SUPERSECRET" not in result.stderr + result.stdout


@pytest.mark.slow  # real CLI processes
def test_env_overrides_the_file(tmp_path):
    (tmp_path / "data").mkdir()
    config = basic_config(
        [{"name": "m", "architecture": "torchvision:resnet18", "weights": "w.pt"}], {"t": [("d", "data")]}
    )
    (tmp_path / "w.pt").write_bytes(b"x")
    path = write_config(tmp_path / "c.yaml", config)
    result = cli("check-config", "--config", str(path), env={"PM_DEVICE": "tpu"})
    assert result.returncode == 2 and "device: expected auto, cpu, cuda, cuda:N or mps" in result.stderr


@pytest.fixture(scope="module")
def resnet_workspace(tmp_path_factory) -> Path:
    """A ResNet-18 pre-trained (briefly, here) on the digits 0-4, and ImageFolder snapshots of 5-9."""
    root = tmp_path_factory.mktemp("resnet")
    images, labels = digits()
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=5)
    seen = [i for i in range(len(labels)) if labels[i] < 5][:400]
    x = torch.stack(
        [
            torch.from_numpy(__import__("numpy").array(digit_picture(images[i])))
            .float()
            .div(255)
            .expand(3, -1, -1)
            for i in seen
        ]
    )
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
        3, 1, 1
    )
    y = torch.from_numpy(labels[seen])
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(3):
        for batch in torch.randperm(len(seen)).split(64):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    torch.save(model.state_dict(), root / "resnet18.pt")
    write_snapshot(root / "snapshots" / "2026-11-01T00", (5, 6, 7, 8, 9), per_class=30)
    config = basic_config(
        [{"name": "resnet18-prod", "architecture": "torchvision:resnet18", "weights": "resnet18.pt"}],
        {"unseen-digits": [("scanner", "snapshots")]},
        strategies=[
            {"name": "linear-lr0.1", "mode": "linear", "lr": 0.1, "epochs": 10, "batch_size": 32},
            {"name": "linear-lr0.01", "mode": "linear", "lr": 0.01, "epochs": 10, "batch_size": 32},
            {
                "name": "last-block",
                "mode": "partial",
                "trainable_blocks": 1,
                "lr": 0.01,
                "epochs": 2,
                "batch_size": 32,
            },
            {
                "name": "full-adamw",
                "mode": "full",
                "optimizer": "adamw",
                "lr": 0.0005,
                "epochs": 1,
                "batch_size": 32,
            },
        ],
    )
    write_config(root / "persistence-monitor.yaml", config)
    return root


@pytest.mark.slow
def test_run_once_json_on_a_torchvision_resnet18(resnet_workspace):
    result = cli("run-once", "--json", cwd=resnet_workspace)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)  # stdout holds the document and nothing else
    # the contract's keys, plus one documented extension: the alerts the run fired or resolved
    assert (
        set(document) == {"run_id", "status", "seconds", "models", "alerts"}
        and document["status"] == "completed"
    )
    assert document["alerts"] == []
    (model,) = document["models"]
    assert model["model"] == "resnet18-prod" and len(model["version"]) == 12
    # the error bar counts the seeds and the test sample; the seed-only figure is kept beside it
    assert model["stderr"] >= model["stderr_seeds"] > 0
    cells = model["cells"]
    assert len(cells) == 4
    for cell in cells:
        assert set(cell) == {
            "task",
            "dataset",
            "snapshot",
            "strategy",
            "score",
            "seed_scores",
            "status",
            "error",
            "seconds",
        }
        assert (
            cell["status"] == "ok" and cell["snapshot"] == "2026-11-01T00" and len(cell["seed_scores"]) == 2
        )
        assert cell["score"] == pytest.approx(statistics.fmean(cell["seed_scores"]))
    # one task, one dataset: P(M) is the mean over strategies (§1)
    assert model["persistence"] == pytest.approx(statistics.fmean(c["score"] for c in cells))
    assert model["coverage"] == 1.0
    linear = next(c for c in cells if c["strategy"] == "linear-lr0.1")
    assert linear["score"] > 0.6, linear  # chance is 0.2 for five digits

    again = cli("run-once", "--json", cwd=resnet_workspace)
    assert again.returncode == 0, again.stderr
    second = json.loads(again.stdout)
    assert {c["status"] for c in second["models"][0]["cells"]} == {"cached"}
    assert second["models"][0]["persistence"] == model["persistence"]
    assert second["seconds"] < 5


@pytest.mark.slow
def test_run_once_prints_a_table_and_check_config_the_grid(resnet_workspace):
    result = cli("check-config", cwd=resnet_workspace, env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr + result.stdout
    assert "= 8 fine-tunes" in result.stdout.replace("\n", " ") and "configuration ok" in result.stdout
    # each strategy with the schedule, warm-up, BatchNorm mode and augmentation it trains with
    last_block = next(line for line in result.stdout.splitlines() if "last-block" in line)
    assert all(word in last_block for word in ("constant", "frozen stages in eval", "none")), last_block
    table = cli("run-once", cwd=resnet_workspace, env={"COLUMNS": "160"})
    assert table.returncode == 0
    assert "resnet18-prod" in table.stdout and "P(M)" in table.stdout and "linear-lr0.1" in table.stdout


@pytest.mark.slow
def test_demo_end_to_end_on_a_reduced_grid(tmp_path):
    from monitor.demo import build_demo

    config_path = build_demo(tmp_path / "demo", pretrain_epochs=1)
    config = yaml.safe_load(config_path.read_text())
    config["strategies"] = [
        s for s in config["strategies"] if s["name"] in ("knn20", "linear-lr0.1", "last-block", "full-adamw")
    ]
    for strategy in config["strategies"]:
        if strategy["mode"] != "knn":
            strategy["epochs"] = 1
    config["seeds"] = [0]
    config_path.write_text(yaml.safe_dump(config))
    result = cli("run-once", "--json", "--config", str(config_path))
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    # the deployed model and a candidate, on every dataset and one derived from scanner-a
    assert [(m["model"], m["role"]) for m in document["models"]] == [
        ("digits-cnn", "deployed"),
        ("digits-cnn-robust", "candidate"),
    ]
    for model in document["models"]:
        assert model["coverage"] == 1.0
        datasets = {(t, d) for t in ("unseen-digits", "all-digits") for d in ("scanner-a", "scanner-b")}
        assert {(c["task"], c["dataset"]) for c in model["cells"]} == datasets | {
            ("unseen-digits", "scanner-a-noisy")
        }
        assert {c["strategy"] for c in model["cells"]} == {
            "knn20",
            "linear-lr0.1",
            "last-block",
            "full-adamw",
        }
        assert {c["snapshot"] for c in model["cells"]} == {"2026-11-15T00"}
        # estimates on every dataset but the test-only shift (its training split is scanner-a's)
        assert {(t["task"], t["dataset"]) for t in model["transferability"]} == datasets
        assert {t["estimator"] for t in model["transferability"]} == {"logme", "hscore"}
    compared = json.loads(cli("compare", "--json", "--config", str(config_path)).stdout)
    assert {m["model"] for m in compared["models"]} == {"digits-cnn", "digits-cnn-robust"} and len(
        compared["pairs"]
    ) == 1
    # a second build is a no-op: the workspace is reused as it is
    assert build_demo(tmp_path / "demo") == config_path
    assert yaml.safe_load(config_path.read_text())["seeds"] == [0]


@pytest.mark.slow
def test_check_config_never_shows_a_database_password(resnet_workspace):
    url = "postgresql+psycopg://monitor:hunter2@127.0.0.1:1/db?password=hunter3"
    result = cli("check-config", cwd=resnet_workspace, env={"PM_DATABASE_URL": url})
    assert "hunter" not in result.stdout + result.stderr
    assert "postgresql+psycopg://monitor:***@127.0.0.1:1/db?…" in result.stdout
    run = cli("run-once", "--json", cwd=resnet_workspace, env={"PM_DATABASE_URL": url})
    assert run.returncode == 1 and "hunter" not in run.stdout + run.stderr
    assert "cannot open the result store" in run.stderr


@pytest.mark.slow  # real CLI processes
def test_an_unusable_demo_directory_is_a_usage_error(tmp_path):
    target = tmp_path / "a-file"
    target.write_text("not a directory")
    result = cli("run-once", "--demo", env={"PM_DEMO_DIR": str(target)})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "demo --force" in result.stderr


def test_an_interrupted_demo_build_leaves_nothing_half_made(tmp_path, monkeypatch):
    from monitor.demo import _pretrain, build_demo

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(_pretrain, "pretrain", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_demo(tmp_path / "demo")
    assert not (tmp_path / "demo").exists()
    assert not list(tmp_path.glob(".demo.building-*"))


@pytest.mark.slow
def test_report_writes_html_with_plots(resnet_workspace, tmp_path):
    assert cli("run-once", cwd=resnet_workspace).returncode == 0  # (cached after the first test)
    result = cli("report", "--out", str(tmp_path / "out" / "report.html"), cwd=resnet_workspace)
    assert result.returncode == 0, result.stderr
    html = (tmp_path / "out" / "report.html").read_text()
    assert "resnet18-prod" in html and "data:image/png;base64," in html and "http-equiv='refresh'" not in html
    png = (tmp_path / "out" / "report-resnet18-prod.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    single = cli("report", "--out", str(tmp_path / "grid.png"), cwd=resnet_workspace)
    assert single.returncode == 0 and (tmp_path / "grid.png").read_bytes().startswith(b"\x89PNG")


def test_check_config_says_how_each_strategy_trains():
    from monitor.cli._check import batchnorm_text, schedule_text
    from monitor.settings import StrategySpec

    def spec(**fields):
        return StrategySpec(name="s", lr=0.1, epochs=4, **{"mode": "full", **fields})

    assert schedule_text(spec()) == "constant"
    assert schedule_text(spec(schedule="cosine", min_lr=0.001)) == "cosine → 0.001"
    assert schedule_text(spec(schedule="linear")) == "linear → 0"
    assert schedule_text(spec(schedule="step", step_size=2, gamma=0.5)) == "step ×0.5 / 2 ep"
    assert batchnorm_text(spec(mode="linear")) == "eval (frozen backbone)"
    assert batchnorm_text(spec()) == "train"
    assert batchnorm_text(spec(mode="partial", trainable_blocks=1)) == "frozen stages in eval"
    assert batchnorm_text(spec(mode="partial", trainable_blocks=1, bn="train")) == "train (every stage)"
