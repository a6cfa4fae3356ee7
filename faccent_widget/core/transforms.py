"""Augmentations τ: random square box crops and pixel noise, with sampling kept apart from applying.

Each crop is resized to the model's input: ``size``² for most models, ``(h, w)`` for a fixed-size
model with a non-square input (the square box is then stretched as the model view stretches a square
canvas, :meth:`~faccent_widget.core.model.Model.to_input`).

Sampling (:func:`sample_boxes`, :func:`sample_noise`) draws the parameters of one step once; applying
(one :class:`CropPlan` per step, or :func:`crop_boxes` for a single batch) uses them on any batch, so
the candidate and the seed get the very same τ. Crops are resized as
``torchvision.ops.roi_align(aligned=True, sampling_ratio=-1)`` does (adaptive sampling, i.e.
box-filtered like an antialiased resize). On a GPU that is one ``roi_align`` call. On the CPU, whose
``roi_align`` kernels run serially (its backward was a quarter of a paper step), the same weights are
applied as two sparse matrix products — roi_align's sampling is separable into a row pass and a column
pass — which equals ``roi_align`` to float round-off, forward and backward, at 4–6× less time.
"""

from __future__ import annotations

import math
import warnings

import torch
from torchvision.ops import roi_align

__all__ = ["sample_boxes", "CropPlan", "crop_boxes", "sample_noise"]


def sample_boxes(
    n: int,
    height: int,
    width: int,
    crop_range: tuple[float, float],
    generator: torch.Generator,
) -> torch.Tensor:
    """``n`` square boxes (x1, y1, x2, y2) in canvas pixels, on the generator's device.

    Side ~ U(min, max) · min(H, W); the top-left corner is uniform within bounds. ``crop_range`` is
    trusted here (0 < min ≤ max ≤ 1): the settings door, :func:`~faccent_widget.core.config.resolve_config`,
    checked it once.
    """
    lo, hi = crop_range
    u = torch.rand(n, 3, generator=generator, device=generator.device)
    side = (lo + (hi - lo) * u[:, 0]) * min(height, width)
    x1 = u[:, 1] * (width - side)
    y1 = u[:, 2] * (height - side)
    return torch.stack([x1, y1, x1 + side, y1 + side], dim=1)


