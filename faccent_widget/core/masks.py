"""Collective normalisation of attribution maps into masks (section 2.4 and appendix C of the paper).

A heatmap normalised per image always looks the same: its own top values become "hot", even in an
image that does not contain the feature at all (figure 7). Collective normalisation instead fixes two
thresholds from the attribution values of a whole *reference set* of images, and maps every map
through the same piecewise-linear function (equation 1)::

    N(u; v, p1, p2) = 0                                   if u ≤ P(v, p1)
                      (u − P(v, p1)) / (P(v, p2) − P(v, p1))   if P(v, p1) < u < P(v, p2)
                      1                                   if u ≥ P(v, p2)

where ``v`` is every scalar of every attribution map in the reference set and ``P(v, p)`` its
``p``-th percentile (linear interpolation between order statistics, as ``numpy.percentile``). The
result, in [0, 1], is the opacity mask for blending the accentuation over the seed image: an image
can then show its feature everywhere, or nowhere.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .model import Model

__all__ = [
    "CollectiveNormalizer",
    "per_image_normalize",
    "piecewise_normalize",
    "DEFAULT_P1",
    "DEFAULT_P2",
    "save_normalizers",
    "load_normalizers",
]

#: Default lower percentile of equation 1: values at or below it are fully masked. See
#: :class:`CollectiveNormalizer` for how the defaults were chosen.
DEFAULT_P1 = 50.0
#: Default upper percentile of equation 1: values at or above it are fully shown.
DEFAULT_P2 = 98.0

_FORMAT = "faccent-widget/collective-normalizer"


def _values(maps: Any) -> np.ndarray:
    """Every scalar of ``maps`` (a tensor, an array, or a sequence of them) as one float64 vector."""
    if isinstance(maps, torch.Tensor):
        return maps.detach().to("cpu", torch.float64).reshape(-1).numpy()
    if isinstance(maps, np.ndarray):
        return np.asarray(maps, dtype=np.float64).reshape(-1)
    if isinstance(maps, (list, tuple)):
        parts = [_values(m) for m in maps]
        return np.concatenate(parts) if parts else np.zeros(0)
    raise TypeError(f"attribution maps must be tensors, numpy arrays or lists of them, got {type(maps).__name__}")


def _check_percentiles(p1: float, p2: float) -> tuple[float, float]:
    p1, p2 = float(p1), float(p2)
    if not (0.0 <= p1 < p2 <= 100.0):
        raise ValueError(f"percentiles must satisfy 0 ≤ p1 < p2 ≤ 100, got p1={p1}, p2={p2}")
    return p1, p2


def _percentiles(v: np.ndarray, p1: float, p2: float) -> tuple[float, float]:
    if v.size == 0:
        raise ValueError(
            "the reference set is empty: collective normalisation needs at least one attribution map "
            "with at least one value"
        )
    if not np.isfinite(v).all():
        raise ValueError("the attribution maps contain NaN or infinite values")
    lo, hi = np.percentile(v, [p1, p2])
    return float(lo), float(hi)


def piecewise_normalize(maps: Any, lo: float, hi: float) -> Any:
    """Equation 1 with given thresholds: 0 at or below ``lo``, 1 at or above ``hi``, linear between.

    ``maps``: a tensor, numpy array, or list/tuple of them; the result has the same structure, as
    float32. When ``lo == hi`` the mask is a step (0 at or below, 1 above).
    """
    return _per_map(maps, lambda m: _piecewise(m, lo, hi))


def _piecewise(maps: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    u = maps.detach().float()
    lo_f, hi_f = float(lo), float(hi)
    span = hi_f - lo_f
    ramp = (u - lo_f) / span if span > 0 else torch.ones_like(u)
    out = torch.where(u >= hi_f, torch.ones_like(u), ramp)
    out = torch.where(u <= lo_f, torch.zeros_like(u), out)
    return out.clamp_(0.0, 1.0)


def per_image_normalize(maps: Any, p1: float = DEFAULT_P1, p2: float = DEFAULT_P2) -> Any:
    """Equation 1 with the percentiles taken over each map alone — the usual per-image heatmap
    normalisation, for comparison with collective normalisation (figure 7).

    ``maps``: (H, W) — one map — or (N, H, W) — N maps — as a tensor or array, or a list of maps of
    any sizes. Returns the same structure, as float32 in [0, 1].
    """
    p1, p2 = _check_percentiles(p1, p2)

    def one(m: torch.Tensor) -> torch.Tensor:
        if m.dim() <= 2:
            return _piecewise(m, *_percentiles(_values(m), p1, p2))
        return torch.stack([one(x) for x in m])

    return _per_map(maps, one)


def _per_map(maps: Any, fn: Any) -> Any:
    """Apply ``fn`` (tensor → tensor) to a tensor, a numpy array, or each item of a list/tuple of
    them, keeping the structure (arrays come back as float32 arrays)."""
    if isinstance(maps, (list, tuple)):
        return type(maps)(_per_map(m, fn) for m in maps)
    if isinstance(maps, np.ndarray):
        return fn(torch.from_numpy(np.asarray(maps, dtype=np.float32))).numpy()
    if not isinstance(maps, torch.Tensor):
        raise TypeError(f"attribution maps must be tensors, numpy arrays or lists of them, got {type(maps).__name__}")
    return fn(maps)


class CollectiveNormalizer:
    """Normalise attribution maps with thresholds taken over a whole reference set (equation 1).

    Usage::

        norm = CollectiveNormalizer().fit_images(model, reference_images, "espresso")
        mask = norm(gradcam(model, [seed], "espresso"))        # (1, H, W) in [0, 1]
        norm.save("espresso_norm.json"); CollectiveNormalizer.load("espresso_norm.json")

    Args:
        p1: lower percentile; values of a map at or below ``P(v, p1)`` are fully masked (0).
        p2: upper percentile; values at or above ``P(v, p2)`` are fully shown (1).

    Defaults ``p1 = 50``, ``p2 = 98``: the pair that best separates a class's own image from unrelated
    images in ``benchmarks/attribution_report.py`` (selection rule and numbers in the README and the
    benchmark's output).

    ``100 − p2`` is a share of *all* reference values, so it should shrink with the share of reference
    images that show the feature: with many more reference images than 8, most without the feature,
    raise ``p2`` (e.g. 99.5 for ~30 images with one positive).

    Attributes after fitting: ``lo`` = P(v, p1), ``hi`` = P(v, p2), ``n_maps``, ``n_values``, and the
    optional ``target`` description, ``source`` and ``layer``.
    """

    def __init__(
        self,
        p1: float = DEFAULT_P1,
        p2: float = DEFAULT_P2,
        *,
        target: str | None = None,
        source: str | None = None,
        layer: str | None = None,
    ) -> None:
        self.p1, self.p2 = _check_percentiles(p1, p2)
        self.target = target
        self.source = source
        self.layer = layer
        self.lo: float | None = None
        self.hi: float | None = None
        self.n_maps = 0
        self.n_values = 0

    def __repr__(self) -> str:
        fitted = f"lo={self.lo:.4g}, hi={self.hi:.4g}, n_maps={self.n_maps}" if self.fitted else "not fitted"
        tgt = f", target={self.target!r}" if self.target else ""
        return f"CollectiveNormalizer(p1={self.p1:g}, p2={self.p2:g}{tgt}, {fitted})"

    @property
    def fitted(self) -> bool:
        return self.lo is not None and self.hi is not None

    # ------------------------------------------------------------------ fitting
    def fit(self, maps: Any) -> CollectiveNormalizer:
        """Take ``lo = P(v, p1)`` and ``hi = P(v, p2)`` over every value of every map in ``maps``
        (a (N, H, W) tensor/array or a list of maps of any sizes). Returns ``self``."""
        v = _values(maps)
        self.lo, self.hi = _percentiles(v, self.p1, self.p2)
        if isinstance(maps, (list, tuple)):
            self.n_maps = len(maps)
        else:
            self.n_maps = 1 if getattr(maps, "ndim", 0) <= 2 else int(np.prod(maps.shape[:-2]))
        self.n_values = int(v.size)
        return self

    def fit_images(
        self,
        model: Model,
        images: Any,
        target: Any,
        source: str = "gradcam",
        layer: str | None = None,
    ) -> CollectiveNormalizer:
        """Compute the attribution maps of ``target`` for the reference ``images`` (``source``
        ``"gradcam"`` or ``"activation"``; see :func:`~faccent_widget.core.attribution.attribution_maps`)
        and :meth:`fit` them. Records the target description, source and layer. Returns ``self``."""
        from .attribution import attribution_maps, default_gradcam_layer, describe_target

        if isinstance(images, (list, tuple)) and not images:
            raise ValueError("the reference set is empty: pass at least one image to fit_images")
        maps = attribution_maps(model, images, target, source=source, layer=layer)
        self.fit(maps)
        self.target = describe_target(model, target)
        self.source = source
        if source == "gradcam":
            hw = tuple(maps.shape[-2:])
            self.layer = layer or default_gradcam_layer(model, target, hw)  # type: ignore[arg-type]
        else:
            self.layer = None
        return self

    # ------------------------------------------------------------------ applying
    def __call__(self, maps: Any) -> Any:
        """Map attribution values through equation 1 into [0, 1] (same structure as ``maps``)."""
        if not self.fitted:
            raise RuntimeError("this CollectiveNormalizer is not fitted yet: call fit() or fit_images() first")
        return piecewise_normalize(maps, self.lo, self.hi)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON description: percentiles, thresholds and what they were fitted on."""
        if not self.fitted:
            raise RuntimeError("this CollectiveNormalizer is not fitted yet: call fit() or fit_images() first")
        return {
            "format": _FORMAT,
            "version": 1,
            "target": self.target,
            "source": self.source,
            "layer": self.layer,
            "p1": self.p1,
            "p2": self.p2,
            "lo": float(self.lo),  # type: ignore[arg-type]
            "hi": float(self.hi),  # type: ignore[arg-type]
            "n_maps": int(self.n_maps),
            "n_values": int(self.n_values),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CollectiveNormalizer:
        """Inverse of :meth:`to_dict`."""
        missing = [k for k in ("p1", "p2", "lo", "hi") if k not in data]
        if missing:
            raise ValueError(f"not a CollectiveNormalizer description: missing {', '.join(missing)}")
        if data.get("format", _FORMAT) != _FORMAT:
            raise ValueError(f"not a CollectiveNormalizer description (format {data.get('format')!r})")
        norm = cls(
            data["p1"], data["p2"], target=data.get("target"), source=data.get("source"), layer=data.get("layer")
        )
        lo, hi = float(data["lo"]), float(data["hi"])
        if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
            raise ValueError(f"invalid thresholds lo={lo}, hi={hi}")
        norm.lo, norm.hi = lo, hi
        norm.n_maps = int(data.get("n_maps", 0))
        norm.n_values = int(data.get("n_values", 0))
        return norm

    def save(self, path: str | os.PathLike) -> None:
        """Write :meth:`to_dict` as JSON to ``path``."""
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(self.to_dict(), fh, indent=2)
            fh.write("\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> CollectiveNormalizer:
        """Read a normaliser written by :meth:`save`."""
        with open(path, encoding="utf-8") as fh:
            return cls.from_dict(json.load(fh))


def save_normalizers(path: str | os.PathLike, normalizers: Iterable[CollectiveNormalizer]) -> None:
    """Write several fitted normalisers (e.g. one per target) to one JSON file."""
    items = [n.to_dict() for n in normalizers]
    with open(path, "w", encoding="utf-8") as fh:
        json.dump({"format": _FORMAT + "s", "version": 1, "normalizers": items}, fh, indent=2)
        fh.write("\n")


def load_normalizers(path: str | os.PathLike) -> dict[str, CollectiveNormalizer]:
    """Read a file from :func:`save_normalizers` (or :meth:`CollectiveNormalizer.save`), keyed by
    target description (``""`` when a normaliser has none)."""
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    items: Sequence[Mapping[str, Any]] = data["normalizers"] if "normalizers" in data else [data]
    out: dict[str, CollectiveNormalizer] = {}
    for item in items:
        norm = CollectiveNormalizer.from_dict(item)
        out[norm.target or ""] = norm
    return out
