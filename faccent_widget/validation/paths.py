"""Path (circuit) similarity, section 3 and figure 8 of the paper.

The similarity of two images at a layer is the Pearson correlation of their flattened hidden
activations, ρ(a_ℓ,i, a_ℓ,j); a set-to-set score averages it over all pairs (i in A, j in B).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.model import Model, as_model
from ._common import as_image_list

__all__ = ["PathSimilarity", "path_similarity", "LOGITS"]

LOGITS = "logits"


@dataclass
class PathSimilarity:
    """Per-layer path similarity between two image sets.

    Attributes:
        layers: the compared layers in execution order (``"logits"`` last).
        per_layer: layer → mean Pearson correlation over the compared pairs.
        std: layer → standard deviation over the compared pairs.
        pairs: layer → (n_a, n_b) correlation matrix; pairs that were not compared are NaN
            (the diagonal with ``exclude_diagonal``, everything off the diagonal with ``paired``).
        depth: layer → relative depth in [0, 1] at which it produces its output (logits → 1).
        mode: "all pairs", "all pairs, diagonal excluded" or "paired".
    """

    layers: list[str]
    per_layer: dict[str, float]
    std: dict[str, float]
    pairs: dict[str, np.ndarray] = field(repr=False)
    depth: dict[str, float] = field(repr=False)
    mode: str = "all pairs"

    @property
    def mean(self) -> float:
        """Mean over layers of the per-layer similarity (the paper's single-number summary)."""
        values = [v for v in self.per_layer.values() if math.isfinite(v)]
        return float(np.mean(values)) if values else float("nan")

    def values(self) -> np.ndarray:
        """Per-layer similarities in execution order."""
        return np.array([self.per_layer[n] for n in self.layers])

    def depths(self) -> np.ndarray:
        """Relative depths of ``layers`` in execution order."""
        return np.array([self.depth[n] for n in self.layers])

    def at_depth(self, fraction: float) -> tuple[str, float]:
        """The layer whose relative depth is closest to ``fraction`` and its similarity."""
        name = min(self.layers, key=lambda n: abs(self.depth[n] - fraction))
        return name, self.per_layer[name]

    def __repr__(self) -> str:
        return f"PathSimilarity({len(self.layers)} layers, mean={self.mean:.4f}, mode={self.mode!r})"


def default_layers(model: Model, probe: torch.Tensor) -> list[str]:
    """Every module whose output is a tensor in a forward pass (probed on ``probe``), in execution
    order, plus ``"logits"``."""
    with torch.no_grad():
        feats = model.features(probe[:1], model.layer_names, logits=True)
    names = [n for n, v in feats.items() if n != LOGITS and isinstance(v, torch.Tensor)]
    return [*model.execution_order(names), LOGITS]


def _resolve_layers(model: Model, layers: Iterable[str] | str) -> list[str]:
    if isinstance(layers, str):
        layers = [layers]
    names = list(dict.fromkeys(layers))
    if not names:
        raise ValueError("layers is empty; pass layer names (see Model.layer_names) or None for every layer")
    hidden = [model.resolve_layer(n) for n in names if n != LOGITS]  # LayerNotFoundError for unknown names
    ordered = model.execution_order(hidden) if hidden else []
    return [*ordered, LOGITS] if LOGITS in names else ordered


def _unit_vectors(model: Model, x: torch.Tensor, layers: Sequence[str], batch_size: int) -> dict[str, torch.Tensor]:
    """layer → (N, D) centred, unit-norm flattened activations (so dot products are Pearson ρ).
    A constant activation (zero variance) gives a zero row, marked NaN later."""
    hidden = [n for n in layers if n != LOGITS]
    chunks: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            feats = model.features(x[start : start + batch_size], hidden, logits=LOGITS in layers)
            for n in layers:
                v = feats.get(n)
                if not isinstance(v, torch.Tensor):
                    raise ValueError(f"layer {n!r} produced no tensor output in a forward pass; it cannot be compared")
                v = v.detach().cpu().double().flatten(1)  # float64: ρ of identical inputs is 1 to ~1e-7
                v = v - v.mean(1, keepdim=True)
                norm = v.norm(dim=1, keepdim=True)
                unit = torch.where(norm > 0, v / norm.clamp_min(1e-300), torch.zeros_like(v))
                chunks[n].append(unit.float())
    return {n: torch.cat(c) for n, c in chunks.items()}


def path_similarity(
    model: nn.Module | Model,
    images_a: Any,
    images_b: Any = None,
    layers: Iterable[str] | str | None = None,
    *,
    exclude_diagonal: bool = False,
    paired: bool = False,
    batch_size: int = 16,
    device: str | torch.device | None = None,
) -> PathSimilarity:
    """Per-layer Pearson correlation of hidden activations, averaged over image pairs.

    Args:
        model: a :class:`~faccent_widget.Model` or a bare ``nn.Module``.
        images_a, images_b: (N, 3, H, W) tensors, lists of anything ``load_image`` accepts (or
            :class:`Accentuation` objects), or dicts of images. Each image is resized to the
            model's input (bilinear, antialiased; ``Model.input_hw``), the un-augmented view the engine scores on.
            ``images_b=None`` compares ``images_a`` with itself.
        layers: layer names (``"logits"`` allowed); ``None`` = every module with a tensor output,
            plus the logits. One forward pass per chunk of images hooks all of them at once.
        exclude_diagonal: skip the pairs (i, i) — for a set compared with itself.
        paired: compare ``a[i]`` with ``b[i]`` only (equal lengths), e.g. accentuations with their
            own seeds (figure 8C).
        batch_size: images per forward pass.
        device: run on this device (a private copy of the model if it lives elsewhere).

    Constant activations (zero variance) have no correlation; such pairs are NaN and left out of the
    mean (a layer where every pair is NaN reports NaN).
    """
    if exclude_diagonal and paired:
        raise ValueError("exclude_diagonal and paired are exclusive: paired compares only the diagonal")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model = as_model(model, device=device)
    same = images_b is None or images_b is images_a
    xa = model.to_input(as_image_list(images_a, "images_a"))
    xb = xa if same else model.to_input(as_image_list(images_b, "images_b"))
    na, nb = xa.shape[0], xb.shape[0]
    if (exclude_diagonal or paired) and na != nb:
        raise ValueError(f"{'paired' if paired else 'exclude_diagonal'} needs sets of equal size, got {na} and {nb}")
    if exclude_diagonal and na < 2:
        raise ValueError("exclude_diagonal needs at least 2 images (otherwise no pair is left)")
    names = default_layers(model, xa) if layers is None else _resolve_layers(model, layers)

    ua = _unit_vectors(model, xa, names, int(batch_size))
    ub = ua if same else _unit_vectors(model, xb, names, int(batch_size))
    mask = np.ones((na, nb), dtype=bool)
    if exclude_diagonal:
        np.fill_diagonal(mask, False)
    if paired:
        mask = np.eye(na, dtype=bool)
    per_layer, std, pairs, depth = {}, {}, {}, {}
    for n in names:
        a, b = ua[n], ub[n]
        if paired:
            rho = (a.double() * b.double()).sum(1).numpy()
            m = np.full((na, nb), np.nan)
            np.fill_diagonal(m, rho)
        else:
            m = (a.double() @ b.double().T).numpy()
        dead = (a.abs().sum(1).numpy() == 0)[:, None] | (b.abs().sum(1).numpy() == 0)[None, :]
        m = np.where(mask & ~dead, np.clip(m, -1.0, 1.0), np.nan)
        pairs[n] = m
        vals = m[np.isfinite(m)]
        per_layer[n] = float(vals.mean()) if vals.size else float("nan")
        std[n] = float(vals.std()) if vals.size else float("nan")
        depth[n] = 1.0 if n == LOGITS else float(model.layer_depth(n))
    mode = "paired" if paired else ("all pairs, diagonal excluded" if exclude_diagonal else "all pairs")
    return PathSimilarity(names, per_layer, std, pairs, depth, mode)