class CropPlan:
    """The crops τ of one step: ``n`` boxes of a (H, W) canvas, each resized to ``size``² (or to
    ``size`` = (h, w)).

    Built once per step and applied to the candidate and to the seed (same τ for both), with the
    step's pixel noise added in place. Values are those of ``roi_align(aligned=True, sampling_ratio=-1)``
    on every device (see the module docstring); on the CPU the two sparse matrices are built here, once.

    Args:
        boxes: (n, 4) boxes (x1, y1, x2, y2) in canvas pixels.
        size: output side of every crop, or its (h, w).
        height, width: the canvas the boxes live on.
        max_side: an upper bound on the boxes' sides, when known (saves reading the boxes back to the
            host on the CPU path).
    """

    def __init__(
        self, boxes: torch.Tensor, size: int | tuple[int, int], height: int, width: int, max_side: float | None = None
    ) -> None:
        self.out_h, self.out_w = _pair(size)
        self.boxes, self.height, self.width = boxes, int(height), int(width)
        self.max_side = max_side
        self._matrices: dict[torch.dtype, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(
        self,
        images: torch.Tensor,
        noise: torch.Tensor | None = None,
        memory_format: torch.memory_format = torch.contiguous_format,
    ) -> torch.Tensor:
        """(B·n, C, h, w) crops of (B, C, H, W) ``images`` ((h, w): the output size), item-major (all
        crops of image 0, then of image 1, …), plus ``noise`` ((n, C, h, w), the same for every image), in
        ``memory_format`` (``torch.channels_last`` for models run channels_last)."""
        if tuple(images.shape[-2:]) != (self.height, self.width):
            raise ValueError(f"images are {tuple(images.shape[-2:])}, the boxes are on {(self.height, self.width)}")
        if _cpu_sparse_path(images, self.boxes):
            with torch.autocast("cpu", enabled=False):  # crops stay in the image's dtype (MKL's sparse products)
                crops = self._separable(images)
        else:
            crops = _crop_roi_align(images, self.boxes, (self.out_h, self.out_w))
        crops = crops.contiguous(memory_format=memory_format)
        if noise is not None:  # in place: no crop backward needs its output
            n = self.boxes.shape[0]
            crops.view(-1, n, *crops.shape[1:]).add_(noise.to(crops.dtype))
        return crops

    def _separable(self, images: torch.Tensor) -> torch.Tensor:
        """roi_align as a column pass then a row pass, each one sparse × dense product (the CPU path)."""
        b, c, h, w = images.shape
        p, q = self.out_h, self.out_w
        if h > w:  # the first pass runs along the longer axis: its output is the smaller one
            images = images.transpose(2, 3)
            h, w, p, q = w, h, q, p
        n = self.boxes.shape[0]
        cols, rows = self._band_matrices(images.dtype)
        x = images.permute(3, 0, 1, 2).reshape(w, b * c * h)
        x = (cols @ x).view(n, q, b, c, h)  # columns resized: (n, Q, B, C, H)
        x = x.permute(0, 4, 1, 2, 3).reshape(n * h, q * b * c)  # (n·H, Q·B·C)
        x = (rows @ x).view(n, p, q, b, c)  # rows resized: (n, P, Q, B, C)
        # (B·n, C, P, Q); for one image a channels_last view without a copy
        x = x.permute(3, 0, 4, 1, 2).reshape(b * n, c, p, q)
        return x.transpose(2, 3) if self.height > self.width else x

    def _band_matrices(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The column pass (n·Q × W) and block-diagonal row pass (n·P × n·H) matrices, with H and W
        the canvas sides, shorter first, and P, Q the output sides along them (built once per dtype)."""
        if dtype not in self._matrices:
            boxes = self.boxes.to(dtype)
            h, w, p, q = self.height, self.width, self.out_h, self.out_w
            if h > w:
                boxes, h, w, p, q = boxes[:, [1, 0, 3, 2]], w, h, q, p
            max_side = self.max_side
            if max_side is None:
                max_side = float((boxes[:, 2:] - boxes[:, :2]).max())
            first_x, weights_x = _axis_weights(boxes[:, 0], boxes[:, 2], q, w, max(1, math.ceil(max_side / q)), dtype)
            first_y, weights_y = _axis_weights(boxes[:, 1], boxes[:, 3], p, h, max(1, math.ceil(max_side / p)), dtype)
            self._matrices[dtype] = (
                _band_matrix(first_x, weights_x, w, block_diagonal=False),
                _band_matrix(first_y, weights_y, h, block_diagonal=True),
            )
        return self._matrices[dtype]


def crop_boxes(
    images: torch.Tensor,
    boxes: torch.Tensor,
    size: int | tuple[int, int],
    max_side: float | None = None,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> torch.Tensor:
    """Cut every box out of every image and resize it to ``size``² (or ``size`` = (h, w)), in one batched op.

    ``images``: (B, C, H, W); ``boxes``: (n, 4). Returns (B·n, C, h, w), item-major
    (all crops of image 0, then of image 1, …); see :class:`CropPlan` for the arguments.
    """
    return CropPlan(boxes, size, images.shape[-2], images.shape[-1], max_side)(images, memory_format=memory_format)


def _cpu_sparse_path(images: torch.Tensor, boxes: torch.Tensor) -> bool:
    return images.device.type == "cpu" and images.dtype in (torch.float32, torch.float64) and boxes.shape[0] > 0


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    """(h, w) of an output size given as a side or a pair."""
    if isinstance(size, (tuple, list)):
        return int(size[0]), int(size[1])
    return int(size), int(size)


def _crop_roi_align(images: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    b, n = images.shape[0], boxes.shape[0]
    idx = torch.arange(b, device=boxes.device, dtype=boxes.dtype).repeat_interleave(n)[:, None]
    rois = torch.cat([idx, boxes.repeat(b, 1)], dim=1).to(images.dtype)
    return roi_align(images, rois, output_size=size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)


def _axis_weights(
    start: torch.Tensor, end: torch.Tensor, size: int, length: int, grid: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """roi_align's 1-D weights along one axis, as a band of ``K`` taps per output pixel.

    For ``n`` boxes spanning [start, end) of an axis of ``length`` pixels: ``first`` (n, size) is the
    first input pixel of each output pixel's band, ``weights`` (n, size, K) the band's weights. Each
    output pixel averages ``g = ceil(side / size)`` bilinear samples (at most ``grid``), spread evenly
    over its bin, with roi_align's edge rules (a sample beyond −1 or ``length`` counts as 0, one in
    [−1, 0] reads pixel 0, one past the last pixel reads the last).
    """
    n = start.shape[0]
    device = start.device
    lo = start.to(dtype) - 0.5  # aligned=True: pixel centres at +0.5
    side = (end - start).to(dtype)
    bin_size = side / size
    g = torch.ceil(side / size).clamp_min(1)
    p = torch.arange(size, device=device, dtype=dtype)[None, :, None]
    i = torch.arange(grid, device=device, dtype=dtype)[None, None, :]
    y = lo[:, None, None] + p * bin_size[:, None, None] + (i + 0.5) * (bin_size / g)[:, None, None]  # (n, size, grid)
    valid = (i < g[:, None, None]) & (y >= -1.0) & (y <= length)
    y = y.clamp_min(0)
    low = y.floor().clamp_max(length - 1)
    frac = torch.where(y >= length - 1, torch.zeros_like(y), y - low)
    weight = valid.to(dtype) / g[:, None, None]
    # the samples of one output pixel lie within g + 2 consecutive input pixels; the band is shifted
    # to end inside the axis so that every column index of the sparse matrix is distinct
    k = min(grid + 2, length)
    first = low[:, :, 0].clamp_max(length - k).long()
    offset = low.long() - first[:, :, None]
    weights = torch.zeros(n, size, k, device=device, dtype=dtype)
    weights.scatter_add_(2, offset, (1 - frac) * weight)
    weights.scatter_add_(2, (offset + 1).clamp_max(k - 1), frac * weight)  # frac is 0 where it clamps
    return first, weights


def _band_matrix(first: torch.Tensor, weights: torch.Tensor, length: int, block_diagonal: bool) -> torch.Tensor:
    """(n·size) × length sparse CSR matrix of the bands (block-diagonal n·size × n·length when asked)."""
    n, size, k = weights.shape
    cols = first[:, :, None] + torch.arange(k, device=first.device)
    if block_diagonal:
        cols = cols + torch.arange(n, device=first.device)[:, None, None] * length
    rows = n * size
    crow = torch.arange(0, (rows + 1) * k, k, device=first.device)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            crow,
            cols.reshape(-1),
            weights.reshape(-1),
            (rows, n * length if block_diagonal else length),
            check_invariants=False,  # built sorted, distinct and in range above
        )


def sample_noise(n: int, size: int | tuple[int, int], sigma: float, generator: torch.Generator) -> torch.Tensor | None:
    """Gaussian (σ) plus uniform (±σ/2) pixel noise for ``n`` crops of ``size``² (or ``size`` = (h, w)),
    or None when σ is 0."""
    if sigma <= 0:
        return None
    shape = (n, 3, *_pair(size))
    gauss = torch.randn(shape, generator=generator, device=generator.device).mul_(sigma)
    return gauss.add_(torch.rand(shape, generator=generator, device=generator.device).sub_(0.5).mul_(sigma))
