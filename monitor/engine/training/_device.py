"""Resolve the `device:` setting once, and the per-device choices that go with it."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...errors import DeviceError
from .._options import EngineOptions

__all__ = ["Runtime", "resolve_devices", "runtime_for"]


def resolve_devices(setting: str) -> list[str]:
    """`auto` -> every CUDA device (else the CPU); `cuda` -> every CUDA device; else as given.

    Raises DeviceError when the setting names a device torch does not see.
    """
    if setting in ("auto", "cuda"):
        if torch.cuda.is_available():
            return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        if setting == "cuda":
            raise DeviceError("device: cuda was requested but torch sees no CUDA device")
        return ["cpu"]
    if setting.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"device: {setting} was requested but torch sees no CUDA device")
        index = int(setting.split(":", 1)[1])
        if index >= torch.cuda.device_count():
            raise DeviceError(
                f"device: {setting} was requested but torch sees {torch.cuda.device_count()} CUDA device(s) "
                f"(cuda:0 … cuda:{torch.cuda.device_count() - 1})"
            )
    return [setting]


@dataclass(frozen=True)
class Runtime:
    """Device-dependent execution choices, decided once per worker (nanoGPT style)."""

    device: torch.device
    autocast_dtype: torch.dtype | None  # bf16 where the hardware has it (executor.precision); None = fp32
    channels_last: bool
    eval_batch: int  # images per forward pass when no gradient is needed
    batch_finetunes: bool = False  # stack partial/full trials of one schedule with torch.func
    compile: bool = False  # torch.compile the training forward

    @property
    def precision(self) -> str:
        """The `executor.precision` this runtime computes in: "bf16" or "fp32"."""
        return "bf16" if self.autocast_dtype is not None else "fp32"

    def autocast(self) -> torch.autocast:
        return torch.autocast(
            device_type=self.device.type,
            dtype=self.autocast_dtype or torch.float32,
            enabled=self.autocast_dtype is not None,
        )


def runtime_for(device: str, options: EngineOptions | None = None) -> Runtime:
    """The execution choices for `device`; `options` (from the settings) can force some of them."""
    options = options or EngineOptions()
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes within a work group: autotune once
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        # bf16 tensor cores: compute capability 8.0 (Ampere) and newer, and ROCm's GPUs
        native = torch.version.hip is not None or torch.cuda.get_device_capability(dev) >= (8, 0)
        return Runtime(
            dev,
            _autocast_dtype(options.precision, native),
            channels_last=True,
            eval_batch=512,
            batch_finetunes=options.batch_finetunes != "never",
            compile=options.compile,
        )
    # Measured on a 2-core AVX512-BF16 CPU (ResNet-18, batch 32): bf16 autocast takes a full
    # fine-tune step from about 190 to about 130 ms at 64 px and a last-stage step from 51 to 44 ms;
    # at 32 px it is a wash (61 vs 58 ms). channels_last was slower for training at both sizes.
    # Yet "auto" trains in fp32 on CPUs: on such a CPU, torch 2.14's oneDNN bf16 backward of a
    # 3x3 stride-2 convolution on a 1x1 input (ResNet-18's layer4 at 16 px) returned wrong weight
    # gradients in about half of the runs (norms of 1e12 instead of 10). A speed-up must never
    # change the numbers: bf16 on a CPU is an explicit `precision: bf16`.
    return Runtime(
        dev,
        _autocast_dtype(options.precision, native_bf16=False),
        channels_last=False,
        eval_batch=256,
        batch_finetunes=options.batch_finetunes == "always",
        compile=options.compile,
    )


def _autocast_dtype(precision: str, native_bf16: bool) -> torch.dtype | None:
    if precision == "bf16" or (precision == "auto" and native_bf16):
        return torch.bfloat16
    return None


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 dot-product instructions (AVX512-BF16 or AMX), read from Linux.

    oneDNN's own check (`_is_mkldnn_bf16_supported`) also says yes on AVX-512 CPUs that only
    emulate bf16, where autocast is slower than fp32; elsewhere (not Linux) the answer is no.
    """
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as file:
            for line in file:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False
