"""Every fast path of the engine computes what the plain path computes (within float tolerance)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torchvision

from monitor.engine import CellRef, EngineOptions, TrialSpec
from monitor.engine.training import (
    GroupData,
    activation_feed,
    find_chain,
    finetune,
    image_feed,
    runtime_for,
)
from monitor.engine.training._batched import finetune_batched
from monitor.models import load_backbone
from monitor.settings import ModelSpec, StrategySpec

pytestmark = pytest.mark.slow  # fine-tunes and builds real torchvision models, path against path

# fp32 whatever the CPU: these tests compare paths to float tolerance
CPU = runtime_for("cpu", EngineOptions(precision="fp32"))
# the GPUs' numerics (bf16 autocast), on the CPU
BF16 = runtime_for("cpu", EngineOptions(precision="bf16"))


def trial(seed: int, **strategy) -> TrialSpec:
    spec = StrategySpec(name="s", **{"epochs": 2, "batch_size": 16, **strategy})
    return TrialSpec(key=f"k{seed}-{spec.lr}", cell=CellRef("m", "t", "d", "s"), seed=seed, strategy=spec)


def random_data(size: int, classes: int = 3, n: int = 40) -> GroupData:
    g = torch.Generator().manual_seed(0)
    return GroupData(
        train_x=torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g),
        train_y=torch.arange(n) % classes,
        test_x=torch.randint(0, 256, (12, 3, size, size), dtype=torch.uint8, generator=g),
        test_y=torch.arange(12) % classes,
        num_classes=classes,
        scale=torch.full((1, 3, 1, 1), 1 / 64),
        shift=torch.full((1, 3, 1, 1), -2.0),
        channels_last=False,
    )


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("fast") / "r18.pt"
    torch.save(torchvision.models.resnet18(num_classes=4).state_dict(), path)
    backbone = load_backbone(
        ModelSpec(name="r", architecture="torchvision:resnet18", weights=path, image_size=32)
    )
    master = {k: v.clone() for k, v in backbone.module.state_dict().items()}
    return backbone, master


@pytest.fixture(scope="module")
def small_resnet(tmp_path_factory):
    """The same ResNet-18 at 16 px: bf16 is emulated (slow) on CPUs without bf16 instructions,
    and these tests compare numerics, which do not need larger images."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("fast16") / "r18.pt"
    torch.save(torchvision.models.resnet18(num_classes=4).state_dict(), path)
    backbone = load_backbone(
        ModelSpec(name="r", architecture="torchvision:resnet18", weights=path, image_size=16)
    )
    return backbone, {k: v.clone() for k, v in backbone.module.state_dict().items()}


def _params_after(backbone, master, data, t, runtime=CPU, **kw) -> tuple[float, dict]:
    result = finetune(backbone, master, data, t, "accuracy", runtime, **kw)
    return result.score, {k: v.clone() for k, v in backbone.module.state_dict().items()}


