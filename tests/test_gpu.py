"""The GPU paths: bf16 autocast, channels_last, stacked fine-tunes and the whole engine on CUDA.

Skipped where torch sees no CUDA device (CI has none); `benchmarks/device_check.sh` runs them on
a GPU machine together with the grid benchmark.
"""

from __future__ import annotations

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

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.slow,  # fine-tunes, and a whole grid on the GPU
]

CPU = runtime_for("cpu", EngineOptions(precision="fp32"))


def trial(seed: int, **strategy) -> TrialSpec:
    spec = StrategySpec(name="s", **{"epochs": 2, "batch_size": 16, **strategy})
    return TrialSpec(key=f"k{seed}-{spec.lr}", cell=CellRef("m", "t", "d", "s"), seed=seed, strategy=spec)


def data_on(runtime, size: int = 32, classes: int = 3, n: int = 48) -> GroupData:
    g = torch.Generator().manual_seed(0)
    device = runtime.device
    return GroupData(
        train_x=torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g).to(device),
        train_y=(torch.arange(n) % classes).to(device),
        test_x=torch.randint(0, 256, (12, 3, size, size), dtype=torch.uint8, generator=g).to(device),
        test_y=(torch.arange(12) % classes).to(device),
        num_classes=classes,
        scale=torch.full((1, 3, 1, 1), 1 / 64, device=device),
        shift=torch.full((1, 3, 1, 1), -2.0, device=device),
        channels_last=runtime.channels_last,
    )


@pytest.fixture()
def resnet(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "r18.pt"
    torch.save(torchvision.models.resnet18(num_classes=4).state_dict(), path)

    def on(runtime):
        backbone = load_backbone(
            ModelSpec(name="r", architecture="torchvision:resnet18", weights=path, image_size=32)
        )
        backbone.module.to(runtime.device)
        if runtime.channels_last:
            backbone.module.to(memory_format=torch.channels_last)
        return backbone, {k: v.clone() for k, v in backbone.module.state_dict().items()}

    return on


def test_the_gpu_runtime_is_bf16_channels_last_and_stacks():
    runtime = runtime_for("cuda:0")
    assert runtime.autocast_dtype == torch.bfloat16
    assert runtime.channels_last and runtime.batch_finetunes
    assert runtime_for("cuda:0", EngineOptions(precision="fp32")).autocast_dtype is None


@pytest.mark.parametrize("mode", ["full", "partial"])
def test_a_gpu_fine_tune_tracks_the_cpu_one(resnet, mode):
    """bf16 + channels_last on the GPU train the model the fp32 CPU loop trains, up to rounding."""
    gpu = runtime_for("cuda:0")
    strategy = (
        {"mode": mode, "lr": 0.002} if mode == "full" else {"mode": mode, "trainable_blocks": 1, "lr": 0.01}
    )
    t = trial(0, **strategy)
    moved = {}
    for name, runtime in (("cpu", CPU), ("gpu", gpu)):
        backbone, master = resnet(runtime)
        data = data_on(runtime)
        finetune(backbone, master, data, t, "accuracy", runtime)
        after = backbone.module.state_dict()
        moved[name] = torch.cat(
            [
                (after[k].float() - master[k].float()).flatten().cpu()
                for k in master
                if master[k].is_floating_point()
            ]
        )
    similarity = torch.nn.functional.cosine_similarity(moved["cpu"], moved["gpu"], dim=0)
    assert similarity > 0.9
    assert float(moved["gpu"].norm()) == pytest.approx(float(moved["cpu"].norm()), rel=0.1)


@pytest.mark.parametrize(
    "strategy",
    [
        {"mode": "full", "optimizer": "sgd", "weight_decay": 1e-4},
        {"mode": "full", "optimizer": "adamw", "weight_decay": 0.05},
        {"mode": "partial", "trainable_blocks": 1, "optimizer": "sgd"},
    ],
    ids=["full-sgd", "full-adamw", "partial-sgd"],
)
def test_stacked_fine_tunes_equal_looped_ones_on_the_gpu(resnet, strategy):
    """vmap under CUDA autocast: the stack trains in bf16 like the loop (BatchNorm given fp32)."""
    gpu = runtime_for("cuda:0")
    backbone, master = resnet(gpu)
    data = data_on(gpu)
    lrs = (0.002, 0.001) if strategy["optimizer"] == "sgd" else (2e-4, 1e-4)
    trials = [trial(0, lr=lrs[0], **strategy), trial(1, lr=lrs[1], **strategy)]
    feed = image_feed(backbone, data)
    if strategy["mode"] == "partial":
        feed = activation_feed(backbone, find_chain(backbone, 32), data, 1, gpu)
        assert feed is not None and feed.train.dtype == torch.bfloat16
    stacked = finetune_batched(backbone, master, data, trials, "accuracy", gpu, feed=feed)
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in backbone.module.modules())
    assert all(r.details["models_batched"] == 2 for r in stacked)  # it stacked: no fallback
    for t, result in zip(trials, stacked, strict=True):
        looped = finetune(backbone, master, data, t, "accuracy", gpu, feed=feed)
        assert result.status == looped.status == "ok"
        assert result.details["final_loss"] == pytest.approx(looped.details["final_loss"], rel=0.1, abs=1e-3)
        assert result.details["loss_curve"] == pytest.approx(looped.details["loss_curve"], rel=0.1, abs=1e-3)
        assert abs(result.score - looped.score) <= 2 / 12 + 1e-9


def test_the_engine_runs_a_grid_on_the_gpu(tmp_path):
    """run_evaluation with the worker-process executor on cuda: every cell ok, then all cached."""
    from monitor.engine import LocalExecutor
    from monitor.pipeline import run_evaluation
    from monitor.settings import load_settings
    from monitor.store import Store
    from tests._workspace import basic_config, write_config, write_snapshot

    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(num_classes=5).state_dict(), tmp_path / "r18.pt")
    write_snapshot(tmp_path / "data" / "a" / "2026-01-01T00", (5, 6, 7), per_class=24)
    config = basic_config(
        [{"name": "r18", "architecture": "torchvision:resnet18", "weights": "r18.pt"}],
        {"digits": [("a", "data/a")]},
    )
    config["device"] = "cuda"
    settings = load_settings(write_config(tmp_path / "persistence-monitor.yaml", config))
    store = Store.open(settings.resolved_database_url)
    try:
        with LocalExecutor(settings.device, cell_timeout=600) as executor:
            first = run_evaluation(settings, store, executor, trigger="cli")
            again = run_evaluation(settings, store, executor, trigger="cli")
    finally:
        store.close()
    assert first.status == "completed", [(c.strategy, c.status) for c in first.models[0].cells]
    assert all(len(c.seed_scores) == 2 for c in first.models[0].cells)
    assert again.trials_run == 0
