"""Training: every fast path agrees with the plain way of doing the same thing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

from monitor.engine import CellRef, EngineOptions, TrialSpec
from monitor.engine.training import (
    GroupData,
    Schedule,
    finetune,
    init_head,
    runtime_for,
    score_predictions,
    train_linear_heads,
)
from monitor.models import load_backbone
from monitor.settings import ModelSpec, StrategySpec
from tests._workspace import write_tiny_cnn

# fp32 whatever the CPU: these tests compare paths to float tolerance
CPU = runtime_for("cpu", EngineOptions(precision="fp32"))


def trial(name: str, seed: int, **strategy) -> TrialSpec:
    spec = StrategySpec(name=name, **{"epochs": 4, "batch_size": 16, **strategy})
    return TrialSpec(key=f"{name}-{seed}", cell=CellRef("m", "t", "d", name), seed=seed, strategy=spec)


def torch_scheduler(optimizer: torch.optim.Optimizer, s: StrategySpec, steps_per_epoch: int):
    """The strategy's schedule built from torch's own schedulers, stepped once per batch (None: constant)."""
    lr_scheduler = torch.optim.lr_scheduler
    warmup = s.warmup_epochs * steps_per_epoch
    span = s.epochs * steps_per_epoch - warmup
    main = {
        "constant": lambda: lr_scheduler.LambdaLR(optimizer, lambda k: 1.0),
        "cosine": lambda: lr_scheduler.CosineAnnealingLR(optimizer, T_max=span, eta_min=s.min_lr),
        "linear": lambda: lr_scheduler.LinearLR(
            optimizer, start_factor=1.0, end_factor=s.min_lr / s.lr, total_iters=span
        ),
        "step": lambda: lr_scheduler.StepLR(
            optimizer, step_size=s.step_size * steps_per_epoch, gamma=s.gamma
        ),
    }[s.schedule]
    if not warmup:
        return None if s.schedule == "constant" else main()
    ramp = lr_scheduler.LambdaLR(optimizer, lambda k: k / warmup)
    return lr_scheduler.SequentialLR(optimizer, [ramp, main()], milestones=[warmup])


def reference_linear_head(
    x, y, test_x, test_y, num_classes, t: TrialSpec, metric: str
) -> tuple[float, list[float]]:
    """The plain way: one nn.Linear, torch.optim and its schedulers, a loop — same init and data order.

    Returns the score and the training curve: each epoch's loss summed over its examples / N."""
    s = t.strategy
    generator = torch.Generator().manual_seed(t.seed)
    weight, bias = init_head(num_classes, x.shape[1], generator)
    head = torch.nn.Linear(x.shape[1], num_classes)
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias)
    if s.optimizer == "sgd":
        opt = torch.optim.SGD(head.parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    else:
        opt = torch.optim.AdamW(head.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    n = x.shape[0]
    sched = torch_scheduler(opt, s, math.ceil(n / s.batch_size))
    curve = []
    for _ in range(s.epochs):
        order = torch.randperm(n, generator=generator)
        total = 0.0
        for begin in range(0, n, s.batch_size):
            idx = order[begin : begin + s.batch_size]
            loss = F.cross_entropy(head(x[idx]), y[idx], label_smoothing=s.label_smoothing)
            total += float(loss.detach()) * idx.numel()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
        curve.append(total / n)
    with torch.no_grad():
        predictions = head(test_x).argmax(1)
    return float(score_predictions(metric, predictions, test_y, num_classes)), curve


@pytest.fixture(scope="module")
def features():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 24, generator=g) * 2
    y = torch.randint(0, 4, (90,), generator=g)
    x = centers[y] + torch.randn(90, 24, generator=g)
    ty = torch.randint(0, 4, (40,), generator=g)
    tx = centers[ty] + torch.randn(40, 24, generator=g)
    return x, y, tx, ty


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_batched_heads_equal_separate_heads(features, optimizer):
    x, y, tx, ty = features
    trials = [
        trial("a", 0, mode="linear", optimizer=optimizer, lr=0.1 if optimizer == "sgd" else 0.01),
        trial("a", 1, mode="linear", optimizer=optimizer, lr=0.1 if optimizer == "sgd" else 0.01),
        trial(
            "b",
            0,
            mode="linear",
            optimizer=optimizer,
            lr=0.01 if optimizer == "sgd" else 0.001,
            weight_decay=0.05,
        ),
        trial("c", 2, mode="linear", optimizer=optimizer, lr=0.03, label_smoothing=0.1, epochs=2),
        trial("d", 0, mode="linear", optimizer=optimizer, lr=0.05, schedule="cosine", min_lr=0.001),
        trial("d", 1, mode="linear", optimizer=optimizer, lr=0.02, schedule="cosine", min_lr=0.001),
        trial("e", 0, mode="linear", optimizer=optimizer, lr=0.05, schedule="step", step_size=1, gamma=0.5),
        trial("f", 0, mode="linear", optimizer=optimizer, lr=0.05, schedule="linear", warmup_epochs=1),
    ]
    results = train_linear_heads(x, y, tx, ty, 4, trials, "balanced_accuracy")
    assert [r.key for r in results] == [t.key for t in trials]
    assert results[0].details["models_batched"] == 3  # "c" has another schedule: its own stack
    assert results[4].details["models_batched"] == 2  # two learning rates of one cosine schedule
    for t, r in zip(trials, results, strict=True):
        assert r.status == "ok"
        score, curve = reference_linear_head(x, y, tx, ty, 4, t, "balanced_accuracy")
        assert r.score == pytest.approx(score, abs=1e-9)
        # the training curve too: the mean loss over each epoch's examples (5 significant digits)
        assert r.details["loss_curve"] == pytest.approx(curve, rel=1e-4)
        assert r.details["diverged_at"] is None


def test_batched_heads_match_in_parameters_not_only_scores(features, monkeypatch):
    """Scores can agree by luck: compare the trained weights themselves (captured at scoring)."""
    x, y, tx, ty = features
    captured = {}
    original = torch.baddbmm

    def spy(bias, batch, weight_t, *a, **k):
        captured["weight"] = weight_t.detach().transpose(1, 2).clone()
        return original(bias, batch, weight_t, *a, **k)

    monkeypatch.setattr(torch, "baddbmm", spy)
    t = trial("a", 3, mode="linear", lr=0.05, weight_decay=0.01)
    train_linear_heads(x, y, tx, ty, 4, [t], "accuracy")
    batched = captured["weight"][0]
    monkeypatch.setattr(torch, "baddbmm", original)
    generator = torch.Generator().manual_seed(3)
    weight, bias = init_head(4, 24, generator)
    head = torch.nn.Linear(24, 4)
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias)
    opt = torch.optim.SGD(head.parameters(), lr=0.05, momentum=0.9, weight_decay=0.01)
    for _ in range(4):  # the default schedule: a constant learning rate, no scheduler at all
        order = torch.randperm(90, generator=generator)
        for b in range(0, 90, 16):
            idx = order[b : b + 16]
            opt.zero_grad()
            F.cross_entropy(head(x[idx]), y[idx]).backward()
            opt.step()
    torch.testing.assert_close(batched, head.weight.detach(), rtol=1e-5, atol=1e-6)


