"""Shared input handling of the validation tools."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..core.engine import Accentuation

__all__ = ["as_image_list"]


def as_image_list(images: Any, what: str = "images") -> list[Any]:
    """Normalise an image collection to a list of single images.

    Accepts a (N, 3, H, W) tensor, one (3, H, W) image, a list/tuple of anything ``load_image``
    takes (or :class:`Accentuation` objects, whose ``.image`` is used), or a mapping such as
    ``sample_images()`` (its values).
    """
    if isinstance(images, Mapping):
        items = list(images.values())
    elif isinstance(images, torch.Tensor):
        if images.dim() == 4:
            items = list(images.unbind(0))
        elif images.dim() == 3:
            items = [images]
        else:
            raise ValueError(f"{what}: expected a (N, 3, H, W) or (3, H, W) tensor, got shape {tuple(images.shape)}")
    elif isinstance(images, (list, tuple)):
        items = list(images)
    elif images is None:
        raise ValueError(f"{what} is None; pass images (a tensor, a list of images or a dict of them)")
    else:
        items = [images]
    if not items:
        raise ValueError(f"{what} is empty; pass at least one image")
    return [it.image if isinstance(it, Accentuation) else it for it in items]
