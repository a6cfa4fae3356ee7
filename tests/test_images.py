"""load_image accepts every documented form and rejects the rest with a clear message."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import faccent_widget as fw


def _check(t: torch.Tensor, h: int, w: int) -> None:
    assert t.dtype == torch.float32 and t.shape == (3, h, w)
    assert float(t.min()) >= 0 and float(t.max()) <= 1


def test_numpy_forms():
    rgb = (np.arange(4 * 5 * 3) % 256).astype(np.uint8).reshape(4, 5, 3)
    t = fw.load_image(rgb)
    _check(t, 4, 5)
    assert t[0, 0, 1] == pytest.approx(rgb[0, 1, 0] / 255)
    _check(fw.load_image(np.zeros((4, 5), np.uint8)), 4, 5)
    sixteen = np.full((4, 5), 65535, np.uint16)
    assert fw.load_image(sixteen).min() == pytest.approx(1.0)
    _check(fw.load_image(np.random.rand(4, 5, 3).astype(np.float32)), 4, 5)
    _check(fw.load_image(np.random.rand(4, 5, 1)), 4, 5)
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 3] = 0  # fully transparent black → white
    assert fw.load_image(rgba).min() == pytest.approx(1.0)


def test_tensor_forms():
    _check(fw.load_image(torch.rand(3, 6, 7)), 6, 7)
    _check(fw.load_image(torch.rand(1, 3, 6, 7)), 6, 7)
    _check(fw.load_image(torch.randint(0, 255, (3, 6, 7), dtype=torch.uint8)), 6, 7)
    _check(fw.load_image(torch.rand(1, 6, 7)), 6, 7)


def test_pil_modes_and_files(tmp_path):
    for mode in ("RGB", "L", "RGBA", "P", "LA"):
        img = Image.new(mode, (7, 6))
        _check(fw.load_image(img), 6, 7)
    sixteen = Image.fromarray(np.full((6, 7), 65535, np.uint16))
    assert fw.load_image(sixteen).min() == pytest.approx(1.0)
    path = tmp_path / "x.png"
    Image.new("RGB", (7, 6), (255, 0, 0)).save(path)
    t = fw.load_image(path)
    _check(t, 6, 7)
    assert t[0].min() == 1 and t[1].max() == 0
    _check(fw.load_image(str(path)), 6, 7)


def test_exif_orientation(tmp_path):
    img = Image.new("RGB", (8, 4), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 4, 4))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif.tobytes(), quality=95)
    t = fw.load_image(path)
    assert t.shape == (3, 8, 4)  # portrait after honouring EXIF
    assert t[:, :4].mean() > 0.8 and t[:, 4:].mean() < 0.2  # white half now on top


def test_resize():
    t = fw.load_image(torch.rand(3, 100, 200), size=50)
    assert t.shape == (3, 50, 100)
    assert fw.load_image(torch.rand(3, 100, 200), size=(32, 40)).shape == (3, 32, 40)


@pytest.mark.parametrize(
    "bad, exc, message",
    [
        (np.zeros((0, 5, 3), np.uint8), ValueError, "empty"),
        (np.full((4, 5, 3), np.nan, np.float32), ValueError, "NaN"),
        (np.full((4, 5, 3), np.inf), ValueError, "NaN or infinite"),
        (np.zeros((2, 4, 5, 3), np.uint8), ValueError, "unsupported image array shape"),
        (np.zeros((3, 4, 5), np.uint8), ValueError, "channels-last"),
        (np.full((4, 5, 3), 200.0), ValueError, "divide by 255"),
        (np.zeros((4, 5, 3), np.int64), TypeError, "unsupported image dtype"),
        (torch.rand(2, 3, 4, 4), ValueError, "batch"),
        (torch.rand(5, 4, 4), ValueError, "unsupported image tensor shape"),
        (torch.empty(3, 0, 4), ValueError, "empty"),
        ([1, 2, 3], TypeError, "accepted"),
    ],
)
def test_rejected_inputs(bad, exc, message):
    with pytest.raises(exc, match=message):
        fw.load_image(bad)


def test_unreadable_and_missing_files(tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="could not read"):
        fw.load_image(junk)
    with pytest.raises(FileNotFoundError, match="not found"):
        fw.load_image(tmp_path / "missing.jpg")


def test_sample_images_are_offline_and_valid():
    names = fw.sample_image_names()
    assert {"chelsea", "coffee", "astronaut", "rocket", "grace_hopper"} <= set(names)
    for name in names:
        t = fw.sample_image(name)
        assert t.shape[0] == 3 and min(t.shape[1:]) >= 64
    with pytest.raises(ValueError, match="available: .*chelsea"):
        fw.sample_image("dog")