def test_a_diverging_head_is_marked_and_leaves_the_others_alone(features):
    x, y, tx, ty = features
    good = trial("a", 0, mode="linear", lr=0.1)
    bad = trial("a", 1, mode="linear", lr=0.1)
    bad = TrialSpec(bad.key, bad.cell, bad.seed, bad.strategy.model_copy(update={"lr": 1e30}))
    together = train_linear_heads(x * 1e6, y, tx, ty, 4, [good, bad], "accuracy")
    alone = train_linear_heads(x * 1e6, y, tx, ty, 4, [good], "accuracy")
    assert together[1].status == "diverged" and together[1].score is not None
    assert 0.0 <= together[1].score <= 1.0
    assert together[0].score == alone[0].score and together[0].status == alone[0].status
    assert together[0].details["loss_curve"] == alone[0].details["loss_curve"]
    assert together[1].details["loss_curve"][-1] is None and together[1].details["diverged_at"]["epoch"] == 1


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.parametrize("metric", ["accuracy", "balanced_accuracy", "macro_f1"])
def test_metrics_agree_with_scikit_learn(metric):
    rng = np.random.default_rng(0)
    sk = {
        "accuracy": accuracy_score,
        "balanced_accuracy": balanced_accuracy_score,
        "macro_f1": lambda a, b: f1_score(a, b, average="macro", zero_division=0),
    }[metric]
    for _ in range(20):
        labels = rng.integers(0, 5, size=30)
        labels[labels == 4] = 3  # class 4 never appears in the labels...
        preds = rng.integers(0, 6, size=(3, 30))  # ...and class 5 only in predictions
        ours = score_predictions(metric, torch.from_numpy(preds), torch.from_numpy(labels), 6)
        for h in range(3):
            assert float(ours[h]) == pytest.approx(sk(labels, preds[h]), abs=1e-12)


