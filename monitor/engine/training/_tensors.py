"""A work group's data, moved to the device once and normalised on the fly per batch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...data import PreparedData, load_arrays
from ...settings import Normalize
from ._device import Runtime
from ._shifts import derived_entry

__all__ = ["GroupData"]


@dataclass
class GroupData:
    """uint8 images stay uint8 on the device (4x less memory than float); batches are normalised."""

    train_x: torch.Tensor  # uint8 [N, 3, S, S]
    train_y: torch.Tensor  # int64 [N]
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    scale: torch.Tensor  # [1, 3, 1, 1]: 1 / (255 · std)
    shift: torch.Tensor  # [1, 3, 1, 1]: -mean / std
    channels_last: bool

    @classmethod
    def load(cls, prepared: PreparedData, normalize: Normalize, runtime: Runtime) -> GroupData:
        """The group's arrays on the device (a derived dataset's corrupted first, or read from its cache)."""
        arrays = load_arrays(derived_entry(prepared) if prepared.derivation is not None else prepared)
        device = runtime.device

        def put(array: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(array)).to(device)

        mean = torch.tensor(normalize.mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        std = torch.tensor(normalize.std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        return cls(
            train_x=put(arrays.train_x),
            train_y=put(arrays.train_y).long(),
            test_x=put(arrays.test_x),
            test_y=put(arrays.test_y).long(),
            num_classes=len(prepared.classes),
            scale=1.0 / (255.0 * std),
            shift=-mean / std,
            channels_last=runtime.channels_last,
        )

    def images(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, S, S] -> normalised float32, in the memory format the model runs fastest in."""
        out = torch.addcmul(self.shift, x.float(), self.scale)
        return out.contiguous(memory_format=torch.channels_last) if self.channels_last else out
