"""timm:, hf: and torchvision weights enums: real models built locally, nothing downloaded.

The library facts the daemon asks a child process for (`monitor.models._probe`) are answered
in-process here (the same function, real libraries) so that each test stays fast; one slow test
runs the real child process and checks that its answer is memoised.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest
import timm
import torch
import torchvision
import transformers
from transformers import ConvNextConfig, ConvNextModel, ViTConfig, ViTForImageClassification, ViTModel

from monitor.errors import ConfigError, ModelError, SourceError
from monitor.models import load_backbone
from monitor.models._probe import answer
from monitor.settings import ModelSpec, load_settings
from monitor.sources import _hub, model_version
from monitor.sources._hf import hf_digest
from monitor.sources._hub import check_checkpoint, hub_checkpoint_dir, model_facts, torchvision_checkpoint
from monitor.sources._memo import DigestMemo
from monitor.sources._model_defaults import with_model_defaults
from tests._pipeline import evaluate
from tests._workspace import write_config, write_snapshot

R18_ENUM = "ResNet18_Weights.IMAGENET1K_V1"
R18_FILE = "resnet18-f37072fd.pth"  # torchvision's published name: the sha256 prefix is in it


def spec(**fields) -> ModelSpec:
    return ModelSpec(**{"name": "m", "image_size": 32, **fields})


@pytest.fixture
def probe(monkeypatch):
    """The probe's own `answer`, in this process: the real libraries, no child process; counts calls."""
    calls: list[dict] = []

    def run(request):
        calls.append({k: list(v) for k, v in request.items()})
        return json.loads(json.dumps(answer(dict(request))))  # what crosses the pipe is JSON

    monkeypatch.setattr(_hub, "_run_probe", run)
    return calls


# -- timm ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def timm_resnet18(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=7).eval()
    path = tmp_path_factory.mktemp("timm") / "resnet18.safetensors"
    from safetensors.torch import save_file

    save_file(model.state_dict(), str(path))
    return path, model


def test_timm_resnet_is_timms_own_pooled_features(timm_resnet18):
    path, reference = timm_resnet18
    backbone = load_backbone(spec(architecture="timm:resnet18", weights=path))
    assert backbone.head == "fc" and backbone.feature_dim == 512  # from get_classifier()
    assert [n for n, _ in backbone.stages] == ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4"]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = reference.forward_head(reference.forward_features(x), pre_logits=True)
    torch.testing.assert_close(backbone.module(x), expected)
    assert not any(p.requires_grad for p in backbone.module.parameters())


def test_timm_vit_at_a_small_image_size_from_a_headless_file(tmp_path):
    # A ViT-Ti/16 exported at 224 without its classifier (num_classes=0), used at 32x32: timm's own
    # filter resamples the position embeddings, as it does for pretrained weights.
    torch.manual_seed(0)
    source = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    path = tmp_path / "vit.pt"
    torch.save(source.state_dict(), path)
    backbone = load_backbone(spec(architecture="timm:vit_tiny_patch16_224.augreg_in21k", weights=path))
    assert backbone.head == "head" and backbone.feature_dim == 192
    assert [n for n, _ in backbone.stages] == [f"blocks.{i}" for i in range(12)]
    assert [type(m).__name__ for m in backbone.head_siblings] == ["LayerNorm"]  # the final norm
    assert tuple(backbone.module.pos_embed.shape) == (1, 1 + 2 * 2, 192)
    assert backbone.module(torch.randn(3, 3, 32, 32)).shape == (3, 192)
    assert len(backbone.trainable_modules(2)) == 3


def test_timm_stages_are_every_child_of_the_feature_container(tmp_path):
    # EfficientNet's feature_info taps blocks 0, 1, 2, 4, 6: every block is still a stage.
    path = tmp_path / "effnet.pt"
    torch.save(timm.create_model("efficientnet_b0", pretrained=False).state_dict(), path)
    backbone = load_backbone(spec(architecture="timm:efficientnet_b0", weights=path))
    assert backbone.head == "classifier"
    assert [n for n, _ in backbone.stages] == [f"blocks.{i}" for i in range(7)] + ["conv_head"]
    assert [type(m).__name__ for m in backbone.head_siblings] == ["BatchNormAct2d"]  # bn2


