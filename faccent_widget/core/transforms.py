"""Augmentations τ: random square box crops and pixel noise, with sampling kept apart from applying.

Sampling (:func:`sample_boxes`, :func:`sample_noise`) draws the parameters of one step once; applying
(:func:`crop_boxes`, :func:`add_noise`) uses them on any batch, so the candidate and the seed get the
very same τ. Crops are resized in one batched ``torchvision.ops.roi_align`` call (adaptive sampling,
i.e. box-filtered like an antialiased resize).
"""

from __future__ import annotations

import torch
from torchvision.ops import roi_align

__all__ = ["sample_boxes", "crop_boxes", "sample_noise", "add_noise", "check_crop_range"]


def check_crop_range(crop_range: tuple[float, float]) -> tuple[float, float]:
    """Validate a (min, max) crop side range given as fractions of the canvas in (0, 1]."""
    try:
        lo, hi = float(crop_range[0]), float(crop_range[1])
    except (TypeError, IndexError, ValueError) as exc:
        raise ValueError(f"crop_range must be a (min, max) pair in (0, 1], got {crop_range!r}") from exc
    if not (0 < lo <= hi <= 1):
        raise ValueError(f"crop_range must satisfy 0 < min <= max <= 1 (fractions of the canvas), got {crop_range!r}")
    return lo, hi


def sample_boxes(
    n: int,
    height: int,
    width: int,
    crop_range: tuple[float, float],
    generator: torch.Generator,
) -> torch.Tensor:
    """``n`` square boxes (x1, y1, x2, y2) in canvas pixels, on the generator's device.

    Side ~ U(min, max) · min(H, W); the top-left corner is uniform within bounds.
    """
    lo, hi = check_crop_range(crop_range)
    u = torch.rand(n, 3, generator=generator, device=generator.device)
    side = (lo + (hi - lo) * u[:, 0]) * min(height, width)
    x1 = u[:, 1] * (width - side)
    y1 = u[:, 2] * (height - side)
    return torch.stack([x1, y1, x1 + side, y1 + side], dim=1)


def crop_boxes(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Cut every box out of every image and resize it to ``size``², in one batched op.

    ``images``: (B, C, H, W); ``boxes``: (n, 4). Returns (B·n, C, size, size), item-major
    (all crops of image 0, then of image 1, …).
    """
    b, n = images.shape[0], boxes.shape[0]
    idx = torch.arange(b, device=boxes.device, dtype=boxes.dtype).repeat_interleave(n)[:, None]
    rois = torch.cat([idx, boxes.repeat(b, 1)], dim=1).to(images.dtype)
    return roi_align(images, rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)


def sample_noise(n: int, size: int, sigma: float, generator: torch.Generator) -> torch.Tensor | None:
    """Gaussian (σ) plus uniform (±σ/2) pixel noise for ``n`` crops, or None when σ is 0."""
    if sigma <= 0:
        return None
    shape = (n, 3, size, size)
    gauss = torch.randn(shape, generator=generator, device=generator.device) * sigma
    unif = (torch.rand(shape, generator=generator, device=generator.device) - 0.5) * sigma
    return gauss + unif


def add_noise(crops: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
    """Add the same per-crop noise to each item's crops ((B·n, …) + (n, …) broadcast over B)."""
    if noise is None:
        return crops
    n = noise.shape[0]
    return (crops.view(-1, n, *crops.shape[1:]) + noise.to(crops.dtype)).view_as(crops)
