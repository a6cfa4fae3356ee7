"""Helpers of the widget's second pass: the λ calibration in small chunks (cached per model), decoding an
uploaded photo, and the animated GIF export.

Kept apart from :mod:`faccent_widget.widget.panel` so that the panel only wires them to messages.
"""

from __future__ import annotations

import io
import math
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from ..core.model import Model
from ..images import load_image, sample_images
from ..validation.calibration import DEFAULT_LAMBDA_GRID, LambdaCalibrationRun
from .lambda_cache import load_lambda, store_lambda

__all__ = ["LambdaCalibrator", "cached_lambda", "decode_image", "gif_bytes", "MAX_UPLOAD_BYTES"]

#: Uploads larger than this are refused before decoding (a photo from a phone is 2–10 MB).
MAX_UPLOAD_BYTES = 40 * 1024 * 1024
#: Decoded images larger than this many pixels are refused (PIL's own bomb limit is about 89 M).
MAX_UPLOAD_PIXELS = 40_000_000

#: The small budget of the automatic λ mark: 2 sample images × the default grid × 6 steps of 2 crops at
#: 96 px. It answers "where is the sensitive region" roughly; ``calibrate_lambda`` on more images and
#: steps gives the careful answer.
AUTO_CALIBRATION: dict[str, Any] = {
    "n_images": 2,
    "lambdas": DEFAULT_LAMBDA_GRID,
    "steps": 6,
    "n_crops": 2,
    "input_size": 96,
    "canvas": 96,
    "seed": 0,
}

# recommended λ per model (the nn.Module the widget runs, by identity) and regularisation layer
_LAMBDA_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[str, float]] = weakref.WeakKeyDictionary()


def cached_lambda(model: Model, reg_layer: str) -> float | None:
    """The recommended λ computed earlier for this model and layer: in this process, or on disk by an
    earlier one (:mod:`.lambda_cache`), if any."""
    value = _LAMBDA_CACHE.get(model.module, {}).get(reg_layer)
    if value is None:
        value = load_lambda(model, reg_layer, AUTO_CALIBRATION)
        if value is not None:
            _LAMBDA_CACHE.setdefault(model.module, {})[reg_layer] = value
    return value


class LambdaCalibrator:
    """The panel's automatic λ mark: a small :class:`~faccent_widget.validation.LambdaCalibrationRun`
    (:data:`AUTO_CALIBRATION`, one run per (image, λ) so each step is short), advanced in chunks of a few
    hundred ms with :meth:`advance`. When it is done, :attr:`recommended` holds the λ where the mean
    normalised distance crosses 0.5 and the value is cached for the model and layer (:func:`cached_lambda`).
    """

    def __init__(self, model: Model, reg_layer: str, images: Sequence[Any] | None = None, **settings: Any) -> None:
        cfg = {**AUTO_CALIBRATION, **settings}
        n_images = int(cfg.pop("n_images"))
        self.model = model
        self.reg_layer = reg_layer
        self._default = images is None and not settings  # the panel's own mark: kept on disk too
        pictures = list(images) if images is not None else list(sample_images().values())[:n_images]
        self._calibration = LambdaCalibrationRun(model, pictures, reg_layer=reg_layer, batch="single", **cfg)
        self.recommended: float | None = None
        self.bracketed = False

    @property
    def done(self) -> bool:
        return self._calibration.done

    @property
    def progress(self) -> float:
        return self._calibration.progress

    def advance(self, budget_s: float) -> bool:
        """Run steps for about ``budget_s`` seconds (at least one); returns ``done``. A finished calibration
        that found no usable λ is a ``ValueError``."""
        if self._calibration.advance(budget_s) and self.recommended is None:
            result = self._calibration.result()
            if not np.isfinite(result.curve.mean).any():
                raise ValueError("the λ calibration found no λ-dependence on the sample images")
            if not math.isfinite(result.recommended):
                raise ValueError("the λ calibration gave no finite λ")
            self.recommended, self.bracketed = float(result.recommended), result.bracketed
            _LAMBDA_CACHE.setdefault(self.model.module, {})[self.reg_layer] = self.recommended
            if self._default:
                store_lambda(self.model, self.reg_layer, AUTO_CALIBRATION, self.recommended)
        return self.done


def decode_image(data: bytes | bytearray | memoryview) -> torch.Tensor:
    """An uploaded file's bytes → (3, H, W) image, or ``ValueError`` saying what is wrong with it."""
    raw = bytes(data)
    if not raw:
        raise ValueError("the file is empty")
    if len(raw) > MAX_UPLOAD_BYTES:
        raise ValueError(f"the file is too large ({len(raw) / 2**20:.0f} MB; at most {MAX_UPLOAD_BYTES >> 20} MB)")
    try:
        with Image.open(io.BytesIO(raw)) as img:
            if img.width * img.height > MAX_UPLOAD_PIXELS:
                raise ValueError(f"the image is too large ({img.width}×{img.height} pixels)")
            img.load()
            return load_image(img)
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"not an image that can be read (PNG, JPEG, WebP, GIF, BMP, TIFF): {exc}") from exc


def gif_bytes(
    frames: Sequence[torch.Tensor], *, duration_ms: int = 120, hold_ms: int = 1200, height: int = 256
) -> bytes:
    """Animated GIF (looping) of (3, H, W) images in [0, 1]; the first and last frames are held longer."""
    if not frames:
        raise ValueError("there is nothing to animate yet: run an accentuation first")
    pics = []
    for f in frames:
        arr = (f.detach().float().clamp(0, 1).cpu().permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        pic = Image.fromarray(arr)
        if pic.height != height:
            pic = pic.resize((max(1, round(pic.width * height / pic.height)), height), Image.Resampling.BICUBIC)
        pics.append(pic.convert("P", palette=Image.Palette.ADAPTIVE, colors=255))
    durations = [duration_ms] * len(pics)
    durations[0] = durations[-1] = hold_ms
    buf = io.BytesIO()
    pics[0].save(
        buf, format="GIF", save_all=True, append_images=pics[1:], duration=durations, loop=0, optimize=False, disposal=1
    )
    return buf.getvalue()
