"""A second model as judge (``FaccentWidget(model, img, judge=...)``): its p(target) of the seed and of
the shown accentuation, so a class can see whether what one model learned to see convinces another."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from ..core.model import Model, as_model
from ..core.objectives import Objective
from ..core.scoring import target_class
from .session import Session

__all__ = ["as_judge", "judge_numbers"]


def as_judge(judge: nn.Module | Model, model: Model, labels: Sequence[str] | None = None) -> Model:
    """``judge`` wrapped like the main model (a bare ``nn.Module`` gets ``labels``, or the model's when it
    has as many classes), on the model's device; the user's module is never changed. A ``ValueError``
    when it does not classify the model's classes."""
    if not isinstance(judge, (nn.Module, Model)):
        raise TypeError(f"judge must be an nn.Module or a faccent_widget.Model, got {type(judge).__name__}")
    wrapped = as_model(judge, labels=labels, device=model.device)
    if len(wrapped.labels) != len(model.labels):
        raise ValueError(
            f"the judge {wrapped.name} has {len(wrapped.labels)} classes and the model {model.name} "
            f"{len(model.labels)}: a judge must classify the same classes"
        )
    return wrapped


def judge_numbers(judge: Model, session: Session, objective: Objective, index: int | None) -> dict[str, Any]:
    """The ``judge`` trait: ``name``, ``label``, ``seed_prob`` (the judge's p(target) of the seed) and
    ``prob`` (of the image at scrub position ``index``, None: the latest; None when nothing was
    accentuated yet or the target is no class). Measured as :mod:`faccent_widget.core.scoring` says."""
    cls = target_class(objective)
    out: dict[str, Any] = {"name": judge.name, "label": None, "seed_prob": None, "prob": None}
    if cls is None:
        return out
    out["label"] = judge.labels[cls]
    out["seed_prob"] = float(judge.probabilities(session.seed)[cls])
    steps = session.scrub_steps()
    if not steps or session.single_run is None:
        return out
    last = len(steps) - 1
    k = last if index is None else max(0, min(int(index), last))
    image = session.seed if k == 0 else session.current_accent() if k == last else session.scrub_image(k)
    if image is not None:
        out["prob"] = float(judge.probabilities(image)[cls])
    return out
