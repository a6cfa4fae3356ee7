"""Image I/O: one loader for every common image form, encoders (PIL, PNG, JPEG), offline sample images.

``load_image`` turns a path, PIL image, numpy array or torch tensor into a float tensor of shape
(3, H, W) in [0, 1]. ``sample_image`` / ``sample_images`` load pictures that ship inside installed
packages (scikit-image, matplotlib, scikit-learn); nothing is ever downloaded.
"""

from __future__ import annotations

import io
import math
import operator
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "ImageInput",
    "load_image",
    "resize_image",
    "canvas_size",
    "MAX_ASPECT",
    "MAX_PIXELS",
    "sample_image",
    "sample_images",
    "sample_image_names",
    "to_pil",
    "to_png_bytes",
    "to_jpeg_bytes",
]

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray, torch.Tensor]

_ACCEPTED = (
    "a file path, a PIL image, a numpy array (H, W) or (H, W, C) with C in {1, 3, 4} "
    "(uint8, uint16, bool or float in [0, 1]), or a torch tensor (C, H, W) or (1, C, H, W)"
)
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://|^data:", re.ASCII)

#: A canvas's longer side is at most ``MAX_ASPECT`` × its shorter side's target (see :func:`canvas_size`).
MAX_ASPECT = 4

#: Loaded images hold at most this many pixels (the widget's upload cap): larger ones are downscaled,
#: aspect kept, while decoding (JPEGs are decoded at a reduced scale by libjpeg). Files beyond
#: Pillow's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS`` × 2, about 179 Mpx) are refused.
MAX_PIXELS = 40_000_000


def _capped_hw(h: int, w: int) -> tuple[int, int]:
    """(h, w) scaled down, aspect kept, to at most ``MAX_PIXELS`` pixels (unchanged when within)."""
    max_pixels = MAX_PIXELS
    if h * w <= max_pixels:
        return h, w
    scale = math.sqrt(max_pixels / (h * w))
    return max(1, math.floor(h * scale)), max(1, math.floor(w * scale))


def _output_hw(h: int, w: int, size: int | tuple[int, int] | None) -> tuple[int, int]:
    """The (h, w) ``load_image`` gives an (h, w) image for ``size`` (see there)."""
    if isinstance(size, tuple):
        return size
    if isinstance(size, int):
        scale = size / min(h, w)
        return max(1, round(h * scale)), max(1, round(w * scale))
    return _capped_hw(h, w)