def test_timm_unknown_names_say_the_closest(tmp_path, timm_resnet18):
    path, _ = timm_resnet18
    with pytest.raises(ModelError, match="timm has no model resnet19; did you mean resnet18"):
        load_backbone(spec(architecture="timm:resnet19", weights=path))
    with pytest.raises(ModelError, match=r"no pretrained tag 'augreg_in22k'; did you mean .*augreg_in21k"):
        load_backbone(spec(architecture="timm:vit_tiny_patch16_224.augreg_in22k", weights=path))


def test_timm_weights_of_another_model_are_explained(timm_resnet18, tmp_path):
    path = tmp_path / "r34.pt"
    torch.save(timm.create_model("resnet34", pretrained=False).state_dict(), path)
    with pytest.raises(ModelError, match=r"does not match timm:resnet18: unexpected keys layer1\.2\."):
        load_backbone(spec(architecture="timm:resnet18", weights=path))


@pytest.mark.parametrize(
    ("module", "architecture", "extra"), [("timm", "timm:resnet18", "timm"), ("transformers", "hf:/x", "hf")]
)
def test_a_missing_library_names_its_extra(monkeypatch, timm_resnet18, module, architecture, extra):
    monkeypatch.setitem(sys.modules, module, None)  # `import timm` now fails as if it were absent
    path, _ = timm_resnet18
    weights = path if extra == "timm" else None
    with pytest.raises(ModelError, match=rf"pip install 'persistence-monitor\[{extra}\]'"):
        load_backbone(spec(architecture=architecture, weights=weights))


# -- Hugging Face -------------------------------------------------------------------------------


def _tiny_vit_config() -> ViTConfig:
    return ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )


@pytest.fixture(scope="module")
def hf_models(tmp_path_factory) -> dict[str, tuple[Path, torch.nn.Module]]:
    """Tiny ViT (with and without its pooler) and ConvNeXt folders, written by save_pretrained."""
    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    vit = ViTModel(_tiny_vit_config()).eval()
    classifier = ViTForImageClassification(_tiny_vit_config()).eval()
    convnext = ConvNextModel(
        ConvNextConfig(num_channels=3, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, image_size=32)
    ).eval()
    models = {"vit": vit, "vit-classifier": classifier, "convnext": convnext}
    transformers.utils.logging.disable_progress_bar()
    for name, model in models.items():
        model.save_pretrained(root / name)
    return {name: (root / name, model) for name, model in models.items()}


def test_hf_vit_with_its_pooler_gives_pooler_output(hf_models):
    folder, reference = hf_models["vit"]
    backbone = load_backbone(spec(architecture=f"hf:{folder}"))
    assert backbone.feature_dim == 32 and backbone.head == "head"
    assert [n for n, _ in backbone.stages] == ["model.layers.0", "model.layers.1"]
    assert [type(m).__name__ for m in backbone.head_siblings] == ["LayerNorm", "ViTPooler"]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(backbone.module(x), reference(pixel_values=x).pooler_output)
    assert backbone.module(torch.randn(2, 3, 48, 48)).shape == (2, 32)  # position embeddings interpolated


def test_hf_vit_saved_without_a_pooler_gives_the_token_mean(hf_models):
    # ViTForImageClassification has no pooler: AutoModel's would be random, so it is not used.
    folder, reference = hf_models["vit-classifier"]
    backbone = load_backbone(spec(architecture=f"hf:{folder}"))
    assert [type(m).__name__ for m in backbone.head_siblings] == ["LayerNorm"]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = reference.vit(pixel_values=x).last_hidden_state.mean(dim=1)
    torch.testing.assert_close(backbone.module(x), expected)


def test_hf_convnext_gives_its_pooled_features_and_stages(hf_models):
    folder, reference = hf_models["convnext"]
    backbone = load_backbone(spec(architecture=f"hf:{folder}"))
    assert backbone.feature_dim == 16
    assert [n for n, _ in backbone.stages] == ["model.encoder.stages.0", "model.encoder.stages.1"]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(backbone.module(x), reference(pixel_values=x).pooler_output)


def test_hf_weights_file_is_loaded_over_the_folder(hf_models, tmp_path):
    folder, _ = hf_models["vit"]
    torch.manual_seed(5)
    other = ViTModel(_tiny_vit_config()).eval()
    path = tmp_path / "vit.pt"
    torch.save(other.state_dict(), path)
    config_only = tmp_path / "config-only"  # a folder with just the architecture: weights come from the file
    config_only.mkdir()
    (config_only / "config.json").write_text((folder / "config.json").read_text())
    x = torch.randn(2, 3, 32, 32)
    for base in (folder, config_only):
        backbone = load_backbone(spec(architecture=f"hf:{base}", weights=path))
        with torch.no_grad():
            torch.testing.assert_close(backbone.module(x), other(pixel_values=x).pooler_output)