@pytest.fixture()
def tiny(tmp_path):
    arch = write_tiny_cnn(tmp_path, name=f"tiny_{tmp_path.name.replace('-', '_')}")
    backbone = load_backbone(ModelSpec(name="m", architecture=arch, image_size=16), config_dir=tmp_path)
    g = torch.Generator().manual_seed(0)
    data = GroupData(
        train_x=torch.randint(0, 256, (40, 3, 16, 16), dtype=torch.uint8, generator=g),
        train_y=torch.arange(40) % 3,
        test_x=torch.randint(0, 256, (12, 3, 16, 16), dtype=torch.uint8, generator=g),
        test_y=torch.arange(12) % 3,
        num_classes=3,
        scale=torch.full((1, 3, 1, 1), 1 / 255),
        shift=torch.zeros(1, 3, 1, 1),
        channels_last=False,
    )
    master = {k: v.clone() for k, v in backbone.module.state_dict().items()}
    return backbone, data, master


def _changed(before: dict, after: dict) -> set[str]:
    return {k for k in before if before[k].dtype.is_floating_point and not torch.equal(before[k], after[k])}


def test_partial_trains_only_the_last_stages(tiny, monkeypatch):
    from monitor.engine.training import _finetune

    backbone, data, master = tiny
    after = {}
    real_eval = _finetune._evaluate

    def capture(module, *a):
        after.update({k: v.clone() for k, v in module.state_dict().items()})
        return real_eval(module, *a)

    monkeypatch.setattr(_finetune, "_evaluate", capture)
    result = finetune(
        backbone, master, data, trial("p", 0, mode="partial", trainable_blocks=1, lr=0.1), "accuracy", CPU
    )
    assert result.status == "ok" and 0 <= result.score <= 1
    changed = _changed(master, after)
    assert changed and all(k.startswith("features.2.") for k in changed), changed
    # frozen stages keep their BatchNorm statistics (they stay in eval mode)
    assert torch.equal(after["features.0.1.running_mean"], master["features.0.1.running_mean"])


def test_full_trains_everything_and_each_trial_starts_from_the_master(tiny):
    backbone, data, master = tiny
    t = trial("f", 0, mode="full", optimizer="adamw", lr=0.01)
    first = finetune(backbone, master, data, t, "accuracy", CPU)
    assert _changed(master, backbone.module.state_dict())  # trained in place...
    second = finetune(backbone, master, data, t, "accuracy", CPU)
    assert first.score == second.score  # ...but the next trial starts from the master weights again
    assert not any(p.requires_grad for p in backbone.module.parameters())


def test_micro_batches_give_the_same_update(tmp_path):
    """The out-of-memory fallback (gradient accumulation) must not change what is computed."""
    arch = write_tiny_cnn(
        tmp_path,
        name="tiny_nobn",
        extra="""
        def build_plain():
            from torch import nn
            return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
        """,
    ).replace(":build", ":build_plain")
    backbone = load_backbone(ModelSpec(name="m", architecture=arch, image_size=16), config_dir=tmp_path)
    g = torch.Generator().manual_seed(1)
    data = GroupData(
        torch.randint(0, 256, (32, 3, 16, 16), dtype=torch.uint8, generator=g),
        torch.arange(32) % 2,
        torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8, generator=g),
        torch.arange(8) % 2,
        2,
        torch.full((1, 3, 1, 1), 1 / 255),
        torch.zeros(1, 3, 1, 1),
        False,
    )
    master = {k: v.clone() for k, v in backbone.module.state_dict().items()}
    t = trial("f", 0, mode="full", lr=0.5, epochs=2)
    whole = finetune(backbone, master, data, t, "accuracy", CPU)
    state_whole = {k: v.clone() for k, v in backbone.module.state_dict().items()}
    micro = finetune(backbone, master, data, t, "accuracy", CPU, micro_batch=4)
    for k, v in state_whole.items():
        torch.testing.assert_close(backbone.module.state_dict()[k], v, rtol=1e-4, atol=1e-5)
    assert whole.score == micro.score