def canvas_size(hw: tuple[int, int], short: int, max_aspect: float = MAX_ASPECT) -> tuple[int, int]:
    """(h, w) for an image of size ``hw`` resized so its shorter side is ``short``, aspect kept —
    except that the longer side is capped at ``max_aspect · short``: images thinner than
    1 : ``max_aspect`` (e.g. a 10 × 1000 strip) get a longer side of ``max_aspect · short`` and a
    proportionally shorter short side (at least 1 px), so memory stays bounded."""
    h, w = int(hw[0]), int(hw[1])
    scale = min(short / min(h, w), max_aspect * short / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def load_image(src: ImageInput, size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """Load ``src`` as a float32 tensor (3, H, W) with values in [0, 1].

    Accepts {accepted}. Grayscale is repeated to RGB, alpha is composited over white, 16-bit images
    are scaled by 65535, and EXIF orientation is honoured for files and PIL images. PIL images of
    mode "I" are read as 16-bit (0…65535, how Pillow stores 16-bit grayscale files), mode "F" as
    floats in [0, 1]. URLs are not fetched (nothing is ever downloaded): download the file first.

    ``size``: an int resizes so that the shorter side has that length (aspect kept); a pair
    ``(h, w)`` resizes exactly. Resizing is bilinear with antialiasing.

    Images over ``MAX_PIXELS`` (40 Mpx) are downscaled to it (aspect kept); large JPEG files are
    decoded at a reduced scale (``PIL.Image.draft``) when the result is no smaller than needed, so a
    48-Mpx photo loaded at ``size=224`` is never decoded at full resolution.
    """
    if size is not None:
        size = _check_size(size)
    if isinstance(src, str) and _URL.match(src.strip()):
        raise ValueError(
            f"{src[:80]!r} looks like a URL; URLs are not fetched (faccent-widget never uses the network). "
            "Download the image and pass its file path, or pass a PIL image or array."
        )
    if isinstance(src, (str, os.PathLike)):
        tensor, size = _from_path(Path(src), size)
    elif isinstance(src, Image.Image):
        tensor = _from_pil(src)
    elif isinstance(src, np.ndarray):
        tensor = _from_numpy(src)
    elif isinstance(src, torch.Tensor):
        tensor = _from_tensor(src)
    else:
        raise TypeError(f"cannot load an image from {type(src).__name__}; accepted: {_ACCEPTED}")
    if not torch.isfinite(tensor).all():
        raise ValueError("the image contains NaN or infinite values; pass finite values in [0, 1]")
    h, w = int(tensor.shape[-2]), int(tensor.shape[-1])
    if size is None and h * w > MAX_PIXELS:
        size = _capped_hw(h, w)
    if size is not None:
        tensor = resize_image(tensor, size)
    return tensor.contiguous()


load_image.__doc__ = (load_image.__doc__ or "").format(accepted=_ACCEPTED)


def _check_size(size: Any) -> int | tuple[int, int]:
    """A size as an int or an (h, w) pair of ints >= 1 (numpy/torch integer scalars accepted)."""
    accepted = "a positive int (the shorter side) or an (h, w) pair of positive ints"

    def one(v: Any) -> int:
        if isinstance(v, (bool, np.bool_)):
            raise TypeError(f"size must be {accepted}, got {size!r}")
        try:
            n = operator.index(v)
        except TypeError:
            raise TypeError(f"size must be {accepted}, got {size!r}") from None
        if n < 1:
            raise ValueError(f"size must be {accepted}, got {size!r}")
        return int(n)

    if isinstance(size, (tuple, list)):
        if len(size) != 2:
            raise ValueError(f"size must be {accepted}, got {size!r}")
        return one(size[0]), one(size[1])
    return one(size)


def resize_image(image: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Resize a (3, H, W) or (N, 3, H, W) image; an int sets the shorter side, a pair sets (h, w)."""
    size = _check_size(size)
    batched = image.dim() == 4
    x = image if batched else image[None]
    h, w = x.shape[-2:]
    if isinstance(size, int):
        scale = size / min(h, w)
        out = (max(1, round(h * scale)), max(1, round(w * scale)))
    else:
        out = size
    if out != (h, w):
        x = F.interpolate(x, size=out, mode="bilinear", antialias=True, align_corners=False).clamp_(0, 1)
    return x if batched else x[0]


def _from_path(path: Path, size: int | tuple[int, int] | None) -> tuple[torch.Tensor, tuple[int, int]]:
    """The decoded file and the (h, w) ``load_image`` gives it (from the file's own size): a large JPEG
    is decoded at a reduced scale (``draft``) when that still covers this size."""
    if not path.exists():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            turned = img.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # EXIF orientation: shown turned by 90°
            w, h = img.size
            out_h, out_w = _output_hw(*((w, h) if turned else (h, w)), size)
            if img.format == "JPEG" and out_h * out_w < h * w:
                img.draft(img.mode, (out_h, out_w) if turned else (out_w, out_h))  # decodes >= this size
            img.load()
            return _from_pil(img, (out_h, out_w)), (out_h, out_w)
    except UnidentifiedImageError as exc:
        raise ValueError(f"could not read {path} as an image ({exc}); accepted: {_ACCEPTED}") from exc
    except Image.DecompressionBombError as exc:
        raise ValueError(
            f"{path} is too large to decode safely ({exc}); accepted: images up to "
            f"{2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels (loaded images are downscaled to {MAX_PIXELS:,})"
        ) from exc


def _from_pil(img: Image.Image, size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """A PIL image as (3, H, W); one over ``MAX_PIXELS`` is downscaled in Pillow (uint8, before the
    float copy) to what ``load_image`` gives it for ``size``."""
    img = ImageOps.exif_transpose(img)
    if img.width == 0 or img.height == 0:
        raise ValueError("the image is empty (0 pixels)")
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img)
        if img.mode.startswith("I;16"):
            return _from_numpy(arr.astype(np.uint16))
        if img.mode == "F":
            return _from_numpy(arr.astype(np.float32))  # floats must lie in [0, 1], as for arrays
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 65535:
            raise ValueError(
                f"PIL mode 'I' images are read as 16-bit (values 0…65535, scaled by 65535); this one has "
                f"values in [{lo}, {hi}]. Convert it first, e.g. to a float array in [0, 1]."
            )
        return _from_numpy(arr.astype(np.uint16))
    if img.mode in ("P", "PA", "LA", "RGBA") or "transparency" in img.info:
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    img = img.convert("RGB")
    if img.width * img.height > MAX_PIXELS:
        h, w = _output_hw(img.height, img.width, size)
        img = img.resize((w, h), Image.Resampling.BILINEAR)
    return _from_numpy(np.asarray(img))


def _from_numpy(arr: np.ndarray) -> torch.Tensor:
    if arr.size == 0:
        raise ValueError(f"the image array is empty (shape {arr.shape}); accepted: {_ACCEPTED}")
    if arr.ndim == 3 and arr.shape[-1] not in (1, 3, 4) and arr.shape[0] in (1, 3, 4):
        raise ValueError(
            f"numpy images are channels-last (H, W, C); got shape {arr.shape}. Transpose with arr.transpose(1, 2, 0)."
        )
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (1, 3, 4)):
        raise ValueError(f"unsupported image array shape {arr.shape}; accepted: {_ACCEPTED}")
    if arr.dtype == np.bool_:
        data = arr.astype(np.float32)
    elif arr.dtype in (np.uint8, np.uint16):
        data = arr.astype(np.float32)
        data /= 255.0 if arr.dtype == np.uint8 else 65535.0  # in place: one float copy of a large image
    elif np.issubdtype(arr.dtype, np.floating):
        data = arr.astype(np.float32)
        _check_unit_range(data)
    else:
        raise TypeError(f"unsupported image dtype {arr.dtype}; accepted: {_ACCEPTED}")
    if data.ndim == 2:
        data = data[..., None]
    tensor = torch.from_numpy(np.ascontiguousarray(data)).permute(2, 0, 1)
    return _to_rgb(tensor)


def _from_tensor(t: torch.Tensor) -> torch.Tensor:
    if t.numel() == 0:
        raise ValueError(f"the image tensor is empty (shape {tuple(t.shape)}); accepted: {_ACCEPTED}")
    if t.dim() == 4:
        if t.shape[0] != 1:
            raise ValueError(f"expected one image (1, C, H, W), got a batch of shape {tuple(t.shape)}")
        t = t[0]
    if t.dim() == 3 and min(t.shape[0], t.shape[1]) > 4 and t.shape[-1] in (1, 3, 4):
        raise ValueError(
            f"torch images are channels-first (C, H, W); got shape {tuple(t.shape)}, which looks channels-last "
            "(H, W, C). Transpose with t.permute(2, 0, 1)."
        )
    if t.dim() != 3 or t.shape[0] not in (1, 3, 4):
        raise ValueError(f"unsupported image tensor shape {tuple(t.shape)}; accepted: {_ACCEPTED}")
    t = t.detach().to("cpu")
    if t.dtype == torch.uint8:
        t = t.float() / 255.0
    elif t.dtype == torch.bool:
        t = t.float()
    elif t.is_floating_point():
        t = t.float()
        _check_unit_range(t)
    else:
        raise TypeError(f"unsupported image tensor dtype {t.dtype}; use uint8 or float in [0, 1]")
    return _to_rgb(t.clone())


def _check_unit_range(data: Any) -> None:
    finite = np.isfinite(data) if isinstance(data, np.ndarray) else torch.isfinite(data)
    if not finite.all():
        raise ValueError("the image contains NaN or infinite values; pass finite values in [0, 1]")
    lo, hi = float(data.min()), float(data.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(
            f"float images must have values in [0, 1], got [{lo:.3g}, {hi:.3g}]"
            + ("; divide by 255 first" if hi <= 255 else "")
        )


def _to_rgb(chw: torch.Tensor) -> torch.Tensor:
    c = chw.shape[0]
    if c == 1:
        return chw.expand(3, -1, -1).clone().clamp_(0, 1)
    if c == 4:
        rgb, alpha = chw[:3], chw[3:4]
        return (rgb * alpha + (1 - alpha)).clamp_(0, 1)
    return chw.clamp(0, 1)


# --------------------------------------------------------------------------- encoders


def _to_uint8(image: Any) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    channels_first = isinstance(image, torch.Tensor)  # tensors are (C, H, W); arrays (H, W, C)
    t = torch.as_tensor(np.asarray(image) if not channels_first else image).detach().to("cpu")
    if t.dim() == 4:
        if t.shape[0] != 1:
            raise ValueError(f"expected one image, got a batch of shape {tuple(t.shape)}; index it first")
        t = t[0]
    if t.dtype == torch.uint8:
        arr = t.numpy()
    else:
        arr = (t.float().clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()
    # CHW -> HWC: always for a tensor (so a 1 or 3 px wide (3, H, W) tile stays upright), for an array only
    # when its last axis cannot be channels
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and (channels_first or arr.shape[-1] not in (1, 3)):
        arr = arr.transpose(1, 2, 0)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3):
        raise ValueError(f"cannot convert an array of shape {tuple(t.shape)} to an image")
    return np.ascontiguousarray(arr)


def to_pil(image: Any) -> Image.Image:
    """A PIL image from a (3, H, W) / (1, 3, H, W) / (H, W) float tensor in [0, 1] (clipped), a uint8
    tensor, an (H, W, 3) array, or a PIL image. 2-D inputs give a grayscale ("L") image."""
    arr = _to_uint8(image)
    return Image.fromarray(arr)


def to_png_bytes(image: Any) -> bytes:
    """PNG bytes of :func:`to_pil` ``(image)``."""
    buf = io.BytesIO()
    to_pil(image).save(buf, format="PNG")
    return buf.getvalue()


def to_jpeg_bytes(image: Any, quality: int = 85) -> bytes:
    """JPEG bytes of :func:`to_pil` ``(image)`` (RGB; ``quality`` 1–95)."""
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality must be in 1…100, got {quality}")
    buf = io.BytesIO()
    to_pil(image).convert("RGB").save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


# --------------------------------------------------------------------------- sample images


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        return getattr(skimage.data, name)()

    return load


def _matplotlib(filename: str) -> Callable[[], str]:
    def load() -> str:
        import matplotlib

        return str(Path(matplotlib.get_data_path()) / "sample_data" / filename)

    return load


def _sklearn(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(filename)

    return load


_SAMPLES: dict[str, Callable[[], Any]] = {
    "astronaut": _skimage("astronaut"),
    "camera": _skimage("camera"),
    "chelsea": _skimage("chelsea"),
    "coffee": _skimage("coffee"),
    "rocket": _skimage("rocket"),
    "grace_hopper": _matplotlib("grace_hopper.jpg"),
    "china": _sklearn("china.jpg"),
    "flower": _sklearn("flower.jpg"),
}


def _available() -> list[str]:
    return list(_SAMPLES)


def sample_image_names() -> list[str]:
    """Names of the sample images available from installed packages."""
    return _available()


def sample_image(name: str = "chelsea", size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """Load a bundled sample image by name (see ``sample_image_names()``) as (3, H, W) in [0, 1]."""
    names = _available()
    if name not in names:
        raise ValueError(f"unknown sample image {name!r}; available: {', '.join(names)}")
    return load_image(_SAMPLES[name](), size=size)


def sample_images(size: int | tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
    """All available sample images, by name."""
    return {name: sample_image(name, size=size) for name in _available()}