def test_hf_pickled_weights_load_weights_only_and_never_run_code(hf_models, tmp_path):
    _, reference = hf_models["vit"]
    folder = tmp_path / "bin"
    reference.save_pretrained(folder)
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    assert load_backbone(spec(architecture=f"hf:{folder}")).feature_dim == 32
    marker = tmp_path / "ran"
    (folder / "pytorch_model.bin").write_bytes(_pickle_that_touches(marker))
    with pytest.raises(ModelError, match="transformers cannot load"):
        load_backbone(spec(architecture=f"hf:{folder}"))
    assert not marker.exists()


def _pickle_that_touches(marker: Path) -> bytes:
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    import io

    buffer = io.BytesIO()
    torch.save({"x": Evil()}, buffer, pickle_module=pickle)
    return buffer.getvalue()


def test_hf_folder_problems_are_explained(tmp_path, hf_models):
    folder, _ = hf_models["vit"]
    with pytest.raises(ValueError, match="an hf: model has no classifier to name"):  # refused at load
        spec(architecture=f"hf:{folder}", head="pooler.dense")
    empty = tmp_path / "config-only"
    empty.mkdir()
    (empty / "config.json").write_text((folder / "config.json").read_text())
    with pytest.raises(ModelError, match="holds no weights"):
        load_backbone(spec(architecture=f"hf:{empty}"))
    unknown = tmp_path / "unknown"
    unknown.mkdir()
    (unknown / "config.json").write_text(json.dumps({"model_type": "not-a-model"}))
    (unknown / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    with pytest.raises(ModelError, match="transformers cannot load"):
        load_backbone(spec(architecture=f"hf:{unknown}"))


def test_hf_folder_with_custom_code_is_refused_and_its_code_never_runs(tmp_path, hf_models):
    source, _ = hf_models["vit"]
    folder = tmp_path / "custom"
    folder.mkdir()
    config = json.loads((source / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "custom.Config", "AutoModel": "custom.Model"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes((source / "model.safetensors").read_bytes())
    marker = tmp_path / "ran"
    (folder / "custom.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    with pytest.raises(ModelError, match="trust_remote_code is never used"):
        load_backbone(spec(architecture=f"hf:{folder}"))
    assert not marker.exists()


def test_hf_version_covers_config_and_weights_not_the_preprocessor(hf_models, tmp_path):
    source, _ = hf_models["vit"]
    folder = tmp_path / "vit"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        (folder / name).write_bytes((source / name).read_bytes())
    model = spec(architecture=f"hf:{folder}")
    memo = DigestMemo(tmp_path / "state")
    first = hf_digest(model, memo)
    assert model_version(model, state_dir=tmp_path / "state").digest == first
    (folder / "preprocessor_config.json").write_text("{}")
    assert hf_digest(model, memo) == first
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "layer_norm_eps": 1e-6}))
    assert hf_digest(model, memo) != first
    (folder / "model.safetensors").unlink()
    with pytest.raises(SourceError, match="holds no weights"):
        hf_digest(model, memo)
    weights = tmp_path / "w.pt"  # a config-only folder is fine when `weights:` brings the weights
    weights.write_bytes(b"digested elsewhere")
    assert hf_digest(spec(architecture=f"hf:{folder}", weights=weights), memo) != first


# -- torchvision weights enums -----------------------------------------------------------------


def enum_spec(enum: str = R18_ENUM, builder: str = "resnet18") -> ModelSpec:
    return spec(architecture=f"torchvision:{builder}", weights=f"torchvision:{enum}")


def test_torchvision_enum_is_looked_for_in_the_hub_cache(tmp_path, monkeypatch, probe):
    monkeypatch.delenv("TORCH_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # torch.hub's rule, as torch has it
    assert hub_checkpoint_dir() == tmp_path / "xdg" / "torch" / "hub" / "checkpoints"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    expected = tmp_path / "torch" / "hub" / "checkpoints" / R18_FILE
    assert hub_checkpoint_dir() == expected.parent
    with pytest.raises(SourceError) as info:
        torchvision_checkpoint(enum_spec(), state_dir=tmp_path / "state")
    message = str(info.value)
    assert str(expected) in message
    assert f"torchvision.models.get_weight('{R18_ENUM}').get_state_dict(progress=True" in message
    assert f"~/.cache/torch/hub/checkpoints/{R18_FILE}" in message
    # A locally made resnet18 under the published name is not the published file: its hash says so.
    expected.parent.mkdir(parents=True)
    torch.save(torchvision.models.resnet18().state_dict(), expected)
    with pytest.raises(
        SourceError, match=r"damaged or not the file torchvision publishes: .*name says f37072fd"
    ):
        torchvision_checkpoint(enum_spec(), state_dir=tmp_path / "state")
    assert len(probe) == 1  # the second look was answered from the memo


def test_torchvision_unknown_enum_and_wrong_builder(tmp_path, probe):
    with pytest.raises(SourceError, match=r"no weights ResNet18_Weights\.IMAGENET1K_V9; did you mean .*V1"):
        torchvision_checkpoint(enum_spec("ResNet18_Weights.IMAGENET1K_V9"), state_dir=tmp_path)
    with pytest.raises(SourceError, match="are for torchvision:resnet18, not torchvision:resnet50"):
        torchvision_checkpoint(enum_spec(builder="resnet50"), state_dir=tmp_path)


def test_the_hash_check_accepts_the_right_prefix_and_is_memoised(tmp_path, monkeypatch):
    data = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), data)
    digest = hashlib.sha256(data.read_bytes()).hexdigest()
    named = tmp_path / f"resnet18-{digest[:8]}.pth"
    data.rename(named)
    memo = DigestMemo(tmp_path / "state")
    check_checkpoint(named, memo, what="test")

    def no_reading(path):
        raise AssertionError("an unchanged checkpoint was hashed again")

    monkeypatch.setattr("monitor.sources._digest.sha256_file", no_reading)
    check_checkpoint(named, memo, what="test")  # (size, mtime) unchanged: memo hit
    # The pipeline hands a worker the checked file itself; it loads like any state_dict.
    assert load_backbone(spec(architecture="torchvision:resnet18", weights=named)).feature_dim == 512


