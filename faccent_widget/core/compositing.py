"""Compositing helpers: masked accentuations, heatmap overlays, difference images, labelled strips.

Pure functions, no plotting side effects (no pyplot). Images are float tensors in [0, 1], (3, H, W)
or (N, 3, H, W); masks and heatmaps are (H, W), (N, H, W) or (N, 1, H, W) in [0, 1]. Encoders to
PIL/PNG/JPEG live with the rest of image I/O in :mod:`faccent_widget.images`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from ..images import MAX_ASPECT, load_image, to_pil

__all__ = [
    "masked_accentuation",
    "heatmap_overlay",
    "difference_image",
    "labelled_strip",
    "titled_sheet",
    "panel",
    "PANEL_MAX_HEIGHT",
    "SHEET_MAX_WIDTH",
    "SHEET_TEXT_PX",
]

#: A panel's tiles are at most this tall (the default height, the first image's, is capped to it; a
#: larger ``height`` is refused) and at most ``MAX_ASPECT`` × as wide: a strip of n images stays within
#: n × 1024 × 4096 pixels whatever their aspect ratios.
PANEL_MAX_HEIGHT = 1024


def _image(x: Any) -> torch.Tensor:
    """A (3, H, W) or (N, 3, H, W) float CPU tensor in [0, 1] (tensors are clamped, not checked)."""
    if isinstance(x, torch.Tensor):
        t = x.detach().to("cpu")
        t = t.float() / 255.0 if t.dtype == torch.uint8 else t.float()
        if t.dim() == 2:
            t = t[None].expand(3, -1, -1)
        if t.dim() == 3 and t.shape[0] == 1:
            t = t.expand(3, -1, -1)
        if t.dim() not in (3, 4) or t.shape[-3] != 3:
            raise ValueError(f"expected an image (3, H, W) or a batch (N, 3, H, W), got shape {tuple(x.shape)}")
        return t.clamp(0, 1)
    return load_image(x)


def _hw(x: torch.Tensor) -> tuple[int, int]:
    return int(x.shape[-2]), int(x.shape[-1])


def _resize(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(hw):
        return x
    batched = x.dim() == 4
    y = F.interpolate(
        x if batched else x[None],
        size=hw,
        mode="bilinear",
        align_corners=False,
        antialias=x.shape[-1] > hw[1] or x.shape[-2] > hw[0],
    )
    return y if batched else y[0]


def _mask(mask: Any, hw: tuple[int, int]) -> torch.Tensor:
    """A (1, H, W) or (N, 1, H, W) mask in [0, 1] at size ``hw``."""
    m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask).detach().to("cpu").float()
    if m.dim() == 2:
        m = m[None]
    elif m.dim() == 4:
        if m.shape[1] != 1:
            raise ValueError(f"a 4-D mask must be (N, 1, H, W), got shape {tuple(m.shape)}")
    elif m.dim() == 3:
        m = m[:, None] if m.shape[0] > 1 else m
    else:
        raise ValueError(f"expected a mask (H, W), (N, H, W) or (N, 1, H, W), got shape {tuple(m.shape)}")
    return _resize(m, hw).clamp(0, 1)


def masked_accentuation(seed: Any, accent: Any, mask: Any) -> torch.Tensor:
    """Blend an accentuation over its seed: ``mask · accent + (1 − mask) · seed``.

    ``seed`` and ``accent``: (3, H, W) or (N, 3, H, W) images in [0, 1] (the seed may be anything
    ``load_image`` accepts; it is resized to the accentuation's size if they differ). ``mask``: (H, W),
    (N, H, W) or (N, 1, H, W) in [0, 1] — e.g. a collectively normalised attribution map — resized
    bilinearly to the image if needed. Mask 0 shows the seed, 1 the accentuation. Returns a tensor
    shaped like ``accent`` (batched when any input is batched).
    """
    a = _image(accent)
    s = _resize(_image(seed), _hw(a))
    m = _mask(mask, _hw(a))
    return (m * a + (1 - m) * s).clamp(0, 1)


def heatmap_overlay(
    image: Any,
    heat: Any,
    cmap: str = "jet",
    alpha: float = 0.5,
    *,
    normalize: bool = False,
) -> torch.Tensor:
    """Colour ``heat`` with a matplotlib colormap and blend it over ``image``.

    ``heat``: (H, W) or (N, H, W) values in [0, 1] (clipped; ``normalize=True`` min-max scales each
    map first), resized to the image if needed. ``cmap``: any matplotlib colormap name ("jet",
    "inferno", …). Returns ``(1 − alpha) · image + alpha · cmap(heat)``, shaped like ``image``
    (batched when either input is batched).
    """
    import matplotlib

    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    try:
        colormap = matplotlib.colormaps[cmap]
    except KeyError as exc:
        raise ValueError(f"unknown matplotlib colormap {cmap!r}") from exc
    img = _image(image)
    h = torch.as_tensor(np.asarray(heat) if not isinstance(heat, torch.Tensor) else heat).detach().to("cpu").float()
    if h.dim() not in (2, 3):
        raise ValueError(f"expected a heatmap (H, W) or (N, H, W), got shape {tuple(h.shape)}")
    if normalize:
        flat = h.reshape(-1, h.shape[-2] * h.shape[-1]) if h.dim() == 3 else h.reshape(1, -1)
        lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
        h = ((flat - lo) / (hi - lo).clamp_min(1e-12)).reshape(h.shape)
    h = _mask(h, _hw(img))  # (1|N, 1, H, W) or (1, H, W)
    rgba = colormap(h.squeeze(-3).numpy())  # (..., H, W, 4)
    colour = torch.from_numpy(np.ascontiguousarray(rgba[..., :3])).float().movedim(-1, -3)
    return ((1 - float(alpha)) * img + float(alpha) * colour).clamp(0, 1)


def difference_image(seed: Any, accent: Any, gain: float = 4.0) -> torch.Tensor:
    """Signed difference ``0.5 + gain · (accent − seed)`` per channel, clipped to [0, 1]: mid-grey
    where nothing changed, brighter/darker where the accentuation added/removed colour. The seed is
    resized to the accentuation if needed."""
    a = _image(accent)
    s = _resize(_image(seed), _hw(a))
    return (0.5 + float(gain) * (a - s)).clamp(0, 1)


def labelled_strip(
    images: Sequence[Any],
    labels: Sequence[str] | None = None,
    *,
    height: int | None = None,
    pad: int = 4,
    background: tuple[int, int, int] = (255, 255, 255),
) -> Image.Image:
    """A side-by-side strip (PIL RGB) of ``images``, all scaled to ``height`` (default: the first
    image's, at most ``PANEL_MAX_HEIGHT``), with an optional text label under each.

    Each tile fits a ``height × MAX_ASPECT·height`` box, aspect kept: an image wider than 4 : 1 gets a
    shorter tile (top-aligned), so thin images cannot blow the strip up.
    """
    if not images:
        raise ValueError("panel needs at least one image")
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"got {len(images)} images but {len(labels)} labels")
    if height is not None and (isinstance(height, bool) or not 1 <= int(height) <= PANEL_MAX_HEIGHT):
        raise ValueError(f"height must be an int in [1, {PANEL_MAX_HEIGHT}], got {height!r}")
    if isinstance(pad, bool) or not 0 <= int(pad) <= 256:
        raise ValueError(f"pad must be an int in [0, 256], got {pad!r}")
    pils = [to_pil(im).convert("RGB") for im in images]
    h = int(height) if height is not None else min(pils[0].height, PANEL_MAX_HEIGHT)

    def tile(p: Image.Image) -> Image.Image:
        scale = min(h / p.height, MAX_ASPECT * h / p.width)
        size = (max(1, round(p.width * scale)), max(1, round(p.height * scale)))
        return p if size == p.size else p.resize(size, Image.Resampling.BILINEAR)

    pils = [tile(p) for p in pils]
    text_h = 14 if labels is not None else 0
    width = sum(p.width for p in pils) + pad * (len(pils) + 1)
    canvas = Image.new("RGB", (width, h + 2 * pad + text_h), background)
    draw = ImageDraw.Draw(canvas)
    x = pad
    for i, p in enumerate(pils):
        canvas.paste(p, (x, pad))
        if labels is not None:
            draw.text((x, pad + h + 1), str(labels[i]), fill=(0, 0, 0))
        x += p.width + pad
    return canvas


#: A titled sheet is at most this wide (and its tiles at most this tall): slide-sized, not poster-sized.
SHEET_MAX_WIDTH = 1024
#: Text on a titled sheet is at least this many pixels tall (the title larger): readable on a slide.
SHEET_TEXT_PX = 22
_TITLE_PX = 34
_MARGIN = 24
_GAP = 14


def _font(px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans (matplotlib's bundled font: it has λ, →, ×) at ``px`` pixels; Pillow's own font if absent."""
    try:
        from matplotlib import font_manager

        return ImageFont.truetype(font_manager.findfont("DejaVu Sans", fallback_to_default=True), px)
    except Exception:  # no matplotlib font file: Pillow's bundled font (it lacks a few symbols)
        return ImageFont.load_default(size=px)


def _fit(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> str:
    """``text``, shortened with "…" until it fits ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def titled_sheet(
    images: Sequence[Any],
    captions: Sequence[str],
    *,
    title: str,
    subtitle: str = "",
    colourbar: tuple[str, str] | None = None,
    swatches: Sequence[tuple[tuple[int, int, int], str]] = (),
    columns: int = 2,
    width: int = SHEET_MAX_WIDTH,
    background: tuple[int, int, int] = (255, 255, 255),
) -> Image.Image:
    """A slide-ready sheet (PIL RGB, ``width`` ≤ ``SHEET_MAX_WIDTH`` px wide): a title, a subtitle line,
    the images in a grid of ``columns`` with a caption over each, and a legend line — a "jet" colour bar
    between ``colourbar = (low text, high text)`` and colour swatches with their meaning. All text is at
    least ``SHEET_TEXT_PX`` tall; long text is shortened with "…" to fit.
    """
    if not images:
        raise ValueError("titled_sheet needs at least one image")
    if len(captions) != len(images):
        raise ValueError(f"got {len(images)} images but {len(captions)} captions")
    if isinstance(columns, bool) or not 1 <= int(columns) <= 4:
        raise ValueError(f"columns must be an int in [1, 4], got {columns!r}")
    if isinstance(width, bool) or not 320 <= int(width) <= SHEET_MAX_WIDTH:
        raise ValueError(f"width must be an int in [320, {SHEET_MAX_WIDTH}], got {width!r}")
    cols, w = int(columns), int(width)
    pils = [to_pil(im).convert("RGB") for im in images]
    cell_w = (w - 2 * _MARGIN - (cols - 1) * _GAP) // cols
    cell_h = min(cell_w, 420)  # a portrait photo keeps the sheet slide-shaped
    # every tile fits a cell_w × cell_h box, aspect kept; the row is as tall as its tallest tile
    tiles = []
    for p in pils:
        scale = min(cell_w / p.width, cell_h / p.height)
        size = (max(1, round(p.width * scale)), max(1, round(p.height * scale)))
        tiles.append(p.resize(size, Image.Resampling.BILINEAR) if size != p.size else p)
    rows = [tiles[i : i + cols] for i in range(0, len(tiles), cols)]
    text_font, title_font = _font(SHEET_TEXT_PX), _font(_TITLE_PX)
    line = SHEET_TEXT_PX + 8
    legend = colourbar is not None or bool(swatches)
    height = _MARGIN + _TITLE_PX + 10 + (line if subtitle else 0) + 6
    height += sum(line + max(t.height for t in row) + _GAP for row in rows)
    height += (line + 6 if legend else 0) + _MARGIN - _GAP
    canvas = Image.new("RGB", (w, height), background)
    draw = ImageDraw.Draw(canvas)
    ink, muted = (20, 20, 20), (70, 70, 70)
    y = _MARGIN
    draw.text((_MARGIN, y), _fit(draw, title, title_font, w - 2 * _MARGIN), fill=ink, font=title_font)
    y += _TITLE_PX + 10
    if subtitle:
        draw.text((_MARGIN, y), _fit(draw, subtitle, text_font, w - 2 * _MARGIN), fill=muted, font=text_font)
        y += line
    y += 6
    k = 0
    for row in rows:
        row_h = max(t.height for t in row)
        for c, tile in enumerate(row):
            x = _MARGIN + c * (cell_w + _GAP)
            draw.text((x, y), _fit(draw, str(captions[k]), text_font, cell_w), fill=ink, font=text_font)
            canvas.paste(tile, (x + (cell_w - tile.width) // 2, y + line))
            k += 1
        y += line + row_h + _GAP
    if legend:
        x = _MARGIN
        if colourbar is not None:
            import matplotlib

            low, high = colourbar
            draw.text((x, y), low, fill=muted, font=text_font)
            x += int(draw.textlength(low, font=text_font)) + 8
            bar_w = 160
            ramp = matplotlib.colormaps["jet"](np.linspace(0, 1, bar_w))[:, :3]
            bar = Image.fromarray((np.repeat(ramp[None], SHEET_TEXT_PX - 4, 0) * 255).astype(np.uint8))
            canvas.paste(bar, (x, y + 3))
            draw.rectangle((x - 1, y + 2, x + bar_w, y + SHEET_TEXT_PX - 1), outline=muted)
            x += bar_w + 8
            draw.text((x, y), high, fill=muted, font=text_font)
            x += int(draw.textlength(high, font=text_font)) + 28
        for rgb, meaning in swatches:
            side = SHEET_TEXT_PX - 4
            draw.rectangle((x, y + 2, x + side, y + 2 + side), fill=rgb, outline=muted)
            x += side + 6
            draw.text((x, y), meaning, fill=muted, font=text_font)
            x += int(draw.textlength(meaning, font=text_font)) + 20
    return canvas


def panel(*args: Any, **kwargs: Any) -> Image.Image:
    """Deprecated name of :func:`labelled_strip` (``panel`` also names the widget)."""
    warnings.warn("compositing.panel is deprecated; use labelled_strip", DeprecationWarning, stacklevel=2)
    return labelled_strip(*args, **kwargs)
