"""Settings: the YAML file, `PM_*` overrides, relative paths, and errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.errors import ConfigError
from monitor.settings import find_config, load_settings, parse_duration
from tests._workspace import write_config


@pytest.fixture()
def minimal(tmp_path: Path) -> dict:
    (tmp_path / "src").mkdir()
    (tmp_path / "w.safetensors").write_bytes(b"x")
    return {
        "models": [{"name": "m", "architecture": "torchvision:resnet18", "weights": "w.safetensors"}],
        "tasks": [{"name": "t", "datasets": [{"name": "d", "source": "src"}]}],
        "strategies": [{"name": "s", "mode": "linear", "lr": 0.1, "epochs": 1}],
    }


def load(tmp_path: Path, document: dict):
    return load_settings(write_config(tmp_path / "c.yaml", document))


def problems(tmp_path: Path, document: dict) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, document)
    return info.value.problems


def test_defaults_and_relative_paths(tmp_path, minimal, monkeypatch):
    monkeypatch.chdir("/")
    settings = load(tmp_path, minimal)
    assert settings.state_dir == tmp_path / "state"
    assert settings.models[0].weights_path == tmp_path / "w.safetensors"
    assert settings.tasks[0].datasets[0].source == str(tmp_path / "src")
    assert settings.resolved_database_url == f"sqlite:///{tmp_path / 'state' / 'monitor.db'}"
    assert settings.server.host == "127.0.0.1" and settings.server.port == 9775
    assert settings.server.api_token is None
    assert settings.seeds == [0, 1, 2] and settings.device == "auto"
    assert settings.schedule.poll == 60.0 and settings.schedule.evaluate == "0 */6 * * *"
    strategy = settings.strategies[0]
    assert (strategy.optimizer, strategy.batch_size, strategy.weight_decay, strategy.momentum) == (
        "sgd",
        64,
        0.0,
        0.9,
    )
    task = settings.tasks[0]
    assert (task.metric, task.train_per_class, task.test_per_class, task.test_fraction) == (
        "accuracy",
        64,
        64,
        0.2,
    )
    assert task.datasets[0].ready_marker == "_SUCCESS"
    assert settings.config_dir == tmp_path


def test_env_overrides_nested_fields_and_lists(tmp_path, minimal, monkeypatch):
    monkeypatch.setenv("PM_SERVER__PORT", "9999")
    monkeypatch.setenv("PM_SERVER__API_TOKEN", "t0ken")
    monkeypatch.setenv("PM_SEEDS", "[4, 5]")
    monkeypatch.setenv("PM_SCHEDULE__POLL", "5m")
    minimal["server"] = {"host": "0.0.0.0", "port": 1234}
    settings = load(tmp_path, minimal)
    assert settings.server.port == 9999 and settings.server.host == "0.0.0.0"  # deep-merged
    assert settings.server.api_token.get_secret_value() == "t0ken"
    assert "t0ken" not in repr(settings) and "t0ken" not in str(settings.model_dump())
    assert settings.seeds == [4, 5] and settings.schedule.poll == 300.0


def test_every_problem_is_reported_at_once_with_its_path(tmp_path, minimal):
    minimal["models"].append({"name": "m", "architecture": "keras:thing"})
    minimal["tasks"][0]["metric"] = "auc"
    minimal["tasks"][0]["datasets"].append({"name": "d", "source": "src"})
    minimal["seeds"] = []
    minimal["schedule"] = {"evaluate": "every day"}
    found = dict(problems(tmp_path, minimal))
    assert "models[1].architecture" in found and "torchvision:<builder>" in found["models[1].architecture"]
    assert "tasks[0].metric" in found and "accuracy" in found["tasks[0].metric"]
    assert "duplicate dataset name 'd'" in found["tasks[0].datasets"]
    assert "seeds" in found
    assert "not a valid 5-field cron expression" in found["schedule.evaluate"]


def test_duplicate_names_and_required_fields(tmp_path, minimal):
    minimal["strategies"].append({"name": "s", "mode": "full", "lr": 0.1, "epochs": 1})
    minimal["tasks"][0].pop("name")
    found = dict(problems(tmp_path, minimal))
    assert found["tasks[0].name"] == "required field is missing"
    assert "duplicate strategy name 's'" in found["strategies"]


def test_local_paths_are_checked_after_the_schema(tmp_path, minimal):
    minimal["models"][0]["weights"] = "missing.pt"
    minimal["tasks"][0]["datasets"][0]["source"] = "nowhere"
    minimal["tasks"][0]["datasets"].append({"name": "e", "source": "gopher://x/y"})
    minimal["tasks"][0]["datasets"].append({"name": "f", "source": "gs://bucket/prefix"})  # gcsfs: not here
    (tmp_path / "model.onnx").write_bytes(b"x")
    minimal["models"].append({"name": "n", "architecture": "torchvision:resnet18", "weights": "model.onnx"})
    found = dict(problems(tmp_path, minimal))
    assert found["models[0].weights"] == f"no such file: {tmp_path / 'missing.pt'}"
    assert "unsupported weights file model.onnx" in found["models[1].weights"]
    assert found["tasks[0].datasets[0].source"] == f"no such directory: {tmp_path / 'nowhere'}"
    assert "unsupported scheme 'gopher'" in found["tasks[0].datasets[1].source"]
    assert "http(s)://" in found["tasks[0].datasets[1].source"]
    assert "pip install 'persistence-monitor[gcs]'" in found["tasks[0].datasets[2].source"]


def test_kind_specific_rules(tmp_path, minimal):
    minimal["models"].append({"name": "ts", "architecture": "torchscript"})
    minimal["strategies"].append(
        {"name": "p", "mode": "linear", "lr": 0.1, "epochs": 1, "trainable_blocks": 2}
    )
    minimal["alerts"] = {"rules": [{"name": "D", "kind": "drop", "baseline": "pinned"}, {"name": "X"}]}
    found = dict(problems(tmp_path, minimal))
    assert "needs `weights:`" in found["models[1].weights"]
    assert "only meaningful when mode is 'partial'" in found["strategies[1].trainable_blocks"]
    assert "required when baseline is 'pinned'" in found["alerts.rules[0].pinned_run"]
    assert "missing `kind:`" in found["alerts.rules[1]"]


def test_yaml_syntax_error_has_a_line_number(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("models:\n  - name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"YAML syntax error at line 3"):
        load_settings(path)


def test_find_config_order(tmp_path, monkeypatch):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("x: 1")
    b.write_text("x: 1")
    monkeypatch.chdir(tmp_path)
    assert find_config(str(a), env={"PM_CONFIG": str(b)}) == a
    assert find_config(None, env={"PM_CONFIG": str(b)}) == b
    with pytest.raises(ConfigError, match=r"persistence-monitor\.yaml"):
        find_config(None, env={})
    (tmp_path / "persistence-monitor.yaml").write_text("x: 1")
    assert find_config(None, env={}) == tmp_path / "persistence-monitor.yaml"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("60s", 60),
        ("5m", 300),
        ("24h", 86400),
        ("1h30m", 5400),
        ("7d", 604800),
        ("250ms", 0.25),
        (90, 90),
        ("12", 12),
    ],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5 parsecs", "m5", "1h-3m"])
def test_bad_durations(text):
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_non_utf8_file_and_bad_urls_are_config_errors(tmp_path, minimal):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("models: []\n# caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_settings(path)
    minimal["tasks"][0]["datasets"][0]["source"] = "https://user:pw@127.0.0.1:99999/m.json"
    found = dict(problems(tmp_path, minimal))
    assert found["tasks[0].datasets[0].source"] == "not a valid URL (check the host and port)"
    assert "pw" not in str(found)


def test_env_json_errors_name_the_variable(tmp_path, minimal, monkeypatch):
    monkeypatch.setenv("PM_SEEDS", "[0, 1")
    found = dict(problems(tmp_path, minimal))
    assert "PM_SEEDS environment variable must hold JSON" in found["seeds"]


def test_seeds_must_fit_a_generator(tmp_path, minimal):
    minimal["seeds"] = [0, 2**64]
    assert "seeds[1]" in dict(problems(tmp_path, minimal))


def test_the_ray_executor_settings(tmp_path, minimal):
    minimal["executor"] = {"kind": "ray"}
    executor = load(tmp_path, minimal).executor
    assert (executor.kind, executor.address, executor.gpus_per_worker, executor.cpus_per_worker) == (
        "ray",
        None,
        1.0,
        1.0,
    )
    assert (executor.max_workers, executor.runtime_env) == (None, None)
    for address in ("auto", "10.0.0.5:6379", "head.ray.svc:6379", "ray://head.ray.svc:10001", "[::1]:6379"):
        minimal["executor"] = {"kind": "ray", "address": address}
        assert load(tmp_path, minimal).executor.address == address
    minimal["executor"] = {"kind": "ray", "address": "head.ray.svc", "max_workers": 0, "cpus_per_worker": 0}
    found = dict(problems(tmp_path, minimal))
    assert "ray://host:port" in found["executor.address"]
    assert {"executor.max_workers", "executor.cpus_per_worker"} <= found.keys()
    minimal["executor"] = {"kind": "spark"}
    assert "executor.kind" in dict(problems(tmp_path, minimal))


def test_precision_is_auto_fp32_or_bf16(tmp_path, minimal, monkeypatch):
    assert load(tmp_path, minimal).executor.precision == "auto"
    minimal["executor"] = {"precision": "fp16"}
    message = dict(problems(tmp_path, minimal))["executor.precision"]
    assert "'auto', 'fp32' or 'bf16'" in message
    monkeypatch.setenv("PM_EXECUTOR__PRECISION", "fp32")
    minimal["executor"] = {}
    assert load(tmp_path, minimal).executor.precision == "fp32"


def test_cpu_workers_is_auto_or_a_positive_count(tmp_path, minimal, monkeypatch):
    assert load(tmp_path, minimal).executor.cpu_workers == "auto"
    monkeypatch.setenv("PM_EXECUTOR__CPU_WORKERS", "4")
    assert load(tmp_path, minimal).executor.cpu_workers == 4
    monkeypatch.delenv("PM_EXECUTOR__CPU_WORKERS")
    minimal["executor"] = {"cpu_workers": 3}
    assert load(tmp_path, minimal).executor.cpu_workers == 3
    for bad in (0, "many", 2.5):
        minimal["executor"] = {"cpu_workers": bad}
        assert (
            "expected 'auto' or a number of worker processes"
            in dict(problems(tmp_path, minimal))["executor.cpu_workers"]
        )


def test_strategy_training_fields_default_to_a_plain_loop(tmp_path, minimal):
    strategy = load(tmp_path, minimal).strategies[0]
    assert (strategy.schedule, strategy.min_lr, strategy.warmup_epochs, strategy.augment) == (
        "constant",
        0,
        0,
        "none",
    )
    assert (strategy.step_size, strategy.gamma, strategy.bn) == (None, 0.1, "frozen")


def test_strategy_fields_that_do_not_fit_the_mode_or_schedule_are_refused(tmp_path, minimal):
    base = {"lr": 0.1, "epochs": 4}
    minimal["strategies"] = [
        {"name": "a", "mode": "full", "schedule": "step", **base},
        {"name": "b", "mode": "full", "schedule": "cosine", "step_size": 2, **base},
        {"name": "c", "mode": "full", "gamma": 0.5, **base},
        {"name": "d", "mode": "full", "min_lr": 0.01, **base},
        {"name": "e", "mode": "full", "schedule": "cosine", "min_lr": 0.5, **base},
        {"name": "f", "mode": "full", "warmup_epochs": 4, **base},
        {"name": "g", "mode": "full", "bn": "train", **base},
        {"name": "h", "mode": "linear", "bn": "frozen", **base},
        {"name": "i", "mode": "full", "schedule": "exponential", **base},
        {"name": "j", "mode": "full", "augment": "mixup", **base},
        # all fine:
        {
            "name": "k",
            "mode": "partial",
            "trainable_blocks": 1,
            "bn": "train",
            "augment": "crop_flip",
            **base,
        },
        {
            "name": "l",
            "mode": "full",
            "schedule": "step",
            "step_size": 2,
            "gamma": 0.5,
            "warmup_epochs": 1,
            **base,
        },
        {"name": "m", "mode": "linear", "schedule": "linear", "min_lr": 0.001, "augment": "flip", **base},
    ]
    found = dict(problems(tmp_path, minimal))
    assert "required when schedule is 'step'" in found["strategies[0].step_size"]
    assert "only meaningful when schedule is 'step'" in found["strategies[1].step_size"]
    assert "only meaningful when schedule is 'step'" in found["strategies[2].gamma"]
    assert "only meaningful when schedule is 'cosine' or 'linear'" in found["strategies[3].min_lr"]
    assert "is above lr" in found["strategies[4].min_lr"]
    assert "leaves no epoch" in found["strategies[5].warmup_epochs"]
    assert "only meaningful when mode is 'partial'" in found["strategies[6].bn"]
    assert "only meaningful when mode is 'partial'" in found["strategies[7].bn"]
    assert "constant" in found["strategies[8].schedule"] and "cosine" in found["strategies[8].schedule"]
    assert "crop_flip" in found["strategies[9].augment"]
    assert not any(path.startswith(("strategies[10]", "strategies[11]", "strategies[12]")) for path in found)


def test_limits_default_to_their_documented_caps_and_take_sizes_with_units(tmp_path, minimal, monkeypatch):
    limits = load(tmp_path, minimal).limits
    assert (limits.max_archive_bytes, limits.max_download_bytes) == (4 * 2**30, 4 * 2**30)
    assert (limits.max_archive_members, limits.max_image_pixels) == (200_000, 40_000_000)
    minimal["limits"] = {
        "max_archive_bytes": "8GiB",
        "max_download_bytes": "500MB",
        "max_image_pixels": 10**8,
    }
    monkeypatch.setenv("PM_LIMITS__MAX_ARCHIVE_MEMBERS", "1000")
    limits = load(tmp_path, minimal).limits
    assert (limits.max_archive_bytes, limits.max_download_bytes) == (8 * 2**30, 500 * 10**6)
    assert (limits.max_archive_members, limits.max_image_pixels) == (1000, 10**8)
    monkeypatch.delenv("PM_LIMITS__MAX_ARCHIVE_MEMBERS")
    minimal["limits"] = {"max_archive_bytes": "4 gigs", "max_image_pixels": 0, "max_pixels": 1}
    found = dict(problems(tmp_path, minimal))
    assert "expected a size such as 4GiB" in found["limits.max_archive_bytes"]
    assert "limits.max_image_pixels" in found and "limits.max_pixels" in found


# -- where models and data live: URLs, storage_options and headers -------------------------------


def test_remote_locations_are_kept_as_urls_and_their_secrets_are_secret(tmp_path, minimal):
    (tmp_path / "secret").write_text("s3cr3t-from-file\n")
    minimal["models"][0]["weights"] = "s3://models/prod/r18.safetensors"
    minimal["models"][0]["storage_options"] = {
        "key": "AKIAEXAMPLE",
        "secret_file": str(tmp_path / "secret"),
        "client_kwargs": {"region_name": "eu-west-1"},
        "anon": False,
    }
    minimal["tasks"][0]["datasets"][0] = {
        "name": "d",
        "source": "https://data.example/m.json",
        "headers": {"Authorization": "Bearer tok-123456", "X-Team_file": str(tmp_path / "secret")},
    }
    settings = load(tmp_path, minimal)
    model, dataset = settings.models[0], settings.tasks[0].datasets[0]
    assert model.weights == "s3://models/prod/r18.safetensors"  # not made a path of the config's folder
    assert (model.weights_kind, model.weights_path, dataset.kind) == ("fsspec", None, "http")
    dumped = settings.model_dump_json() + repr(settings)
    for secret in ("AKIAEXAMPLE", "eu-west-1", "tok-123456"):
        assert secret not in dumped
    from monitor.settings import reveal_headers, reveal_options, secret_values

    assert reveal_options(model.storage_options) == {
        "key": "AKIAEXAMPLE",
        "secret": "s3cr3t-from-file",
        "client_kwargs": {"region_name": "eu-west-1"},
        "anon": False,
    }
    assert reveal_headers(dataset.headers) == {
        "Authorization": "Bearer tok-123456",
        "X-Team": "s3cr3t-from-file",
    }
    assert {"AKIAEXAMPLE", "s3cr3t-from-file", "eu-west-1"} <= set(secret_values(model.storage_options))


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        ({"headers": {"Authorization": "x"}}, "models[0].headers", "only for http(s) weights"),
        ({"weights": "s3://b/w.pt", "headers": {"A": "x"}}, "models[0].headers", "only for http(s) weights"),
        ({"storage_options": {"key": "x"}}, "models[0].storage_options", "only for fsspec weights"),
        ({"weights_sha256": "a" * 64}, "models[0].weights_sha256", "only for http(s) weights"),
        ({"weights": "https://x/w.pt", "weights_sha256": "xyz"}, "models[0].weights_sha256", "64 hex digits"),
        (
            {"weights": "torchvision:ResNet50_Weights.IMAGENET1K_V2", "architecture": "torchscript"},
            "models[0].weights",
            "only goes with architecture torchvision",
        ),
        (
            {"weights": "torchvision:resnet50"},
            "models[0].weights",
            "expected torchvision:<Enum>_Weights.<NAME>",
        ),
        ({"weights": "models:/a/b/c"}, "models[0].weights", "expected models:/<name>@<alias>"),
        ({"weights": "https://x/model.onnx"}, "models[0].weights", "unsupported weights file model.onnx"),
        (
            {"headers": {"Bad Name": "x"}, "weights": "https://x/w.pt"},
            "models[0].headers",
            "not a valid HTTP header name",
        ),
    ],
)
def test_location_options_must_fit_the_location(tmp_path, minimal, change, field, problem):
    minimal["models"][0].update(change)
    found = dict(problems(tmp_path, minimal))
    assert problem in found[field], found


def test_dataset_options_must_fit_the_source(tmp_path, minimal):
    minimal["tasks"][0]["datasets"][0]["headers"] = {"Authorization": "x"}
    found = dict(problems(tmp_path, minimal))
    assert found["tasks[0].datasets[0].headers"] == "only for http(s) manifest sources"
    del minimal["tasks"][0]["datasets"][0]["headers"]
    minimal["tasks"][0]["datasets"][0]["storage_options"] = {"key": "x"}
    found = dict(problems(tmp_path, minimal))
    assert "only for fsspec sources" in found["tasks[0].datasets[0].storage_options"]


def test_a_backend_message_is_scrubbed_of_configured_secrets():
    from pydantic import SecretStr

    from monitor.sources._objects import scrubbed

    options = {"key": SecretStr("AKIA-SECRET-1"), "client_kwargs": {"token": SecretStr("tok-SECRET-2")}}
    error = PermissionError("denied for AKIA-SECRET-1 with tok-SECRET-2\nsecond line AKIA-SECRET-1")
    assert scrubbed(error, options) == "PermissionError: denied for *** with ***"
