"""What "p(target) of an image" means, in one place: the model's softmax on its view of the *full*
image (:meth:`Model.to_input`: the whole picture resized to the model's square input), one image at a
time. ``Model.probabilities``, the engine's ``seed_score``/``score``, the widget's numbers and the
triage report all measure this, so one image has one number everywhere."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .derived_objectives import Suppressed
from .model import Model
from .objectives import Logit, Objective

__all__ = ["Score", "score_views", "target_class"]


@dataclass(frozen=True)
class Score:
    """The target on the full, un-augmented image: objective value and (for a class logit, also a
    suppressed one) the class's probability."""

    value: float
    prob: float | None = None


def target_class(objective: Objective) -> int | None:
    """The class whose probability a target reports (a logit's, a suppressed logit's), else None."""
    if isinstance(objective, Logit):
        return objective.index
    return objective.class_index if isinstance(objective, Suppressed) else None


def score_views(
    model: Model, objectives: Sequence[Objective], views: torch.Tensor, index: Sequence[int]
) -> list[Score]:
    """Score of ``objectives[i]`` on ``views[index[i]]`` ((S, 3, s, s) images already in the model view):
    each distinct view passes the model once, alone (a batch of one, as ``Model.probabilities``)."""
    layers = [name for o in objectives for name in o.layers]
    feats: dict[int, dict[str, torch.Tensor]] = {}
    with torch.no_grad():
        for j in dict.fromkeys(int(i) for i in index):
            feats[j] = model.features(views[j : j + 1], layers, logits=True)
    out = []
    for obj, j in zip(objectives, index):
        f = feats[int(j)]
        k = target_class(obj)
        prob = float(f["logits"].float().softmax(-1)[0, k]) if k is not None else None
        out.append(Score(float(obj(f).float().mean()), prob))
    return out