# -- defaults from the model ---------------------------------------------------------------------


def _settings(tmp_path: Path, models: list[dict]):
    (tmp_path / "data").mkdir(exist_ok=True)
    document = {
        "state_dir": "state",
        "models": models,
        "tasks": [{"name": "t", "datasets": [{"name": "d", "source": "data"}]}],
        "strategies": [{"name": "lin", "mode": "linear", "lr": 0.1, "epochs": 1}],
    }
    return load_settings(write_config(tmp_path / "persistence-monitor.yaml", document))


def test_defaults_come_from_each_kind_of_model(tmp_path, hf_models, probe):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"not read: defaults need no weights")
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    transformers.ViTImageProcessor(
        size={"height": 48, "width": 48}, image_mean=[0.5, 0.5, 0.5], image_std=[0.25, 0.25, 0.25]
    ).save_pretrained(folder)
    settings = _settings(
        tmp_path,
        [
            {
                "name": "tv",
                "architecture": "torchvision:efficientnet_b3",
                "weights": "torchvision:EfficientNet_B3_Weights.IMAGENET1K_V1",
            },
            {
                "name": "vit",
                "architecture": "timm:vit_tiny_patch16_224.augreg_in21k",
                "weights": str(weights),
            },
            {"name": "hf", "architecture": f"hf:{folder}"},
            {"name": "mine", "architecture": "torchvision:resnet18", "weights": str(weights)},
        ],
    )
    filled = with_model_defaults(settings)
    tv, vit, hf, mine = filled.models
    transforms = torchvision.models.get_weight("EfficientNet_B3_Weights.IMAGENET1K_V1").transforms()
    assert tv.image_size == transforms.crop_size[0] == 300
    assert list(tv.normalize.mean) == transforms.mean and list(tv.normalize.std) == transforms.std
    config = timm.data.resolve_data_config(
        {}, pretrained_cfg=timm.models.get_pretrained_cfg(vit.architecture[5:]).to_dict()
    )
    assert (vit.image_size, vit.normalize.mean, vit.normalize.std) == (224, config["mean"], config["std"])
    assert (hf.image_size, hf.normalize.mean, hf.normalize.std) == (48, (0.5,) * 3, (0.25,) * 3)
    assert mine == settings.models[3]  # a file of torchvision weights says nothing: schema defaults
    assert probe == [
        {
            "torchvision": ["EfficientNet_B3_Weights.IMAGENET1K_V1"],
            "timm": ["vit_tiny_patch16_224.augreg_in21k"],
        }
    ]
    assert with_model_defaults(settings).models == filled.models and len(probe) == 1  # memoised


