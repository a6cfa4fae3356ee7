"""Objectives derived from another target or from the image itself: :func:`suppress` (drive the image
*away* from a target) and :func:`caricature` (amplify the image's own activation pattern at a layer)."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from .model import Model
from .objectives import Features, Logit, Objective, Target, _layer_name, _PerPositionObjective, resolve_objective

__all__ = ["Caricature", "Suppressed", "caricature", "suppress"]


class Suppressed(Objective):
    """Drive the image *away* from a target: the negated objective (``suppress("tabby")``).

    What the accentuation removes or dims is what argued for the target. ``target`` is anything
    :func:`resolve_objective` accepts; it is resolved for the model when bound.
    """

    def __init__(self, target: Target) -> None:
        if isinstance(target, Suppressed):
            raise TypeError("suppress(suppress(x)) is x; pass the target itself")
        self.target = target
        inner = target if isinstance(target, Objective) else None
        self.inner = inner
        self.layers = inner.layers if inner is not None else ()
        self.needs_logits = inner.needs_logits if inner is not None else isinstance(target, (int, str))
        what = inner.description if inner is not None else repr(target)
        self.description = f"suppress {what}"

    @property
    def class_index(self) -> int | None:
        """The suppressed class when the target is a class logit (once bound), else None."""
        return self.inner.index if isinstance(self.inner, Logit) else None

    @property
    def spatial_layer(self) -> str | None:
        return self.inner.spatial_layer if self.inner is not None else None

    def bind(self, model: Model) -> Objective:
        out = copy.copy(self)
        out.inner = resolve_objective(model, self.target)
        out.layers, out.needs_logits = out.inner.layers, out.inner.needs_logits
        out.description = f"suppress {out.inner.description}"
        return out

    def __call__(self, feats: Features) -> torch.Tensor:
        if self.inner is None:
            raise TypeError(f"{self.description} is not bound to a model yet; pass it through resolve_objective")
        return -self.inner(feats)

    def activation_map(self, feats: Features) -> torch.Tensor:
        if self.inner is None:
            raise TypeError(f"{self.description} is not bound to a model yet; pass it through resolve_objective")
        return -self.inner.activation_map(feats)


class Caricature(_PerPositionObjective):
    """Amplify an image's own activation pattern at ``layer`` (Lucid's caricatures; no class needed).

    The reference is the image's channel vector at ``layer``, averaged over positions, taken once when
    the objective is bound; the value is, per position, ``(a · v̂) · max(cos(a, v), 0.1) ** cossim_pow``
    averaged over positions (Lucid's ``dot_compare`` form, on the averaged reference so that random
    crops need no alignment). :func:`~faccent_widget.accentuate` fills ``image`` with its seed when
    it is None.
    """

    def __init__(self, layer: str, image: Any = None, *, cossim_pow: float = 1.0) -> None:
        self.layer = _layer_name(layer)
        self.layers = (self.layer,)
        self.image = image
        self.cossim_pow = float(cossim_pow)
        if not (self.cossim_pow >= 0 and np.isfinite(self.cossim_pow)):
            raise ValueError(f"cossim_pow must be a finite number ≥ 0, got {cossim_pow!r}")
        self.reference: torch.Tensor | None = None
        self.description = f"caricature at {self.layer}"
        self.kind = "caricature"

    def with_image(self, image: Any) -> Caricature:
        """This caricature with ``image`` as its reference (the seed)."""
        out = copy.copy(self)
        out.image, out.reference = image, None
        return out

    def bind(self, model: Model) -> Objective:
        if self.image is None:
            raise ValueError(
                f"{self.description} needs the image whose pattern to amplify: caricature(layer, image), "
                "or pass it to accentuate(), which uses its seed"
            )
        bound = super().bind(model)
        if not isinstance(bound, Caricature) or bound.layout is None:
            raise TypeError(f"{self.description}: could not bind to {model.name}")
        with torch.no_grad():
            a = model.features(model.to_input(self.image)[:1], [bound.layer])[bound.layer]
        per_position = bound.layout.channels_first(a.float())
        bound.reference = per_position.reshape(1, per_position.shape[1], -1).mean(-1)[0].cpu()
        return bound

    def _per_position(self, a: torch.Tensor) -> torch.Tensor:
        if self.reference is None:
            raise TypeError(f"{self.description} is not bound to a model yet; pass it through resolve_objective")
        v = self.reference.to(device=a.device, dtype=a.dtype).view(1, -1, *([1] * (a.dim() - 2)))
        v_unit = v / (v.norm() + 1e-8)
        dot = (a * v_unit).sum(1)
        cos = dot / (a.norm(dim=1) + 1e-8)
        return dot * cos.clamp_min(0.1) ** self.cossim_pow


def suppress(target: Target) -> Suppressed:
    """Objective: drive the image away from ``target`` (a class label or index, ``"layer:unit"`` or an
    objective); what the accentuation takes away is what argued for the target."""
    return Suppressed(target)


def caricature(layer: str, image: Any = None, *, cossim_pow: float = 1.0) -> Caricature:
    """Objective: amplify ``image``'s own activation pattern at ``layer`` (the seed's, in ``accentuate``)."""
    return Caricature(layer, image, cossim_pow=cossim_pow)
