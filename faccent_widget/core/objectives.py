"""Objectives: what to maximise. Each maps the features of a batch to one value per image.

An objective declares the hidden layers it needs (``layers``) and whether it needs the logits
(``needs_logits``), so the model adapter computes only those. Objectives combine with ``+ − *``::

    logit(285) - 0.5 * logit(281)
    channel("blocks.4", 17) + neuron("blocks.4", 17)

The shorthand ``"layer:unit"`` means a channel, and a class label string means its logit (see
:func:`resolve_objective`).

Hidden-layer objectives pick the channel axis by the layer's layout (see
:class:`~faccent_widget.core.layouts.LayerLayout`): dim 1 of spatial (N, C, H, W) maps and pooled
(N, C) vectors, the last axis of channels-last (N, H, W, C) maps and (N, L, C) tokens.
:func:`resolve_objective` returns a copy bound to the model's layouts; an unbound objective assumes
channels at dim 1.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union

import numpy as np
import torch

from .config import check_int
from .layouts import LayerLayout
from .model import Model

__all__ = [
    "Objective",
    "Logit",
    "Channel",
    "Neuron",
    "Direction",
    "logit",
    "channel",
    "neuron",
    "direction",
    "resolve_objective",
    "Target",
]

Features = Mapping[str, torch.Tensor]


class Objective:
    """Base class: ``objective(features) -> (N,)`` values to maximise."""

    layers: tuple[str, ...] = ()
    needs_logits: bool = False
    description: str = "objective"

    def __call__(self, feats: Features) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def spatial_layer(self) -> str | None:
        """The hidden layer whose activation map localises this objective (None for logits)."""
        return self.layers[0] if len(self.layers) == 1 and not self.needs_logits else None

    def activation_map(self, feats: Features) -> torch.Tensor:
        """(N, h, w) map of this objective's spatial contribution at ``spatial_layer``."""
        raise TypeError(f"{self.description} has no activation map; use Grad-CAM or gradients instead")

    def bind(self, model: Model) -> Objective:
        """This objective for ``model``: hidden-layer objectives (channel, neuron, direction and their
        combinations) return a copy that knows their layers' layouts, after checking that the layers
        are activations of the image and the units in range; the base class checks that its layers
        exist and returns itself."""
        for layer in self.layers:
            model.resolve_layer(layer)
        return self

    def __repr__(self) -> str:
        return f"<Objective {self.description}>"

    def __add__(self, other: Any) -> Objective:
        return _combine(self, other, lambda a, b: a + b, "+")

    def __radd__(self, other: Any) -> Objective:
        return _combine(other, self, lambda a, b: a + b, "+")

    def __sub__(self, other: Any) -> Objective:
        return _combine(self, other, lambda a, b: a - b, "-")

    def __rsub__(self, other: Any) -> Objective:
        return _combine(other, self, lambda a, b: a - b, "-")

    def __mul__(self, other: Any) -> Objective:
        return _combine(self, other, lambda a, b: a * b, "*")

    def __rmul__(self, other: Any) -> Objective:
        return _combine(other, self, lambda a, b: a * b, "*")

    def __neg__(self) -> Objective:
        return _combine(-1.0, self, lambda a, b: a * b, "*")


class _Combined(Objective):
    def __init__(self, parts: Sequence[Any], fn: Callable[[Any, Any], Any], description: str) -> None:
        self.parts = list(parts)
        self.fn = fn
        objs = [p for p in self.parts if isinstance(p, Objective)]
        self.layers = tuple(dict.fromkeys(layer for o in objs for layer in o.layers))
        self.needs_logits = any(o.needs_logits for o in objs)
        self.description = description

    def __call__(self, feats: Features) -> torch.Tensor:
        a, b = (p(feats) if isinstance(p, Objective) else p for p in self.parts)
        return self.fn(a, b)

    def bind(self, model: Model) -> Objective:
        out = copy.copy(self)
        out.parts = [p.bind(model) if isinstance(p, Objective) else p for p in self.parts]
        return out


