"""Objectives: what to maximise. Each maps the features of a batch to one value per image.

An objective declares the hidden layers it needs (``layers``) and whether it needs the logits
(``needs_logits``), so the model adapter computes only those. Objectives combine with ``+ − *``::

    logit(285) - 0.5 * logit(281)
    channel("blocks.4", 17) + neuron("blocks.4", 17)

The shorthand ``"layer:unit"`` means a channel, and a class label string means its logit (see
:func:`resolve_objective`).
"""

from __future__ import annotations

import operator
from typing import Any, Callable, Mapping, Sequence, Union

import numpy as np
import torch

from .config import check_int
from .model import Model

__all__ = [
    "Objective", "Logit", "Channel", "Neuron", "Direction", "logit", "channel", "neuron", "direction",
    "resolve_objective", "Target",
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

    def __repr__(self) -> str:
        return f"<Objective {self.description}>"

    def __add__(self, other: Any) -> "Objective":
        return _combine(self, other, lambda a, b: a + b, "+")

    def __radd__(self, other: Any) -> "Objective":
        return _combine(other, self, lambda a, b: a + b, "+")

    def __sub__(self, other: Any) -> "Objective":
        return _combine(self, other, lambda a, b: a - b, "-")

    def __rsub__(self, other: Any) -> "Objective":
        return _combine(other, self, lambda a, b: a - b, "-")

    def __mul__(self, other: Any) -> "Objective":
        return _combine(self, other, lambda a, b: a * b, "*")

    def __rmul__(self, other: Any) -> "Objective":
        return _combine(other, self, lambda a, b: a * b, "*")

    def __neg__(self) -> "Objective":
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


def _combine(a: Any, b: Any, fn: Callable[[Any, Any], Any], op: str) -> Objective:
    for side in (a, b):
        if not isinstance(side, (Objective, int, float)):
            return NotImplemented  # type: ignore[return-value]
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


class Channel(Objective):
    """Mean activation of channel ``unit`` of ``layer`` (spatial mean for conv layers)."""

    def __init__(self, layer: str, unit: int) -> None:
        self.layer, self.unit = _layer_name(layer), check_int(unit, "a channel (unit)", 0)
        self.layers = (layer,)
        self.description = f"{layer}:{self.unit}"

    def __call__(self, feats: Features) -> torch.Tensor:
        a = _channel_slice(feats[self.layer], self.unit, self.layer)
        return a.flatten(1).mean(1)

    def activation_map(self, feats: Features) -> torch.Tensor:
        a = _channel_slice(feats[self.layer], self.unit, self.layer)
        if a.dim() != 3:
            raise TypeError(f"layer {self.layer} has no spatial output; its channels have no activation map")
        return a


class Neuron(Objective):
    """Activation of channel ``unit`` at one position (default: the centre) of a conv layer."""

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
        a = _channel_slice(feats[self.layer], self.unit, self.layer)
        if a.dim() != 3:
            raise TypeError(f"neuron objectives need a spatial layer; {self.layer} has shape {tuple(a.shape)}")
        y, x = self._position(a)
        return a[:, y, x]

    def activation_map(self, feats: Features) -> torch.Tensor:
        return _channel_slice(feats[self.layer], self.unit, self.layer)


class Direction(Objective):
    """Projection of ``layer``'s activation vectors on direction ``vector`` (per position, averaged).

    ``cosine=False``: the dot product ``a · v``; ``cosine=True``: the cosine similarity.
    """

    def __init__(self, layer: str, vector: torch.Tensor | Sequence[float], *, cosine: bool = False) -> None:
        self.layer = _layer_name(layer)
        self.vector = torch.as_tensor(vector, dtype=torch.float32).flatten()
        if self.vector.numel() == 0 or not torch.isfinite(self.vector).all():
            raise ValueError(f"a direction needs a non-empty vector of finite values, got {self.vector.numel()} values")
        self.cosine = bool(cosine)
        self.layers = (layer,)
        self.description = f"{'cosine' if cosine else 'dot'} direction at {layer}"

    def _per_position(self, a: torch.Tensor) -> torch.Tensor:
        if a.shape[1] != self.vector.numel():
            raise ValueError(
                f"direction has {self.vector.numel()} values but {self.layer} has {a.shape[1]} channels"
            )
        v = self.vector.to(a.device, a.dtype).view(1, -1, *([1] * (a.dim() - 2)))
        dot = (a * v).sum(1)
        if self.cosine:
            dot = dot / (a.norm(dim=1) * v.norm() + 1e-8)
        return dot

    def __call__(self, feats: Features) -> torch.Tensor:
        return self._per_position(feats[self.layer]).flatten(1).mean(1)

    def activation_map(self, feats: Features) -> torch.Tensor:
        p = self._per_position(feats[self.layer])
        if p.dim() != 3:
            raise TypeError(f"layer {self.layer} has no spatial output; the direction has no activation map")
        return p


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


def _check_units(model: Model, objective: Objective) -> None:
    """Range-check the channels (and direction lengths) of ``objective`` against ``model``'s layers."""
    if isinstance(objective, _Combined):
        for part in objective.parts:
            if isinstance(part, Objective):
                _check_units(model, part)
        return
    if not isinstance(objective, (Channel, Neuron, Direction)):
        return
    shape = model.output_shape(objective.layer)
    if len(shape) < 2:
        return  # not a (N, C, …) tensor: the objective itself reports it when run
    n = shape[1]
    if isinstance(objective, Direction):
        if objective.vector.numel() != n:
            raise ValueError(f"direction has {objective.vector.numel()} values but {objective.layer} has {n} channels")
    elif not 0 <= objective.unit < n:
        raise IndexError(
            f"channel {objective.unit} is out of range for {objective.layer}: it has channels 0…{n - 1}"
        )


def resolve_objective(model: Model, target: Target) -> Objective:
    """Turn ``target`` into an :class:`Objective` for ``model``.

    * an int (also a numpy integer or a 0-d integer tensor, e.g. ``probs.argmax()``) → the logit of
      that class index (range-checked);
    * a string equal to a class label (case-insensitive) → that class's logit, even if it contains ``:``;
    * ``"layer:unit"`` → the channel ``unit`` of ``layer`` (range-checked);
    * any other string → the logit of the class with that label (close matches suggested);
    * an :class:`Objective` → itself, after checking its layers and channels exist.
    """
    if isinstance(target, Objective):
        for layer in target.layers:
            model.resolve_layer(layer)
        if isinstance(target, Logit):
            model.class_index(target.index)
        _check_units(model, target)
        return target
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
                    channel_target = Channel(model.resolve_layer(layer.strip()), _unit(unit, target))
                    _check_units(model, channel_target)
                    return channel_target
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
