"""Class names: ImageNet's from torchvision's metadata, and resolving a class target (an index or a
label) to an index with a clear error (:meth:`Model.class_index <faccent_widget.core.model.Model.class_index>`)."""

from __future__ import annotations

import difflib
import operator
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["imagenet_labels", "resolve_class_index"]


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet class names (from torchvision's metadata; no download)."""
    from torchvision.models import GoogLeNet_Weights

    return list(GoogLeNet_Weights.IMAGENET1K_V1.meta["categories"])


def resolve_class_index(labels: Sequence[str], target: Any, name: str) -> int:
    """The index of class ``target`` (an int index or a label, case-insensitive) among ``labels`` of
    model ``name``; ``IndexError``/``ValueError``/``TypeError`` naming what is accepted otherwise."""
    n = len(labels)
    if isinstance(target, bool) or type(target).__name__ == "bool_" or getattr(target, "dtype", None) == torch.bool:
        raise TypeError("a class target must be an int index or a label string, not a bool")
    if isinstance(target, int) or (hasattr(target, "__index__") and not isinstance(target, str)):
        try:
            idx = operator.index(target)
        except TypeError:
            raise TypeError(f"a class index must be an integer, got {target!r}") from None
        if not 0 <= idx < n:
            raise IndexError(f"class index {idx} is out of range for {name}: valid are 0…{n - 1}")
        return idx
    if isinstance(target, str):
        lowered = [lab.lower() for lab in labels]
        key = target.strip().lower()
        if key in lowered:
            return lowered.index(key)
        close = difflib.get_close_matches(key, lowered, n=5, cutoff=0.6)
        hint = f"; close matches: {', '.join(repr(labels[lowered.index(c)]) for c in close)}" if close else ""
        raise ValueError(f"no class labelled {target!r} in {name}{hint}")
    raise TypeError(f"a class target must be an int index or a label string, got {type(target).__name__}")
