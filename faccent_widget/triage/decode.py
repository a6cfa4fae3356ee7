"""Bounded image decoding for triage: large JPEGs decoded at reduced size, every image capped in pixels.

A triage needs each image only at the model's input size (prediction) and at the canvas size (the
seed), so a camera photo of 8000 × 6000 need not become a 48-Mpx float tensor. :func:`open_bounded`
asks the JPEG decoder for a reduced version (``Image.draft``: DCT scaling by 1/2, 1/4 or 1/8) whose
shorter side is still at least twice what is needed, reduces other formats in 8-bit before they
become floats, and refuses images over :data:`MAX_PIXELS` before decoding them.

:data:`UNREADABLE` are the errors an unreadable image file raises (truncated, not an image,
a decompression bomb, no permission); triage skips such a file and lists it with its reason.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from pathlib import Path
from typing import Any

from PIL import Image

from ..images import to_pil

__all__ = ["MAX_PIXELS", "UNREADABLE", "ImageTooLargeError", "open_bounded", "reason"]

#: Images with more pixels than this (after reduced JPEG decoding) are refused before decoding.
MAX_PIXELS = 64_000_000


class ImageTooLargeError(ValueError):
    """The image has more than :data:`MAX_PIXELS` pixels."""


#: What reading a broken or unreadable image file raises (Pillow raises several kinds).
UNREADABLE: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    struct.error,
    zlib.error,
    Image.DecompressionBombError,
)


def reason(exc: BaseException) -> str:
    """A one-line reason for a skipped file: the error's kind and message."""
    text = " ".join(str(exc).split()) or "no message"
    return f"{type(exc).__name__}: {text}"


def open_bounded(path: Path, min_side: int | None = None) -> Image.Image:
    """The decoded image at ``path``; with ``min_side``, reduced so that its shorter side stays at
    least ``2 · min_side`` (JPEGs through reduced decoding, others in 8-bit after decoding).

    Raises :class:`ImageTooLargeError` over :data:`MAX_PIXELS`, and what Pillow raises for a
    broken file (see :data:`UNREADABLE`).
    """
    with Image.open(path) as img:
        want = 2 * int(min_side) if min_side else None
        w, h = img.size
        if want and img.format == "JPEG" and min(w, h) >= 2 * want:
            short = min(w, h)
            img.draft(img.mode, (math.ceil(w * want / short), math.ceil(h * want / short)))
        w, h = img.size
        if w * h > MAX_PIXELS:
            raise ImageTooLargeError(
                f"{w} × {h} = {w * h / 1e6:.0f} Mpx; triage reads images up to {MAX_PIXELS / 1e6:.0f} Mpx"
            )
        img.load()
    if want and min(img.size) >= 2 * want:
        factor = min(img.size) // want
        if img.mode in ("1", "P"):
            img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        try:
            img = img.reduce(factor)
        except ValueError:  # a mode Pillow cannot reduce (rare 16-bit variants): keep it whole
            pass
    return img


def jpeg_thumbnail(image: Any, short: int, quality: int = 85) -> bytes:
    """JPEG bytes of ``image`` (anything ``to_pil`` takes) with its shorter side at most ``short`` px."""
    pil = to_pil(image).convert("RGB")
    scale = short / min(pil.size)
    if scale < 1:
        pil = pil.resize((max(1, round(pil.width * scale)), max(1, round(pil.height * scale))), resample=2)
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
