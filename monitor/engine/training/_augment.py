"""Training-time augmentation of uint8 image batches on the device, reproducible from the seed.

    flip        horizontal flip with probability 1/2              RandomHorizontalFlip()
    crop_flip   random crop after zero padding, then the flip     RandomCrop(S, padding=S // 8), RandomHorizontalFlip()

as torchvision does them on PIL images before `ToTensor` and `Normalize` (the padding is black).
The padding is an eighth of the image side: 4 px at 32 px, the CIFAR recipe. The random draws
come from the trial's own generator on the CPU, batch after batch (flips, then crop offsets), so
the same seed gives the same augmentation on every device; the test split is never augmented.
"""

from __future__ import annotations

import torch

__all__ = ["Augmenter", "augmenter"]

# Kept apart from the stream that draws the head and the data order: adding augmentation to a
# strategy must not change which images each batch holds.
_STREAM_OFFSET = 2**32


class Augmenter:
    def __init__(self, kind: str, seed: int, size: int) -> None:
        self.kind = kind
        self.size = size
        self.pad = max(1, size // 8) if kind == "crop_flip" else 0
        self.generator = torch.Generator().manual_seed(seed + _STREAM_OFFSET)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """A freshly augmented copy of uint8 images [B, 3, S, S] (new draws on every call)."""
        count = images.shape[0]
        flip = torch.rand(count, generator=self.generator) < 0.5
        if self.pad:
            offsets = torch.randint(0, 2 * self.pad + 1, (count, 2), generator=self.generator)
            images = self._crop(images, offsets.to(images.device))
        flip = flip.to(images.device).view(-1, 1, 1, 1)
        return torch.where(flip, images.flip(-1), images)

    def _crop(self, images: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Zero-pad by `pad` on every side, then cut an S×S window at each image's (top, left)."""
        padded = torch.nn.functional.pad(images, (self.pad,) * 4)
        span = torch.arange(self.size, device=images.device)
        rows = (offsets[:, 0:1] + span)[:, None, :, None]  # [B, 1, S, 1]
        cols = (offsets[:, 1:2] + span)[:, None, None, :]  # [B, 1, 1, S]
        batch = torch.arange(images.shape[0], device=images.device)[:, None, None, None]
        channel = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
        return padded[batch, channel, rows, cols]


def augmenter(kind: str, seed: int, size: int) -> Augmenter | None:
    """The augmentation of strategy field `augment` for one trial, or None for `none`."""
    return None if kind == "none" else Augmenter(kind, seed, size)
