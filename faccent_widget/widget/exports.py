"""What the widget exports, bounded for any run length and any aspect ratio: the panel PNG (seed |
Grad-CAM | mask | accentuation), the animated GIF of the run and the gallery's images."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from ..core.compositing import labelled_strip, titled_sheet
from ..core.derived_objectives import Suppressed
from ..core.objectives import Logit, Objective
from ..images import to_png_bytes
from .extras import gif_bytes

if TYPE_CHECKING:
    from .session import Session

__all__ = [
    "GIF_MAX_FRAMES",
    "EXPORT_HEIGHT",
    "EXPORT_MAX_SIDE",
    "export_height",
    "frame_indices",
    "gallery_strip",
    "gallery_message",
    "gif",
    "panel_png",
]

#: An animated GIF has at most this many frames (the seed and the final image always among them).
GIF_MAX_FRAMES = 120
#: Exported images are this tall, unless that makes an image wider than ``EXPORT_MAX_SIDE``.
EXPORT_HEIGHT = 256
#: No image in an export (a panel tile, a GIF frame) is wider than this many pixels.
EXPORT_MAX_SIDE = 1024


def export_height(hw: tuple[int, int], height: int = EXPORT_HEIGHT, max_side: int = EXPORT_MAX_SIDE) -> int:
    """The height to scale an image of size ``hw`` to: ``height``, lowered so that its width stays at
    most ``max_side`` (a 1 × 2000 strip is exported 1024 px wide, not 512,000)."""
    h, w = max(1, int(hw[0])), max(1, int(hw[1]))
    return max(1, min(height, (max_side * h) // w))


def frame_indices(count: int, budget: int | None = None) -> list[int]:
    """At most ``budget`` (default ``GIF_MAX_FRAMES``) of ``range(count)``, evenly spread, first and last kept."""
    cap = max(2, GIF_MAX_FRAMES if budget is None else budget)
    if count <= cap:
        return list(range(count))
    return sorted({round(i * (count - 1) / (cap - 1)) for i in range(cap)})


def _pil(image: torch.Tensor) -> Image.Image:
    """A (3, H, W) image or an (H, W) map in [0, 1] as an RGB PIL image, read as channels-first whatever its
    size (``to_pil`` takes a (3, 1024, 1) strip for a 3 × 1024 image with one channel)."""
    t = image.detach().float().clamp(0, 1).cpu()
    if t.dim() == 2:
        t = t[None].expand(3, -1, -1)
    return Image.fromarray((t.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def gallery_strip(images: torch.Tensor) -> torch.Tensor:
    """A side-by-side strip (3, H, W) of a batch of candidates (B, 3, h, w), for the gallery's live frame."""
    hw = (int(images.shape[-2]), int(images.shape[-1] * images.shape[0]))
    strip = labelled_strip([_pil(im) for im in images], None, height=export_height(hw, 160))
    return torch.from_numpy(np.array(strip)).permute(2, 0, 1).float() / 255.0


def panel_png(session: Session, objective: Objective, label: str, p1: float, p2: float, view: str) -> bytes:
    """A slide-ready PNG of the panel, 1024 px wide: a title naming the target, p(target) before → after and
    λ, then photo | accentuation over Grad-CAM | mask with plain captions, and a legend (Grad-CAM's colour
    bar, the mask's key). Text is at least ``SHEET_TEXT_PX`` (22 px) tall; no image is over 1024 px wide."""
    heat, mask = session.heat_and_mask(objective, p1, p2)
    seed = session.display_seed
    result = session.result if session.gallery_mode is None else None
    accent = result.image if result is not None else seed
    away = isinstance(objective, Suppressed)
    name = label or "the target"
    if result is None:
        subtitle = "no accentuation yet: press Accentuate"
    else:
        before, after = result.seed_score.prob, result.score.prob
        fell = "  (fell)" if before is not None and after is not None and after < before else ""
        probs = f"p({name}) {_p(before)} → {_p(after)}{fell}"
        subtitle = f"{probs}   ·   λ = {result.lam:.3g}   ·   step {len(result.history['objective'])}"
    view_text = {"masked": "inside the mask", "unmasked": "whole image", "diff": "difference ×4"}
    sheet = titled_sheet(
        [_pil(im) for im in (seed, session.compose(accent, mask, view), heat, mask)],
        [
            "The photo (seed)",
            f"{'Less' if away else 'More'} {name} ({view_text.get(view, view)})",
            f"Where the model looks for {name}",
            "Mask: white = change shown",
        ],
        title=f"Feature accentuation: {'away from ' if away else ''}{name}",
        subtitle=subtitle,
        colourbar=("Grad-CAM: less", "more evidence"),
        swatches=[((0, 0, 0), "photo kept"), ((255, 255, 255), "change shown")],
    )
    return to_png_bytes(sheet)


def _p(prob: float | None) -> str:
    return "–" if prob is None else f"{prob:.2f}"


def gif(session: Session, view: str) -> bytes:
    """Animated GIF of the single run's scrub positions (seed → accentuation) in ``view``: at most
    ``GIF_MAX_FRAMES`` frames, each at most ``EXPORT_MAX_SIDE`` wide."""
    count = len(session.scrub_steps())
    if count < 2:
        raise ValueError("there is nothing to animate yet: run an accentuation first")
    frames = [session.snapshot(k, view) for k in frame_indices(count)]
    shown = [f for f in frames if f is not None]
    return gif_bytes(shown, height=export_height((int(shown[0].shape[-2]), int(shown[0].shape[-1]))))


def gallery_message(session: Session, p1: float, p2: float) -> tuple[list[dict[str, Any]], list[bytes]]:
    """The finished gallery batch as ``gallery`` message items and buffers: n masked accentuations, then n
    masks, then n unmasked accentuations (the masked ones of "Most inhibited" look like the seed: their masks
    are black). In the predicted-vs-true batch each item says its ``role``: "predicted" or "true"."""
    items, accents, masks, unmasked = [], [], [], []
    roles: list[str | None] = [None] * len(session.gallery)
    if session.gallery_mode == "predicted_vs_true" and len(roles) == 2:
        roles = ["predicted", "true"]  # the order Playback.start_gallery gives them
    for res, target, role in zip(session.gallery, session.gallery_targets, roles):
        # a suppressed class is masked where its own evidence is (its Grad-CAM) and named as itself
        obj = target.inner if isinstance(target, Suppressed) and target.inner is not None else target
        _, mask = session.heat_and_mask(obj, p1, p2)
        label = session.model.labels[obj.index] if isinstance(obj, Logit) else obj.description
        if obj is not target:
            label = f"away from {label}"
        items.append(
            {
                "label": label,
                "index": getattr(obj, "index", None),
                "prob_before": res.seed_score.prob,
                "prob_after": res.score.prob,
                "role": role,
            }
        )
        accents.append(to_png_bytes(session.compose(res.image, mask, "masked", seed=res.seed)))
        masks.append(to_png_bytes(mask))
        unmasked.append(to_png_bytes(res.image))
    return items, accents + masks + unmasked
