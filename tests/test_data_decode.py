"""Decoding one image: RGB expansion and torchvision's Resize + CenterCrop geometry, as uint8 CHW."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monitor.data._decode import decode_image, resized_size, try_decode


def _save(image: Image.Image, path: Path) -> Path:
    image.save(path)
    return path


def test_grayscale_palette_and_rgba_become_three_channels(tmp_path: Path) -> None:
    gray = _save(Image.new("L", (8, 8), 77), tmp_path / "g.png")
    palette = _save(
        Image.new("RGB", (8, 8), (10, 20, 30)).convert("P", palette=Image.Palette.ADAPTIVE),
        tmp_path / "p.png",
    )
    rgba = _save(Image.new("RGBA", (8, 8), (1, 2, 3, 0)), tmp_path / "a.png")

    assert decode_image(gray, 8).shape == (3, 8, 8)
    assert (decode_image(gray, 8) == 77).all()
    assert tuple(decode_image(palette, 8)[:, 0, 0]) == (10, 20, 30)
    assert tuple(decode_image(rgba, 8)[:, 4, 4]) == (1, 2, 3)  # alpha dropped, as torchvision's loader does
    assert decode_image(gray, 8).dtype == np.uint8


@pytest.mark.parametrize(
    ("width", "height", "size", "expected"),
    [
        (300, 200, 224, (336, 224)),
        (200, 301, 224, (224, 337)),
        (50, 50, 32, (32, 32)),
        (7, 1000, 4, (4, 571)),
    ],
)
def test_the_shorter_side_becomes_size_and_the_longer_is_truncated(
    width: int, height: int, size: int, expected: tuple[int, int]
) -> None:
    assert resized_size(width, height, size) == expected


@pytest.mark.parametrize(("height", "top"), [(14, 2), (11, 0), (13, 2), (15, 2), (10, 0)])
def test_center_crop_uses_torchvision_rounding(tmp_path: Path, height: int, top: int) -> None:
    # Width 10 = size: no resize, so every row keeps its own value and the crop offset shows exactly.
    rows = np.repeat((np.arange(height, dtype=np.uint8) * 10)[:, None], 10, axis=1)
    path = _save(Image.fromarray(rows, "L"), tmp_path / "rows.png")

    crop = decode_image(path, 10)

    assert crop.shape == (3, 10, 10)
    assert crop[0, :, 0].tolist() == [10 * (top + i) for i in range(10)]  # round(0.5) == 0, round(1.5) == 2


def test_resize_then_crop_keeps_the_centre_of_a_wide_image(tmp_path: Path) -> None:
    # 80x40: red | green (middle half) | blue. Resized to 20x10, the 10-wide centre crop is the green half.
    pixels = np.zeros((40, 80, 3), dtype=np.uint8)
    pixels[:, :20] = (255, 0, 0)
    pixels[:, 20:60] = (0, 255, 0)
    pixels[:, 60:] = (0, 0, 255)
    path = _save(Image.fromarray(pixels, "RGB"), tmp_path / "wide.png")

    crop = decode_image(path, 10)

    assert crop.shape == (3, 10, 10)
    assert (crop[:, :, 2:8] == np.array([0, 255, 0], dtype=np.uint8)[:, None, None]).all()
    assert crop[0].max() < 128 and crop[2].max() < 128  # only a blur of red/blue at the very edges


@pytest.mark.parametrize(
    ("mode", "suffix", "size"), [("RGB", ".png", 32), ("RGB", ".jpg", 24), ("L", ".bmp", 17)]
)
def test_matches_torchvision_resize_and_center_crop(
    tmp_path: Path, mode: str, suffix: str, size: int
) -> None:
    tf = pytest.importorskip("torchvision.transforms.functional")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:61, 0:97]
    base = np.stack([(xx * 2) % 256, (yy * 4) % 256, (xx + yy) % 256], axis=-1) + rng.integers(
        0, 30, (61, 97, 3)
    )
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB").convert(mode)
    path = _save(image, tmp_path / f"img{suffix}")

    with Image.open(path) as reference_image:
        reference = tf.center_crop(tf.resize(reference_image.convert("RGB"), size), size)
    expected = np.asarray(reference, dtype=np.int16).transpose(2, 0, 1)

    ours = decode_image(path, size).astype(np.int16)

    assert ours.shape == expected.shape == (3, size, size)
    assert np.abs(ours - expected).max() <= 1


@pytest.mark.parametrize(
    ("name", "payload"),
    [
        ("text.png", b"this is not an image"),
        ("empty.jpg", b""),
        ("noise.webp", bytes(range(256)) * 4),
    ],
)
def test_undecodable_files_give_a_reason_instead_of_raising(
    tmp_path: Path, name: str, payload: bytes
) -> None:
    path = tmp_path / name
    path.write_bytes(payload)
    result = try_decode(path, 8)
    assert isinstance(result, str) and result and "\n" not in result


def test_a_truncated_image_is_undecodable(tmp_path: Path) -> None:
    path = _save(Image.effect_noise((64, 64), 50).convert("RGB"), tmp_path / "full.png")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert isinstance(try_decode(path, 8), str)