def _combine(a: Any, b: Any, fn: Callable[[Any, Any], Any], op: str) -> Objective:
    for side in (a, b):
        if not isinstance(side, (Objective, int, float)):
            return NotImplemented
    da = a.description if isinstance(a, Objective) else repr(a)
    db = b.description if isinstance(b, Objective) else repr(b)
    return _Combined([a, b], fn, f"({da} {op} {db})")


class Logit(Objective):
    """The pre-softmax logit of class ``index``."""

    needs_logits = True

    def __init__(self, index: int, label: str | None = None) -> None:
        self.index = check_int(index, "a class index", 0)
        self.label = label
        self.description = f"logit {self.index}" + (f" ({label})" if label else "")

    def __call__(self, feats: Features) -> torch.Tensor:
        return feats["logits"][:, self.index]


class _LayerObjective(Objective):
    """An objective on one hidden layer, aware of that layer's layout once bound."""

    layer: str
    layout: LayerLayout | None = None
    needs_positions = False  # True: refuses pooled layers

    @property
    def spatial_layer(self) -> str | None:
        if self.layout is not None and not self.layout.is_map:
            return None
        return self.layer

    def bind(self, model: Model) -> Objective:
        layer = model.resolve_layer(self.layer)
        lay = model.layout(layer)
        if not lay.is_activation:
            raise ValueError(
                f"{self.description}: layer {layer!r} is not an activation of the image ({lay.describe()}); "
                "pick a block output or activation layer (see Model.block_layers)"
            )
        if self.needs_positions and lay.kind == "pooled":
            raise ValueError(
                f"{self.description}: layer {layer!r} is pooled ({lay.describe()}) and has no positions; "
                f"use channel({layer!r}, unit) instead"
            )
        self._check_channels(lay)
        out = copy.copy(self)
        out.layout = lay
        return out

    def _check_channels(self, lay: LayerLayout) -> None:
        unit = getattr(self, "unit", None)
        if unit is not None and lay.channels is not None and not 0 <= unit < lay.channels:
            raise IndexError(f"channel {unit} is out of range for {self.layer}: it has channels 0…{lay.channels - 1}")

    def _channels_first(self, a: torch.Tensor) -> torch.Tensor:
        """(N, C, *positions); unbound objectives take dim 1 as channels."""
        return a if self.layout is None else self.layout.channels_first(a)

    def _map(self, a: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w); unbound objectives expect a channels-first map already."""
        if self.layout is None:
            return a
        if not self.layout.is_map:
            raise TypeError(f"layer {self.layer} has no spatial output ({self.layout.describe()}); it has no map")
        return self.layout.to_map(a)


class Channel(_LayerObjective):
    """Mean activation of channel ``unit`` of ``layer`` over its positions (pixels or tokens; for a
    pooled (N, C) layer, the unit's value)."""

    def __init__(self, layer: str, unit: int) -> None:
        self.layer, self.unit = _layer_name(layer), check_int(unit, "a channel (unit)", 0)
        self.layers = (layer,)
        self.description = f"{layer}:{self.unit}"

    def __call__(self, feats: Features) -> torch.Tensor:
        a = _channel_slice(self._channels_first(feats[self.layer]), self.unit, self.layer)
        return a.reshape(a.shape[0], -1).mean(1)

    def activation_map(self, feats: Features) -> torch.Tensor:
        a = _channel_slice(self._map(feats[self.layer]), self.unit, self.layer)
        if a.dim() != 3:
            raise TypeError(f"layer {self.layer} has no spatial output; its channels have no activation map")
        return a


class Neuron(_LayerObjective):
    """Activation of channel ``unit`` at one position (default: the centre) of a layer with a map
    (spatial, channels-last, or the patch grid of tokens)."""

    needs_positions = True

    def __init__(self, layer: str, unit: int, y: int | None = None, x: int | None = None) -> None:
        self.layer, self.unit = _layer_name(layer), check_int(unit, "a channel (unit)", 0)
        self.y = None if y is None else check_int(y, "the neuron's y", 0)
        self.x = None if x is None else check_int(x, "the neuron's x", 0)
        self.layers = (layer,)
        pos = "" if y is None and x is None else f"@({y},{x})"
        self.description = f"{layer}:{self.unit} neuron{pos}"

    def _position(self, a: torch.Tensor) -> tuple[int, int]:
        h, w = a.shape[-2:]
        y = h // 2 if self.y is None else self.y
        x = w // 2 if self.x is None else self.x
        if not (0 <= y < h and 0 <= x < w):
            raise IndexError(f"neuron position ({y}, {x}) is outside {self.layer}'s {h}×{w} map")
        return y, x

    def __call__(self, feats: Features) -> torch.Tensor:
        a = _channel_slice(self._map(feats[self.layer]), self.unit, self.layer)
        if a.dim() != 3:
            raise TypeError(f"neuron objectives need a spatial layer; {self.layer} has shape {tuple(a.shape)}")
        y, x = self._position(a)
        return a[:, y, x]

    def activation_map(self, feats: Features) -> torch.Tensor:
        return _channel_slice(self._map(feats[self.layer]), self.unit, self.layer)


class _PerPositionObjective(_LayerObjective):
    """A value per position of one layer (``_per_position``: (N, C, *positions) → (N, *positions)),
    averaged over positions; its map is the per-position value on the layer's grid."""

    kind = "objective"

    def _per_position(self, a: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, feats: Features) -> torch.Tensor:
        p = self._per_position(self._channels_first(feats[self.layer]))
        return p.reshape(p.shape[0], -1).mean(1)

    def activation_map(self, feats: Features) -> torch.Tensor:
        p = self._per_position(self._map(feats[self.layer]))
        if p.dim() != 3:
            raise TypeError(f"layer {self.layer} has no spatial output; the {self.kind} has no activation map")
        return p


class Direction(_PerPositionObjective):
    """Projection of ``layer``'s activation vectors on direction ``vector`` (per position, averaged).

    ``cosine=False``: the dot product ``a · v``; ``cosine=True``: the cosine similarity.
    """

    def __init__(self, layer: str, vector: torch.Tensor | Sequence[float], *, cosine: bool = False) -> None:
        self.layer = _layer_name(layer)
        self.vector = torch.as_tensor(vector, dtype=torch.float32).flatten()
        if self.vector.numel() == 0 or not torch.isfinite(self.vector).all():
            raise ValueError(f"a direction needs a non-empty vector of finite values, got {self.vector.numel()} values")
        self._on_device: dict[torch.device, torch.Tensor] = {}
        self.cosine = bool(cosine)
        self.layers = (layer,)
        self.description = f"{'cosine' if cosine else 'dot'} direction at {layer}"
        self.kind = "direction"

    def _check_channels(self, lay: LayerLayout) -> None:
        if lay.channels is not None and lay.channels != self.vector.numel():
            raise ValueError(f"direction has {self.vector.numel()} values but {self.layer} has {lay.channels} channels")

    def _per_position(self, a: torch.Tensor) -> torch.Tensor:
        if a.shape[1] != self.vector.numel():
            raise ValueError(f"direction has {self.vector.numel()} values but {self.layer} has {a.shape[1]} channels")
        if a.device not in self._on_device:  # copied once per device: a host→device copy syncs a CUDA step
            self._on_device[a.device] = self.vector.to(a.device)
        v = self._on_device[a.device].to(a.dtype).view(1, -1, *([1] * (a.dim() - 2)))
        dot = (a * v).sum(1)
        if self.cosine:
            dot = dot / (a.norm(dim=1) * v.norm() + 1e-8)
        return dot


def _layer_name(layer: Any) -> str:
    if not isinstance(layer, str) or not layer:
        raise TypeError(f"a layer must be given by its name (see Model.layer_names), got {layer!r}")
    return layer


def _channel_slice(a: torch.Tensor, unit: int, layer: str) -> torch.Tensor:
    if not isinstance(a, torch.Tensor) or a.dim() < 2:
        raise TypeError(f"layer {layer} does not output a (N, C, ...) tensor")
    if not 0 <= unit < a.shape[1]:
        raise IndexError(f"unit {unit} is out of range for {layer}: it has channels 0…{a.shape[1] - 1}")
    return a[:, unit]


# Lowercase constructors, Lucent style.
def logit(index: int, label: str | None = None) -> Logit:
    """Objective: the logit of class ``index``."""
    return Logit(index, label)


def channel(layer: str, unit: int) -> Channel:
    """Objective: the mean activation of a channel."""
    return Channel(layer, unit)


def neuron(layer: str, unit: int, y: int | None = None, x: int | None = None) -> Neuron:
    """Objective: one neuron (channel at a position; the centre by default)."""
    return Neuron(layer, unit, y, x)


def direction(layer: str, vector: torch.Tensor | Sequence[float], *, cosine: bool = False) -> Direction:
    """Objective: a direction in a layer's activation space (dot or cosine form)."""
    return Direction(layer, vector, cosine=cosine)


Target = Union[int, str, Objective]


def _as_index(target: Any) -> int | None:
    """``target`` as an int class index when it is an integer scalar (int, numpy integer, 0-d integer
    tensor), else None. Bools are refused (``TypeError``)."""
    if isinstance(target, (bool, np.bool_)) or (isinstance(target, torch.Tensor) and target.dtype == torch.bool):
        raise TypeError(f"a target cannot be a bool ({target!r}); pass a class index, a label or 'layer:unit'")
    if isinstance(target, (str, Objective)):
        return None
    if isinstance(target, torch.Tensor) and (target.numel() != 1 or target.dim() > 1 or target.is_floating_point()):
        raise TypeError(
            f"a tensor target must be one integer (e.g. probs.argmax()), got a {target.dtype} tensor of shape "
            f"{tuple(target.shape)}"
        )
    try:
        return operator.index(target)
    except TypeError:
        return None


def resolve_objective(model: Model, target: Target) -> Objective:
    """Turn ``target`` into an :class:`Objective` for ``model``.

    * an int (also a numpy integer or a 0-d integer tensor, e.g. ``probs.argmax()``) → the logit of
      that class index (range-checked);
    * a string equal to a class label (case-insensitive) → that class's logit, even if it contains ``:``;
    * ``"layer:unit"`` → the channel ``unit`` of ``layer`` (range-checked by the layer's layout);
    * any other string → the logit of the class with that label (close matches suggested);
    * an :class:`Objective` → a copy bound to ``model``'s layer layouts (:meth:`Objective.bind`),
      after checking its layers exist and are activations of the image.
    """
    if isinstance(target, Objective):
        if isinstance(target, Logit):
            model.class_index(target.index)
        return target.bind(model)  # layers exist, are activations, units in range (by layout)
    index = _as_index(target)
    if index is not None:
        idx = model.class_index(index)
        return Logit(idx, model.labels[idx])
    if isinstance(target, str):
        if ":" in target:
            lowered = target.strip().lower()
            if not any(lab.lower() == lowered for lab in model.labels):  # a label wins over layer:unit
                layer, _, unit = target.rpartition(":")
                if unit.strip().lstrip("-").isdigit() and layer:
                    return Channel(model.resolve_layer(layer.strip()), _unit(unit, target)).bind(model)
        idx = model.class_index(target)
        return Logit(idx, model.labels[idx])
    raise TypeError(
        f"a target must be a class index, a class label, 'layer:unit' or an Objective; got {type(target).__name__} "
        f"{target!r}"[:300]
    )


def _unit(text: str, target: str) -> int:
    value = int(text)
    if value < 0:
        raise IndexError(f"channel {value} in {target!r} is negative; channels count from 0")
    return value
