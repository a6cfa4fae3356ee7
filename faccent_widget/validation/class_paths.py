"""Class-wise path similarity: how well an image's hidden activations correlate with the *natural
images of a class* (appendix A, figures 8 and 12 of the paper; the test of "super-natural" images).

For one class with natural images from several *sources* (distinct photos; augmented views of one
photo share its source), at every layer ℓ:

* natural-to-natural: for each natural image, the mean Pearson ρ of its activations with those of the
  natural images of *other* sources, averaged over the natural images;
* a candidate set (accentuations at one λ, noise-seeded visualisations, …): for each candidate, the mean
  ρ with the natural images of sources other than its seed's (its own seed and the seed's views are
  left out, as the paper leaves out an accentuation's own seed), averaged over the candidates.

Figure 12A normalises by the difference (candidate − natural; 0 = as natural as natural images); a
ratio (candidate / natural; 1 = natural) is given too. "Super-natural" = above natural-to-natural.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ..core.engine import Accentuation
from ..core.model import Model, as_model
from ._common import as_image_list
from .paths import LOGITS, _resolve_layers, _unit_vectors, default_layers

__all__ = ["ClassPathSimilarity", "average_classes", "class_path_similarity", "class_layers"]

Normalisation = Literal["difference", "ratio"]
NATURAL = "natural"


@dataclass
class ClassPathSimilarity:
    """Per-layer similarity of image sets to the natural images of one class (or the mean over classes).

    Attributes:
        target: the class (its label), or a summary such as "mean over 4 classes".
        layers: the compared layers in execution order (``"logits"`` last).
        depth: layer → relative depth in [0, 1] (logits → 1).
        natural: (L,) natural-to-natural mean ρ per layer (other sources only).
        curves: name → (L,) mean ρ of that set with the class's natural images (its seed's source left out).
        spread: name (and ``"natural"``) → (L,) standard deviation over the items (over the classes for a mean).
        counts: name (and ``"natural"``) → number of items (of classes for a mean).
        n_sources: distinct sources among the natural images (summed over classes for a mean).
        per_class: the class-wise results a mean was made from (empty for one class).
    """

    target: str
    layers: list[str]
    depth: dict[str, float]
    natural: np.ndarray
    curves: dict[str, np.ndarray]
    spread: dict[str, np.ndarray] = field(repr=False)
    counts: dict[str, int]
    n_sources: int
    per_class: list[ClassPathSimilarity] = field(default_factory=list, repr=False)

    def depths(self) -> np.ndarray:
        """Relative depths of ``layers`` in execution order."""
        return np.array([self.depth[n] for n in self.layers])

    def normalised(self, name: str, how: Normalisation = "difference") -> np.ndarray:
        """(L,) the curve ``name`` against natural-to-natural: ``"difference"`` (figure 12A, 0 = natural)
        or ``"ratio"`` (1 = natural). ``name="natural"`` gives the reference itself (0 or 1). For a
        mean over classes: the mean of the class-wise values."""
        if how not in ("difference", "ratio"):
            raise ValueError(f"how must be 'difference' or 'ratio', got {how!r}")
        if self.per_class:
            return np.mean([c.normalised(name, how) for c in self.per_class], axis=0)
        curve = self.natural if name == NATURAL else self._curve(name)
        return curve - self.natural if how == "difference" else curve / self.natural

    def normalised_spread(self, name: str, how: Normalisation = "difference") -> np.ndarray:
        """(L,) standard deviation over classes of :meth:`normalised` (figure 12A's band); NaN for one class."""
        if not self.per_class:
            return np.full(len(self.layers), np.nan)
        return np.std([c.normalised(name, how) for c in self.per_class], axis=0)

    def _curve(self, name: str) -> np.ndarray:
        if name not in self.curves:
            raise KeyError(f"no curve {name!r}; have: {', '.join(self.curves)}")
        return self.curves[name]

    def summary(self, how: Normalisation = "difference") -> dict[str, float]:
        """Curve name → mean over layers of :meth:`normalised` (the single number per curve)."""
        return {name: float(np.nanmean(self.normalised(name, how))) for name in self.curves}

    def table(self, layers: Sequence[str] | None = None, how: Normalisation = "difference") -> str:
        """A text table: per layer, natural-to-natural ρ and each curve normalised by ``how``."""
        shown = list(layers) if layers is not None else self.layers
        idx = [self.layers.index(n) for n in shown]
        names = list(self.curves)
        head = f"{'layer':<14s}{'depth':>6s}{'nat ρ':>8s}" + "".join(f"{n:>14s}" for n in names)
        rows = [f"{self.target} — {how} to natural-to-natural ({'0' if how == 'difference' else '1'} = natural)", head]
        norm = {n: self.normalised(n, how) for n in names}
        for i, n in zip(idx, shown):
            cells = "".join(f"{norm[c][i]:>+14.3f}" if how == "difference" else f"{norm[c][i]:>14.3f}" for c in names)
            rows.append(f"{n:<14s}{self.depth[n]:>6.2f}{self.natural[i]:>8.3f}{cells}")
        summary = self.summary(how)
        rows.append(
            f"{'mean':<14s}{'':>6s}{float(np.nanmean(self.natural)):>8.3f}"
            + "".join(f"{summary[c]:>+14.3f}" if how == "difference" else f"{summary[c]:>14.3f}" for c in names)
        )
        return "\n".join(rows)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready numbers (lists per layer), including the class-wise results of a mean."""
        out: dict[str, Any] = {
            "target": self.target,
            "layers": self.layers,
            "depth": [self.depth[n] for n in self.layers],
            "natural": self.natural.tolist(),
            "curves": {k: v.tolist() for k, v in self.curves.items()},
            "spread": {k: v.tolist() for k, v in self.spread.items()},
            "difference": {k: self.normalised(k).tolist() for k in self.curves},
            "ratio": {k: self.normalised(k, "ratio").tolist() for k in self.curves},
            "counts": self.counts,
            "n_sources": self.n_sources,
        }
        if self.per_class:
            out["difference_std_over_classes"] = {k: self.normalised_spread(k).tolist() for k in self.curves}
            out["per_class"] = [c.to_dict() for c in self.per_class]
        return out

    def __repr__(self) -> str:
        parts = ", ".join(f"{k} {v:+.3f}" for k, v in self.summary().items())
        return f"ClassPathSimilarity({self.target!r}, {len(self.layers)} layers, minus natural: {parts})"


def class_layers(model: Model) -> list[str]:
    """The layers compared by default: the block outputs and the logits (every module's curve is a
    sawtooth, as pre-activation outputs carry per-channel offsets shared by all images); every module
    with a tensor output for a model without recognised blocks."""
    blocks = model.block_layers
    if blocks:
        return [*blocks, LOGITS]
    return default_layers(model, torch.zeros(1, 3, model.input_size, model.input_size, device=model.device))


def _sources(given: Sequence[Hashable] | None, n: int, what: str) -> list[Hashable]:
    if given is None:
        return list(range(n))
    out = list(given)
    if len(out) != n:
        raise ValueError(f"{what} has {len(out)} entries for {n} images; give one source per image")
    return out


def _candidate_sources(
    name: str, items: list[Any], raw: list[Any], given: Sequence[Hashable | None] | None, natural: set[Hashable]
) -> list[Hashable | None]:
    """The source of each candidate's seed; None (nothing left out) only for noise-seeded ones."""
    if given is None:
        seeded = [i for i, r in enumerate(raw) if not (isinstance(r, Accentuation) and r.noise_seeded)]
        if seeded:
            raise ValueError(
                f"candidate_sources[{name!r}] is missing: item {seeded[0]} is not a noise-seeded Accentuation, so "
                "the source of its seed must be given (it is left out of its comparison); give None per "
                "noise-seeded item"
            )
        return [None] * len(items)
    out = list(given)
    if len(out) != len(items):
        raise ValueError(f"candidate_sources[{name!r}] has {len(out)} entries for {len(items)} images")
    unknown = [s for s in out if s is not None and s not in natural]
    if unknown:
        raise ValueError(
            f"candidate_sources[{name!r}]: {unknown[0]!r} is not a source of any natural image "
            f"(sources: {sorted(map(str, natural))}); use None for noise-seeded items"
        )
    return out


def _mean_with_others(rho: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Row-wise mean of ``rho`` (n, m) over the entries where ``keep``; NaN rows where none is kept."""
    masked = np.where(keep & np.isfinite(rho), rho, np.nan)
    with np.errstate(invalid="ignore"):
        counts = np.isfinite(masked).sum(1)
        sums = np.nansum(masked, 1)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _rho(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    m = (a.double() @ b.double().T).numpy()
    dead = (a.abs().sum(1).numpy() == 0)[:, None] | (b.abs().sum(1).numpy() == 0)[None, :]
    return np.where(dead, np.nan, np.clip(m, -1.0, 1.0))


def class_path_similarity(
    model: nn.Module | Model,
    naturals: Any,
    candidates: Mapping[str, Any],
    *,
    sources: Sequence[Hashable] | None = None,
    candidate_sources: Mapping[str, Sequence[Hashable | None]] | None = None,
    target: str = "",
    layers: Iterable[str] | str | None = None,
    batch_size: int = 16,
    device: str | torch.device | None = None,
) -> ClassPathSimilarity:
    """Path similarity of image sets to the natural images of one class (appendix A's protocol).

    Args:
        model: a :class:`~faccent_widget.Model` or a bare ``nn.Module``.
        naturals: the class's natural images (a tensor, list or dict, as ``path_similarity`` takes).
        candidates: name → images or :class:`Accentuation` objects, e.g. ``{"λ=1": accs, "noise": vis}``.
        sources: one hashable per natural image naming the photo it comes from (augmented views of a
            photo share it); None = every natural image is its own source. At least 2 sources.
        candidate_sources: name → the source of each candidate's seed, or None for a noise seed. Needed
            for image-seeded candidates (noise-seeded ``Accentuation`` objects need none).
        target: the class's name, for tables.
        layers: layer names (``"logits"`` allowed); None = :func:`class_layers`.
        batch_size: images per forward pass. device: as for ``path_similarity``.

    Pairs of images from the same source never count: not between natural images, nor between a
    candidate and its own seed's photo. Every image is seen through :meth:`Model.to_input`.
    """
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not isinstance(candidates, Mapping) or not candidates:
        raise ValueError("candidates must be a non-empty mapping name → images (e.g. {'λ=1': accentuations})")
    if NATURAL in candidates:
        raise ValueError(f"{NATURAL!r} names the natural-to-natural reference; call the candidate set otherwise")
    model = as_model(model, device=device)
    nat = as_image_list(naturals, "naturals")
    src = _sources(sources, len(nat), "sources")
    distinct = set(src)
    if len(distinct) < 2:
        raise ValueError(
            f"the natural images come from {len(distinct)} source; class path similarity needs at least 2 "
            "(pairs from the same photo are left out)"
        )
    names = class_layers(model) if layers is None else _resolve_layers(model, layers)
    bs = int(batch_size)
    u_nat = _unit_vectors(model, model.to_input(nat), names, bs)
    other = np.array([[a != b for b in src] for a in src], dtype=bool)

    per_item_nat = np.stack([_mean_with_others(_rho(u_nat[n], u_nat[n]), other) for n in names], axis=1)
    curves: dict[str, np.ndarray] = {}
    spread: dict[str, np.ndarray] = {NATURAL: np.nanstd(per_item_nat, 0)}
    counts: dict[str, int] = {NATURAL: len(nat)}
    for name, images in candidates.items():
        raw = as_image_list(images, f"candidates[{name!r}]")
        given = None if candidate_sources is None else candidate_sources.get(name)
        c_src = _candidate_sources(name, raw, _raw_items(images), given, distinct)
        u_c = _unit_vectors(model, model.to_input(raw), names, bs)
        keep = np.array([[s is None or s != t for t in src] for s in c_src], dtype=bool)
        per_item = np.stack([_mean_with_others(_rho(u_c[n], u_nat[n]), keep) for n in names], axis=1)
        curves[name] = np.nanmean(per_item, 0)
        spread[name] = np.nanstd(per_item, 0)
        counts[name] = len(raw)
    depth = {n: 1.0 if n == LOGITS else float(model.layer_depth(n)) for n in names}
    return ClassPathSimilarity(
        target=target,
        layers=names,
        depth=depth,
        natural=np.nanmean(per_item_nat, 0),
        curves=curves,
        spread=spread,
        counts=counts,
        n_sources=len(distinct),
    )


def _raw_items(images: Any) -> list[Any]:
    if isinstance(images, Mapping):
        return list(images.values())
    if isinstance(images, (list, tuple)):
        return list(images)
    return [images]


def average_classes(results: Sequence[ClassPathSimilarity], target: str | None = None) -> ClassPathSimilarity:
    """The mean over classes (figure 8 averages class-wise values): curves and natural-to-natural
    averaged, spreads = standard deviation over the classes; :meth:`~ClassPathSimilarity.normalised`
    of the result is the mean of the class-wise normalised curves."""
    items = list(results)
    if not items:
        raise ValueError("results is empty; pass the class-wise results of class_path_similarity")
    first = items[0]
    for r in items[1:]:
        if r.layers != first.layers or list(r.curves) != list(first.curves):
            raise ValueError(
                f"class {r.target!r} was measured on other layers or curves than {first.target!r}; "
                "average results of one protocol"
            )
    names = list(first.curves)
    natural = np.stack([r.natural for r in items])
    curves = {n: np.stack([r.curves[n] for r in items]) for n in names}
    return ClassPathSimilarity(
        target=target or f"mean over {len(items)} classes",
        layers=list(first.layers),
        depth=dict(first.depth),
        natural=natural.mean(0),
        curves={n: v.mean(0) for n, v in curves.items()},
        spread={NATURAL: natural.std(0), **{n: v.std(0) for n, v in curves.items()}},
        counts={NATURAL: len(items), **{n: len(items) for n in names}},
        n_sources=sum(r.n_sources for r in items),
        per_class=items,
    )
