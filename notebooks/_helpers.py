"""Plotting and measuring helpers for the example notebooks (``from _helpers import show, ...``).

The notebooks import this module by its file name: Jupyter, VS Code and ``tests/test_notebooks.py``
start the kernel in this folder, so it is on ``sys.path``.

Set ``FACCENT_FIGURES=<folder>`` to also save every figure that :func:`show` draws (with a ``name``)
as a PNG there.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

if TYPE_CHECKING:
    from faccent_widget import Accentuation

__all__ = ["hf_share", "p", "pixel_change", "save", "show"]


def save(fig: Figure, name: str) -> None:
    """If ``FACCENT_FIGURES`` is set, save ``fig`` there as <name>.png with 256 colours (README-sized)."""
    fig_dir = os.environ.get("FACCENT_FIGURES")
    if not fig_dir:
        return
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    os.makedirs(fig_dir, exist_ok=True)
    Image.open(buf).convert("RGB").quantize(256).save(os.path.join(fig_dir, f"{name}.png"), optimize=True)


def _array(x: Any) -> np.ndarray:
    """(3, H, W) image or (H, W) map -> array for imshow."""
    x = torch.as_tensor(x).detach().float().cpu()
    return x.permute(1, 2, 0).clamp(0, 1).numpy() if x.dim() == 3 else x.clamp(0, 1).numpy()


def show(
    grid: Sequence[Sequence[Any]],
    titles: Sequence[Any] | None = None,
    row_titles: Sequence[str] | None = None,
    name: str | None = None,
    size: float = 2.2,
    suptitle: str | None = None,
) -> None:
    """Show a grid (list of rows) of images / masks; None leaves a cell empty.

    ``titles``: one list for the first row, or one list per row. Saved to FACCENT_FIGURES/<name>.png if set.
    """
    rows = [list(r) for r in grid]
    nr, nc = len(rows), max(len(r) for r in rows)
    first = next(torch.as_tensor(c) for r in rows for c in r if c is not None)
    aspect = first.shape[-2] / first.shape[-1]
    fig, axes = plt.subplots(nr, nc, figsize=(size * nc, size * aspect * nr + 0.5), squeeze=False)
    if titles is not None and not isinstance(titles[0], (list, tuple)):
        titles = [titles] + [[]] * (nr - 1)
    for i in range(nr):
        for j in range(nc):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            cell = rows[i][j] if j < len(rows[i]) else None
            if cell is not None:
                a = _array(cell)
                ax.imshow(a, cmap="gray" if a.ndim == 2 else None, vmin=0, vmax=1)
            if titles is not None and j < len(titles[i]) and titles[i][j]:
                ax.set_title(titles[i][j], fontsize=8)
            if row_titles is not None and j == 0:
                ax.set_ylabel(row_titles[i], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    if name:
        save(fig, name)
    plt.show()


def pixel_change(a: Accentuation) -> float:
    """Mean |accentuation - seed| over pixels and channels (images in [0, 1])."""
    return float((a.image - a.seed).abs().mean())


def hf_share(a: Accentuation, cutoff: float = 0.25) -> float:
    """Share of the change's energy above ``cutoff`` x the Nyquist frequency (high = fine, noisy change)."""
    d = (a.image - a.seed).float()
    power = torch.fft.fft2(d).abs().pow(2).sum(0)
    fy = torch.fft.fftfreq(d.shape[-2]).abs()[:, None]
    fx = torch.fft.fftfreq(d.shape[-1]).abs()[None, :]
    radius = torch.sqrt(fy**2 + fx**2) / 0.5
    return float(power[radius > cutoff].sum() / power.sum().clamp_min(1e-12))


def p(a: Accentuation) -> str:
    """Target probability seed -> accentuation."""
    return f"p {a.seed_score.prob:.3f}->{a.score.prob:.3f}"