def test_a_diverging_finetune_is_scored_as_it_is(tiny):
    backbone, data, master = tiny
    result = finetune(backbone, master, data, trial("f", 0, mode="full", lr=1e12, epochs=3), "accuracy", CPU)
    assert result.status == "diverged"
    assert result.score is not None and 0.0 <= result.score <= 1.0


@pytest.mark.parametrize(
    ("precision", "native", "expected"),
    [
        ("auto", True, None),  # fp32 on every CPU unless bf16 is asked for (see _device)
        ("auto", False, None),
        ("fp32", True, None),
        ("bf16", False, torch.bfloat16),
    ],
)
def test_cpu_precision_follows_the_setting_and_the_hardware(monkeypatch, precision, native, expected):
    from monitor.engine.training import _device

    monkeypatch.setattr(_device, "cpu_has_native_bf16", lambda: native)
    assert runtime_for("cpu", EngineOptions(precision=precision)).autocast_dtype == expected


def test_native_bf16_is_read_from_the_cpu_flags(monkeypatch, tmp_path):
    from monitor.engine.training import _device

    flags = tmp_path / "cpuinfo"
    real_open = open

    def fake_open(path, *args, **kwargs):
        return real_open(flags if path == "/proc/cpuinfo" else path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", fake_open)
    flags.write_text("processor : 0\nflags : fpu avx2 avx512f avx512bw\n")  # AVX-512 alone emulates bf16
    assert not _device.cpu_has_native_bf16()
    flags.write_text("processor : 0\nflags : fpu avx2 avx512f avx512_bf16\n")  # Zen 4, Cooper Lake
    assert _device.cpu_has_native_bf16()
    flags.write_text("processor : 0\nflags : fpu amx_bf16 amx_tile\n")  # Sapphire Rapids
    assert _device.cpu_has_native_bf16()
    flags.unlink()  # no /proc (not Linux): fp32
    assert not _device.cpu_has_native_bf16()


SCHEDULES = [
    {},  # the default: constant
    {"schedule": "cosine"},
    {"schedule": "cosine", "min_lr": 0.004},
    {"schedule": "cosine", "warmup_epochs": 2},
    {"schedule": "linear", "min_lr": 0.001},
    {"schedule": "linear", "warmup_epochs": 1},
    {"schedule": "step", "step_size": 2},
    {"schedule": "step", "step_size": 1, "gamma": 0.5, "warmup_epochs": 1},
    {"warmup_epochs": 3},
]


@pytest.mark.parametrize(
    "fields", SCHEDULES, ids=lambda f: "-".join(f"{k}={v}" for k, v in f.items()) or "default"
)
def test_every_schedule_gives_the_learning_rates_of_torchs_own_schedulers(fields):
    strategy = StrategySpec(name="s", mode="full", lr=0.04, epochs=5, **fields)
    steps_per_epoch = 7
    schedule = Schedule.of(strategy, steps_per_epoch)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=strategy.lr)
    scheduler = torch_scheduler(optimizer, strategy, steps_per_epoch)
    for step in range(strategy.epochs * steps_per_epoch):
        assert schedule.lr(strategy.lr, step) == pytest.approx(
            optimizer.param_groups[0]["lr"], rel=1e-9, abs=1e-12
        )
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    # per-head rates (tensors) follow the same closed form
    rates = torch.tensor([0.04, 0.01], dtype=torch.float64)
    assert schedule.lr(rates, 9).tolist() == pytest.approx([schedule.lr(0.04, 9), schedule.lr(0.01, 9)])


def test_warm_up_rises_linearly_from_zero_before_the_schedule():
    schedule = Schedule.of(StrategySpec(name="s", mode="full", lr=0.1, epochs=3, warmup_epochs=1), 4)
    assert [schedule.lr(0.1, s) for s in range(6)] == pytest.approx([0.0, 0.025, 0.05, 0.075, 0.1, 0.1])


def _learning_rates_used(monkeypatch, run) -> list[float]:
    """Every learning rate `torch.optim` stepped with while `run()` trains."""
    seen: list[float] = []
    for cls in (torch.optim.SGD, torch.optim.AdamW):
        real = cls.step

        def spy(self, *a, _real=real, **k):
            seen.append(self.param_groups[0]["lr"])
            return _real(self, *a, **k)

        monkeypatch.setattr(cls, "step", spy)
    run()
    return seen