def test_what_the_config_sets_wins(tmp_path, probe):
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "crop_size": {"height": 256, "width": 256},
                "size": {"shortest_edge": 288},
                "image_mean": [0.5, 0.5, 0.5],
                "image_std": [0.5, 0.5, 0.5],
            }
        )
    )
    settings = _settings(
        tmp_path,
        [
            {"name": "a", "architecture": f"hf:{folder}", "image_size": 64},
            {"name": "b", "architecture": f"hf:{folder}", "normalize": {"mean": [0.1, 0.2, 0.3]}},
            {"name": "c", "architecture": f"hf:{folder}", "image_size": 64, "normalize": {}},
        ],
    )
    a, b, c = with_model_defaults(settings).models
    assert (a.image_size, a.normalize.mean) == (64, (0.5, 0.5, 0.5))
    assert (b.image_size, b.normalize.mean, b.normalize.std) == (256, (0.1, 0.2, 0.3), (0.229, 0.224, 0.225))
    assert c == settings.models[2]
    assert probe == []  # hf: folders are read directly


def test_defaults_refuse_unknown_models_naming_the_field(tmp_path, probe):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"x")
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "preprocessor_config.json").write_text("{not json")
    settings = _settings(
        tmp_path,
        [
            {"name": "a", "architecture": "torchvision:resnet50", "weights": f"torchvision:{R18_ENUM}"},
            {"name": "b", "architecture": "timm:resnet19", "weights": str(weights)},
            {"name": "c", "architecture": f"hf:{folder}"},
        ],
    )
    with pytest.raises(ConfigError) as info:
        with_model_defaults(settings)
    problems = dict(info.value.problems)
    assert "not torchvision:resnet50" in problems["models[0].weights"]
    assert "did you mean resnet18" in problems["models[1].architecture"]
    assert "preprocessor_config.json" in problems["models[2].architecture"]


@pytest.mark.slow  # the real child process imports torch, torchvision and timm (several seconds)
def test_the_probe_runs_in_a_child_process_once(tmp_path, monkeypatch):
    request = {"torchvision": [R18_ENUM], "timm": ["resnet18"]}
    facts = model_facts(request, state_dir=tmp_path)
    assert facts == answer(request)
    assert facts["torchvision"][R18_ENUM]["file"] == R18_FILE

    def no_process(request):
        raise AssertionError("a memoised fact was asked again")

    monkeypatch.setattr(_hub, "_run_probe", no_process)
    assert model_facts(request, state_dir=tmp_path) == facts


# -- a real grid -------------------------------------------------------------------------------


@pytest.mark.slow  # trains: a few seconds
def test_timm_and_hf_models_run_the_grid_beside_a_torchvision_one(tmp_path, timm_resnet18, hf_models):
    from safetensors.torch import save_file

    path, _ = timm_resnet18
    folder, _ = hf_models["vit"]
    torch.manual_seed(0)
    save_file(torchvision.models.resnet18(num_classes=10).state_dict(), tmp_path / "tv-r18.safetensors")
    write_snapshot(tmp_path / "data" / "a" / "2026-01-01T00", (5, 6, 7), per_class=18)
    config = {
        "state_dir": "state",
        "device": "cpu",
        "models": [
            {"name": "timm-r18", "architecture": "timm:resnet18", "weights": str(path), "image_size": 32},
            {"name": "hf-vit", "architecture": f"hf:{folder}", "image_size": 32},
            {
                "name": "tv-r18",
                "architecture": "torchvision:resnet18",
                "weights": str(tmp_path / "tv-r18.safetensors"),
                "image_size": 32,
            },
        ],
        "tasks": [
            {
                "name": "digits",
                "train_per_class": 12,
                "test_per_class": 6,
                "datasets": [{"name": "a", "source": "data/a"}],
            }
        ],
        "strategies": [
            {"name": "lin", "mode": "linear", "lr": 0.1, "epochs": 3, "batch_size": 16},
            {
                "name": "part",
                "mode": "partial",
                "trainable_blocks": 1,
                "lr": 0.01,
                "epochs": 1,
                "batch_size": 16,
            },
        ],
        "seeds": [0],
    }
    report, _, store = evaluate(tmp_path, config)
    store.close()
    assert report.status == "completed"
    for model in report.models:
        assert {c.status for c in model.cells} == {"ok"}, [c.error for c in model.cells]
        assert len(model.cells) == 2
    assert [m.score.model for m in report.models] == ["timm-r18", "hf-vit", "tv-r18"]