@pytest.mark.parametrize("runtime", [CPU, BF16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("blocks", [1, 2])
def test_partial_from_cached_activations_equals_plain_partial(small_resnet, blocks, runtime):
    backbone, master = small_resnet
    # 32 px, one batch an epoch (emulated bf16 costs seconds a step). Not 16 px: there layer4's
    # first 3x3 stride-2 convolution sees a 1x1 input, whose bf16 weight gradient torch's oneDNN
    # CPU kernel gets wrong now and then on AVX512-BF16 CPUs (README "Troubleshooting").
    data = random_data(32, n=16)
    chain = find_chain(backbone, 32)
    assert chain is not None
    feed = activation_feed(backbone, chain, data, blocks, runtime)
    assert feed is not None and feed.kind == "activations"
    assert feed.train.shape[1] == (256 if blocks == 1 else 128)  # the input of layer4 (or layer3)
    if runtime.autocast_dtype is not None:
        assert feed.train.dtype == torch.bfloat16  # half the memory of fp32 activations
    t = trial(0, mode="partial", trainable_blocks=blocks, lr=0.05)
    plain_score, plain = _params_after(backbone, master, data, t, runtime)
    cached_score, cached = _params_after(backbone, master, data, t, runtime, feed=feed)
    assert abs(cached_score - plain_score) <= (0 if runtime.autocast_dtype is None else 1 / 12)
    # Under autocast both paths round the same ops to bf16 (the cache holds what the plain
    # forward computes, though in larger batches): bf16's tolerance covers kernels that pick
    # another algorithm per batch size on other CPUs.
    tight = runtime.autocast_dtype is None
    for key, value in plain.items():
        torch.testing.assert_close(
            cached[key], value, rtol=1e-4 if tight else 1e-2, atol=1e-5 if tight else 1e-3, msg=key
        )


def test_bf16_fine_tunes_track_fp32_ones(small_resnet):
    """bf16 autocast (the GPUs' numerics, and the CPU's where it has bf16 instructions) trains
    the same model as fp32 up to rounding: the weights move the same way."""
    backbone, master = small_resnet
    data = random_data(32, n=16)  # 32 px: see test_partial_from_cached_activations_equals_plain_partial
    for strategy in ({"mode": "full", "lr": 0.002}, {"mode": "partial", "trainable_blocks": 1, "lr": 0.01}):
        t = trial(0, **strategy)
        fp32_score, fp32 = _params_after(backbone, master, data, t, CPU)
        bf16_score, bf16 = _params_after(backbone, master, data, t, BF16)
        moved = [k for k in master if master[k].is_floating_point() and not torch.equal(fp32[k], master[k])]
        assert moved
        a = torch.cat([(fp32[k] - master[k]).flatten() for k in moved])
        b = torch.cat([(bf16[k] - master[k]).flatten() for k in moved])
        assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.9, strategy
        assert float(b.norm()) == pytest.approx(float(a.norm()), rel=0.1), strategy
        assert abs(bf16_score - fp32_score) <= 2 / 12 + 1e-9


@pytest.mark.parametrize(
    ("name", "size", "chained"),
    [
        ("resnet18", 32, True),
        ("mobilenet_v3_small", 64, True),
        ("efficientnet_b0", 64, True),
        ("regnet_y_400mf", 64, True),
        ("mobilenet_v2", 64, False),  # pools functionally in forward: trained the plain way
    ],
)
def test_chain_detection_reproduces_the_model_or_declines(tmp_path, name, size, chained):
    path = Path(tmp_path) / f"{name}.pt"
    torch.save(torchvision.models.get_model(name).state_dict(), path)
    backbone = load_backbone(
        ModelSpec(name="x", architecture=f"torchvision:{name}", weights=path, image_size=size)
    )
    chain = find_chain(backbone, size)
    assert (chain is not None) == chained
    if chain is not None:
        x = torch.randn(3, 3, size, size)
        torch.testing.assert_close(chain.run(x), backbone.module(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("strategy", "runtime"),
    [
        ({"mode": "full", "optimizer": "sgd", "weight_decay": 1e-4}, CPU),
        ({"mode": "full", "optimizer": "adamw", "weight_decay": 0.05}, CPU),
        ({"mode": "partial", "trainable_blocks": 1, "optimizer": "sgd"}, CPU),
        # a bf16 runtime: its activation cache is bf16, its stack trains in fp32 on the CPU
        ({"mode": "partial", "trainable_blocks": 1, "optimizer": "sgd"}, BF16),
        # the strategy fields the stack must honour per model: schedule, warm-up, BatchNorm, augmentation
        ({"mode": "full", "optimizer": "sgd", "schedule": "cosine", "warmup_epochs": 1}, CPU),
        ({"mode": "partial", "trainable_blocks": 1, "optimizer": "sgd", "bn": "train"}, CPU),
        (
            {
                "mode": "full",
                "optimizer": "adamw",
                "augment": "crop_flip",
                "schedule": "step",
                "step_size": 1,
            },
            CPU,
        ),
    ],
    ids=[
        "full-sgd",
        "full-adamw",
        "partial-sgd",
        "partial-sgd-bf16",
        "full-cosine-warmup",
        "partial-bn-train",
        "full-augment-step",
    ],
)
def test_stacked_fine_tunes_equal_looped_ones(resnet, strategy, runtime):
    backbone, master = resnet
    data = random_data(32, n=32)  # two batches an epoch: the data order still matters
    # Small learning rates: at large ones training on random data is chaotic, and the (legitimate)
    # float reordering of batched convolutions grows into visible differences (at a constant
    # 0.001, master weights perturbed by 1e-7 move the looped run's final loss by 1 %).
    lrs = (5e-4, 2.5e-4) if strategy["optimizer"] == "sgd" else (5e-5, 2.5e-5)
    trials = [
        trial(0, lr=lrs[0], **strategy),
        trial(1, lr=lrs[1], **strategy),
        trial(2, lr=lrs[1] / 3, **strategy),
    ]
    feed = image_feed(backbone, data)
    if strategy["mode"] == "partial" and strategy.get("bn") != "train":
        feed = activation_feed(backbone, find_chain(backbone, 32), data, 1, runtime)
    batched = finetune_batched(backbone, master, data, trials, "accuracy", runtime, feed=feed)
    assert [r.key for r in batched] == [t.key for t in trials]
    for t, stacked in zip(trials, batched, strict=True):
        # On the CPU stacks train in fp32 whatever the precision (autocast under vmap is
        # partial there): a bf16 runtime's stack must equal the fp32 loop.
        fp32_feed = dataclasses.replace(feed, train=feed.train.float(), test=feed.test.float())
        looped = finetune(backbone, master, data, t, "accuracy", CPU, feed=fp32_feed)
        assert stacked.status == looped.status == "ok"
        # AdamW normalises each update, so float noise in near-zero gradients becomes lr-sized
        # steps: its tolerance is wider (a wrong lr, init or data order is off by far more).
        rel = 2e-2 if t.strategy.optimizer == "adamw" else 1e-3
        assert stacked.details["final_loss"] == pytest.approx(looped.details["final_loss"], rel=rel, abs=1e-4)
        # and so does the loss of every epoch (the training curve)
        assert stacked.details["loss_curve"] == pytest.approx(looped.details["loss_curve"], rel=rel, abs=1e-4)
        assert stacked.details["diverged_at"] is looped.details["diverged_at"] is None
        # scores may differ by at most one borderline test image after float reordering
        assert abs(stacked.score - looped.score) <= 1 / 12 + 1e-9
    assert not any(p.requires_grad for p in backbone.module.parameters())


def test_under_autocast_stacked_batchnorm_computes_in_fp32_and_hands_back_bf16():
    """The hooks a stack installs under autocast: fp32 into BatchNorm, bf16 out, then gone."""
    from monitor.engine.training._batched import _float_batchnorm_inputs

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
    seen: list[tuple[torch.dtype, torch.dtype]] = []
    spy = net[1].register_forward_hook(lambda m, args, out: seen.append((args[0].dtype, out.dtype)))
    x = torch.randn(2, 3, 8, 8)
    hooks = _float_batchnorm_inputs(net, torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x)
    assert seen[-1][0] == torch.float32 and out.dtype == torch.bfloat16
    for hook in hooks:
        hook.remove()
    spy.remove()
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in net.modules())


def test_linear_features_come_from_the_partial_trials_cached_activations(tmp_path):
    """Beside partial trials of a chain-shaped model, the linear probes' features are finished
    from the partial trials' cached activations: the frozen prefix runs once per image for both,
    and every probe scores as it does in a group of its own."""
    from monitor.engine._messages import Result
    from monitor.engine.training import ModelCache, run_group
    from tests._engine import LINEAR, PARTIAL, engine_workspace, group

    root, prepared = engine_workspace(tmp_path)
    options = EngineOptions(precision="fp32")
    alone = group(root, prepared, "python:tiny_exec:build", [LINEAR], seeds=(0, 1))
    both = group(root, prepared, "python:tiny_exec:build", [LINEAR, PARTIAL], seeds=(0, 1))
    cache = ModelCache()
    _, chain = cache.get(alone, CPU)
    assert chain is not None
    first_unit = chain.units[0][1]
    images: list[int] = []
    first_unit.register_forward_pre_hook(lambda _m, args: images.append(args[0].shape[0]))
    n = prepared[2].n_train + prepared[2].n_test

    def collect(results: dict):
        return lambda m: isinstance(m, Result) and results.__setitem__(m.result.key, m.result)

    plain: dict = {}
    run_group(alone, "cpu", collect(plain), cache=cache, options=options)
    assert sum(images) == n  # the features: every image through the whole model
    images.clear()
    shared: dict = {}
    run_group(both, "cpu", collect(shared), cache=cache, options=options)
    # the prefix once for the cache and the features together (and one image: the cache's size probe)
    assert sum(images) == n + 1
    assert {k: r.status for k, r in shared.items()} == dict.fromkeys(shared, "ok") and len(shared) == 4
    for key, result in plain.items():
        assert shared[key].score == result.score
        assert shared[key].details["final_loss"] == pytest.approx(result.details["final_loss"], rel=1e-4)
