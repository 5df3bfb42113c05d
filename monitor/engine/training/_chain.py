"""A backbone as a chain of units, so that a `partial` fine-tune can start mid-network.

Most torchvision families (ResNet, RegNet, MobileNet, EfficientNet, ConvNeXt, VGG) and simple
custom CNNs compute `forward` as their children applied in order, with a flatten before the
classifier. For those, the activation at the input of the first trainable stage never changes
during a `partial` fine-tune (the compact protocol has no augmentation), so it is computed once
per work group and every partial trial trains only the rest of the chain: exact, and cheaper by
the whole frozen prefix, forward and backward.

A chain is only used after it has been checked to reproduce `module(x)` on a probe batch; any
model it does not fit trains the plain way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ...models import Backbone

__all__ = ["Chain", "Suffix", "find_chain"]


@dataclass
class Chain:
    units: list[tuple[str, nn.Module]]
    flatten_at: int | None  # flatten to [N, D] before this unit (None: only at the end)

    def run(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        stop = len(self.units) if stop is None else stop
        for i in range(start, stop):
            if self.flatten_at is not None and i == self.flatten_at and x.ndim > 2:
                x = torch.flatten(x, 1)
            x = self.units[i][1](x)
        if stop == len(self.units) and x.ndim > 2:
            x = torch.flatten(x, 1)
        return x

    def index_of(self, module: nn.Module) -> int | None:
        return next((i for i, (_, m) in enumerate(self.units) if m is module), None)


class Suffix(nn.Module):
    """The chain from unit `start` on, as a module (so `functional_call` and `vmap` can run it)."""

    def __init__(self, chain: Chain, start: int) -> None:
        super().__init__()
        self.units = nn.ModuleList(m for _, m in chain.units[start:])
        self.flatten_at = None if chain.flatten_at is None else chain.flatten_at - start

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, unit in enumerate(self.units):
            if self.flatten_at is not None and i == self.flatten_at and x.ndim > 2:
                x = torch.flatten(x, 1)
            x = unit(x)
        return torch.flatten(x, 1) if x.ndim > 2 else x


def _units(backbone: Backbone) -> list[tuple[str, nn.Module]]:
    """Top-level children in order, with the container the stages came from expanded."""
    stage_ids = {id(m) for _, m in backbone.stages}
    units: list[tuple[str, nn.Module]] = []
    for name, child in backbone.module.named_children():
        inner = list(child.named_children())
        if inner and any(id(m) in stage_ids for _, m in inner) and id(child) not in stage_ids:
            units.extend((f"{name}.{n}", m) for n, m in inner)
        else:
            units.append((name, child))
    return units


@torch.no_grad()
def find_chain(backbone: Backbone, image_size: int) -> Chain | None:
    """The chain that reproduces `backbone.module` exactly, or None if it cannot be expressed so."""
    if backbone.scripted:
        return None  # a TorchScript forward cannot be checked against its children reliably
    module = backbone.module
    units = _units(backbone)
    if not units:
        return None
    head_top = backbone.head.split(".", 1)[0]
    flatten_candidates: list[int | None] = [None]
    first_linear = next(
        (i for i, (n, m) in enumerate(units) if n.split(".")[0] == head_top or _contains_linear(m)), None
    )
    if first_linear is not None:
        flatten_candidates.append(first_linear)
    was_training = module.training
    module.eval()
    try:
        probe = torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
        device = next((p.device for p in module.parameters()), torch.device("cpu"))
        probe = probe.to(device)
        expected = module(probe)
        for flatten_at in flatten_candidates:
            chain = Chain(units, flatten_at)
            try:
                got = chain.run(probe)
            except Exception:  # a unit that does not accept the previous unit's output
                continue
            if got.shape == expected.shape and torch.allclose(got, expected, rtol=1e-4, atol=1e-5):
                return chain
        return None
    finally:
        module.train(was_training)


def _contains_linear(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Linear) for m in module.modules())