@pytest.mark.parametrize("mode", ["partial", "full"])
def test_a_strategy_without_a_schedule_trains_at_its_learning_rate_throughout(tiny, monkeypatch, mode):
    backbone, data, master = tiny
    blocks = {"trainable_blocks": 1} if mode == "partial" else {}
    t = trial("c", 0, mode=mode, lr=0.02, epochs=3, **blocks)
    seen = _learning_rates_used(monkeypatch, lambda: finetune(backbone, master, data, t, "accuracy", CPU))
    assert len(seen) == 3 * math.ceil(40 / 16)
    assert set(seen) == {0.02}
    cosine = trial("c", 0, mode=mode, lr=0.02, epochs=3, schedule="cosine", **blocks)
    seen = _learning_rates_used(
        monkeypatch, lambda: finetune(backbone, master, data, cosine, "accuracy", CPU)
    )
    assert seen[0] == 0.02 and seen == sorted(seen, reverse=True) and seen[-1] < 0.002


def test_bn_train_runs_the_frozen_stages_batchnorm_in_train_mode(tiny, monkeypatch):
    from monitor.engine.training import _finetune

    backbone, data, master = tiny
    after = {}
    real_eval = _finetune._evaluate

    def capture(module, *a):
        after.update({k: v.clone() for k, v in module.state_dict().items()})
        return real_eval(module, *a)

    monkeypatch.setattr(_finetune, "_evaluate", capture)
    finetune(
        backbone,
        master,
        data,
        trial("p", 0, mode="partial", trainable_blocks=1, lr=0.1, bn="train"),
        "accuracy",
        CPU,
    )
    changed = _changed(master, after)
    # the frozen stages' weights stay, their BatchNorm statistics follow the new data
    assert all(k.startswith("features.2.") or "running_" in k for k in changed), changed
    assert not torch.equal(after["features.0.1.running_mean"], master["features.0.1.running_mean"])
    assert torch.equal(after["features.0.0.weight"], master["features.0.0.weight"])


def test_augmentation_is_the_torchvision_transform_drawn_from_the_seed():
    import torchvision.transforms.v2.functional as TF

    from monitor.engine.training import Augmenter

    g = torch.Generator().manual_seed(0)
    images = torch.randint(1, 256, (64, 3, 16, 16), dtype=torch.uint8, generator=g)
    flip = Augmenter("flip", seed=3, size=16)(images)
    flipped = [torch.equal(o, i.flip(-1)) for o, i in zip(flip, images, strict=True)]
    assert all(f or torch.equal(o, i) for f, o, i in zip(flipped, flip, images, strict=True))
    assert 16 < sum(flipped) < 48  # about half
    crop = Augmenter("crop_flip", seed=3, size=16)(images)
    padded = TF.pad(images, [2])  # an eighth of 16 px, zero (black) fill: RandomCrop(16, padding=2)
    offsets = set()
    for out, pad in zip(crop, padded, strict=True):
        windows = [
            (top, left, flip)
            for top in range(5)
            for left in range(5)
            for flip in (False, True)
            if torch.equal(out, (lambda w: w.flip(-1) if flip else w)(TF.crop(pad, top, left, 16, 16)))
        ]
        assert windows, "not a padded crop of its image"
        offsets.add(windows[0][:2])
    assert len(offsets) > 10  # the offsets are spread over the 5 × 5 choices
    # reproducible from the seed, new draws on every batch, another seed draws differently
    again = Augmenter("crop_flip", seed=3, size=16)
    assert torch.equal(again(images), crop) and not torch.equal(again(images), crop)
    assert not torch.equal(Augmenter("crop_flip", seed=4, size=16)(images), crop)


@pytest.mark.parametrize("augment", ["flip", "crop_flip"])
def test_augmented_fine_tunes_are_reproducible_and_differ_from_plain_ones(tiny, augment):
    backbone, data, master = tiny
    plain = trial("a", 0, mode="full", lr=0.05, epochs=3)
    augmented = trial("a", 0, mode="full", lr=0.05, epochs=3, augment=augment)
    first = finetune(backbone, master, data, augmented, "accuracy", CPU).details["final_loss"]
    assert finetune(backbone, master, data, augmented, "accuracy", CPU).details["final_loss"] == first
    assert finetune(backbone, master, data, plain, "accuracy", CPU).details["final_loss"] != first
