"""load_image accepts every documented form and rejects the rest with a clear message."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, JpegImagePlugin

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


# ---- issue 25: decoded images are capped in pixels; large JPEGs are decoded at a reduced scale


def _photo(h: int, w: int) -> Image.Image:
    """A smooth, photo-like RGB image (JPEG scaling is exact only in spirit: compare means)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    rgb = np.stack([x / w, y / h, 0.5 + 0.4 * np.sin(x / 37.0) * np.cos(y / 23.0)], -1)
    return Image.fromarray((rgb * 255).astype(np.uint8))


def test_images_over_max_pixels_are_downscaled_on_every_path(tmp_path, monkeypatch):
    monkeypatch.setattr(fw.images, "MAX_PIXELS", 20_000)  # the rule, at a size a test can afford
    big = _photo(300, 400)
    big.save(tmp_path / "big.jpg", quality=95)
    big.save(tmp_path / "big.png")
    for src in (tmp_path / "big.jpg", tmp_path / "big.png", big, np.asarray(big), torch.rand(3, 300, 400)):
        t = fw.load_image(src)
        assert t.shape[0] == 3 and t.shape[1] * t.shape[2] <= 20_000, type(src)
        assert abs(t.shape[2] / t.shape[1] - 4 / 3) < 0.02  # aspect kept
    assert tuple(fw.load_image(tmp_path / "big.jpg", size=(50, 60)).shape) == (3, 50, 60)  # explicit sizes hold
    assert fw.images.MAX_PIXELS == 20_000 and fw.images.__all__.count("MAX_PIXELS") == 1


def test_large_jpegs_are_decoded_at_a_reduced_scale(tmp_path, monkeypatch):
    """``size=`` smaller than the file: libjpeg decodes at 1/2, 1/4 or 1/8 (``draft``), the result has the
    same size as the full decode's and nearly the same pixels."""
    path = tmp_path / "photo.jpg"
    _photo(960, 1280).save(path, quality=95)
    drafted: list[tuple[int, int]] = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):  # the real draft, recording what was decoded
        out = original(self, mode, size)
        drafted.append(self.size)
        return out

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    small = fw.load_image(path, size=100)
    assert drafted == [(160, 120)]  # 1/8 of 1280 × 960, the smallest scale still ≥ 134 × 100
    full = fw.load_image(np.asarray(Image.open(path).convert("RGB")), size=100)
    assert small.shape == full.shape == (3, 100, 133)
    assert float((small - full).abs().mean()) < 0.01


def test_decompression_bombs_are_refused_clearly(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.new("RGB", (400, 300)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50_000)  # 400 × 300 > 2 × 50 000: Pillow's bomb rule
    with pytest.raises(ValueError, match=r"bomb.png is too large to decode safely .* up to 100,000 pixels"):
        fw.load_image(path)


def test_a_turned_jpeg_is_drafted_in_its_shown_orientation(tmp_path):
    path = tmp_path / "turned.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned by 90°: 1280 × 960 stored, 960 × 1280 shown
    _photo(960, 1280).save(path, quality=95, exif=exif)
    small = fw.load_image(path, size=(200, 90))
    full = fw.load_image(Image.open(path), size=(200, 90))
    assert small.shape == full.shape == (3, 200, 90)
    assert float((small - full).abs().mean()) < 0.01


def test_thin_tensors_keep_their_orientation():
    """A (3, H, W) tensor is channels-first even when W is 1 or 3 (a 2000 × 1 px tile stayed sideways)."""
    to_pil = fw.to_pil
    assert to_pil(torch.rand(3, 2000, 1)).size == (1, 2000)
    assert to_pil(torch.rand(3, 10, 3)).size == (3, 10)
    assert to_pil(torch.rand(1, 3, 7, 1)).size == (1, 7)
    assert to_pil(np.zeros((10, 3, 3), np.uint8)).size == (3, 10)  # an (H, W, 3) array stays HWC
