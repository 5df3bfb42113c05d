"""Models: every kind builds from real files, weights load weights-only, mismatches are explained."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from monitor.errors import ModelError
from monitor.models import load_backbone, read_state_dict
from monitor.settings import ModelSpec
from tests._workspace import write_tiny_cnn


def spec(**fields) -> ModelSpec:
    return ModelSpec(**{"name": "m", "image_size": 32, **fields})


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    path = tmp_path_factory.mktemp("weights") / "r18.pt"
    torch.save(model.state_dict(), path)
    return path, model


def test_torchvision_state_dict_gives_the_backbone_features(resnet18_file):
    path, reference = resnet18_file
    backbone = load_backbone(spec(architecture="torchvision:resnet18", weights=path))
    assert backbone.feature_dim == 512 and backbone.head == "fc"
    assert [n for n, _ in backbone.stages] == ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4"]
    x = torch.randn(2, 3, 32, 32)
    expected = torch.nn.Sequential(*list(reference.children())[:-1])(x).flatten(1)
    torch.testing.assert_close(backbone.module(x), expected)
    assert not any(p.requires_grad for p in backbone.module.parameters())


def test_safetensors_and_wrapped_checkpoints_load(tmp_path, resnet18_file):
    _, reference = resnet18_file
    st = tmp_path / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(st))
    wrapped = tmp_path / "wrapped.pth"
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}, "epoch": 3}, wrapped
    )
    x = torch.randn(1, 3, 32, 32)
    a = load_backbone(spec(architecture="torchvision:resnet18", weights=st)).module(x)
    b = load_backbone(spec(architecture="torchvision:resnet18", weights=wrapped)).module(x)
    torch.testing.assert_close(a, b)


def test_weights_of_another_architecture_name_missing_and_unexpected_keys(tmp_path):
    path = tmp_path / "r34.pt"
    torch.save(torchvision.models.resnet34().state_dict(), path)
    with pytest.raises(ModelError) as info:
        load_backbone(spec(architecture="torchvision:resnet18", weights=path))
    message = str(info.value)
    assert str(path) in message and "torchvision:resnet18" in message
    assert "unexpected keys layer1.2." in message


def test_shape_mismatch_is_named(tmp_path):
    state = torchvision.models.resnet18().state_dict()
    state["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(
        ModelError, match=r"shape mismatch conv1\.weight: file \[64, 3, 3, 3\] vs model \[64, 3, 7, 7\]"
    ):
        load_backbone(spec(architecture="torchvision:resnet18", weights=path))


def test_pickled_module_is_refused_not_executed(tmp_path):
    path = tmp_path / "whole-model.pt"
    torch.save(torchvision.models.resnet18(), path)  # a pickled nn.Module, not a state_dict
    with pytest.raises(ModelError, match="weights-only"):
        read_state_dict(path)


def test_garbage_weights_file(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ModelError, match="cannot read weights file"):
        read_state_dict(path)
    st = tmp_path / "garbage.safetensors"
    st.write_bytes(b"\x00" * 16)
    with pytest.raises(ModelError, match="not a valid safetensors file"):
        read_state_dict(st)


def test_unknown_builder_suggests_a_name(tmp_path, resnet18_file):
    path, _ = resnet18_file
    with pytest.raises(ModelError, match="did you mean resnet18"):
        load_backbone(spec(architecture="torchvision:resnet19", weights=path))


def test_torchscript_archive_matches_the_eager_model(tmp_path):
    torch.manual_seed(1)
    eager = torchvision.models.resnet18(num_classes=7).eval()
    path = tmp_path / "r18.torchscript"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(eager).save(str(path))
    backbone = load_backbone(spec(architecture="torchscript", weights=path))
    assert backbone.scripted and backbone.feature_dim == 512
    x = torch.randn(2, 3, 32, 32)
    eager.fc = torch.nn.Identity()
    torch.testing.assert_close(backbone.module(x), eager(x))


def test_not_a_torchscript_archive(tmp_path, resnet18_file):
    path, _ = resnet18_file
    with pytest.raises(ModelError, match="not a TorchScript archive"):
        load_backbone(spec(architecture="torchscript", weights=path))


def test_python_factory_from_the_config_folder(tmp_path):
    arch = write_tiny_cnn(tmp_path, name="factory_a")
    backbone = load_backbone(spec(architecture=arch), config_dir=tmp_path)
    assert backbone.feature_dim == 16 and backbone.head == "fc"
    assert [n for n, _ in backbone.stages] == ["features.0", "features.1", "features.2"]
    # with a state_dict of its own (and a different class count in the head)
    import importlib

    module = importlib.import_module("factory_a").TinyCNN(num_classes=3)
    weights = tmp_path / "tiny.safetensors"
    save_file(module.state_dict(), str(weights))
    loaded = load_backbone(spec(architecture=arch, weights=weights), config_dir=tmp_path)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded.module(x), module.eval().features(x))


def test_python_factory_errors_are_explained(tmp_path):
    (tmp_path / "broken_factory.py").write_text("import not_a_module\n")
    with pytest.raises(ModelError, match="cannot import broken_factory"):
        load_backbone(spec(architecture="python:broken_factory:build"), config_dir=tmp_path)
    (tmp_path / "odd_factory.py").write_text("def build():\n    return 42\n")
    with pytest.raises(ModelError, match=r"returned int, expected a torch\.nn\.Module"):
        load_backbone(spec(architecture="python:odd_factory:build"), config_dir=tmp_path)
    with pytest.raises(ModelError, match="has no attribute 'nope'"):
        load_backbone(spec(architecture="python:odd_factory:nope"), config_dir=tmp_path)


def test_explicit_head_must_be_a_linear(tmp_path, resnet18_file):
    path, _ = resnet18_file
    with pytest.raises(ModelError, match="is a Conv2d, expected a Linear"):
        load_backbone(spec(architecture="torchvision:resnet18", weights=path, head="conv1"))
    with pytest.raises(ModelError, match="names no submodule"):
        load_backbone(spec(architecture="torchvision:resnet18", weights=path, head="classifier"))


def test_stages_of_a_features_model_and_explicit_blocks(tmp_path):
    path = tmp_path / "mnv3.pt"
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), path)
    backbone = load_backbone(spec(architecture="torchvision:mobilenet_v3_small", weights=path, image_size=64))
    assert backbone.head == "classifier.3" and backbone.stages[-1][0] == "features.12"
    assert len(backbone.trainable_modules(2)) == 3  # two stages + the Linear left in the classifier
    with pytest.raises(ModelError, match="has 13 stages"):
        backbone.trainable_modules(14)
    custom = load_backbone(
        spec(architecture="torchvision:mobilenet_v3_small", weights=path, image_size=64, blocks="features.1")
    )
    assert [n for n, _ in custom.stages] == ["features.1.block"]


@pytest.mark.slow  # builds and saves a full-size ViT-B/16
def test_image_size_the_model_cannot_take(tmp_path):
    path = tmp_path / "vit.pt"
    torch.save(torchvision.models.vit_b_16().state_dict(), path)
    with pytest.raises(ModelError, match="does not run on 32x32 images"):
        load_backbone(spec(architecture="torchvision:vit_b_16", weights=path))


@pytest.mark.slow  # builds and saves a full-size DenseNet-121
def test_a_trailing_norm_is_not_a_stage_of_its_own(tmp_path):
    path = tmp_path / "densenet.pt"
    torch.save(torchvision.models.densenet121().state_dict(), path)
    backbone = load_backbone(spec(architecture="torchvision:densenet121", weights=path, image_size=64))
    assert backbone.stages[-1][0] == "features.denseblock4"  # not features.norm5
    assert [type(m).__name__ for m in backbone.head_siblings] == ["BatchNorm2d"]  # it trains with the head


def test_a_factorys_code_is_part_of_its_version(tmp_path, monkeypatch):
    from monitor.sources import model_version

    monkeypatch.syspath_prepend(str(tmp_path))
    arch = write_tiny_cnn(tmp_path, name="versioned_cnn")
    weights = tmp_path / "w.safetensors"
    import importlib

    save_file(importlib.import_module("versioned_cnn").TinyCNN().state_dict(), str(weights))
    model = spec(architecture=arch, weights=weights)
    before = model_version(model, state_dir=tmp_path / "state", config_dir=tmp_path)
    source = tmp_path / "versioned_cnn.py"
    source.write_text(source.read_text().replace("nn.ReLU()", "nn.Tanh()"))
    after = model_version(model, state_dir=tmp_path / "state", config_dir=tmp_path)
    assert before.version != after.version
