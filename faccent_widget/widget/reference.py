"""The reference set of a widget (images for collective mask normalisation) and its attribution maps
per target: computed once per widget and shared by every seed it shows, so that a photo swap only
computes the new seed's maps."""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from ..core.attribution import attribution_maps
from ..core.model import Model
from ..core.objectives import Objective
from ..images import ImageInput, sample_images

__all__ = ["ReferenceMaps", "check_reference"]


def check_reference(reference: Sequence[ImageInput] | None) -> None:
    """A ``TypeError``/``ValueError`` unless ``reference`` is None, a non-empty list of images or a batch."""
    if reference is None:
        return
    single = isinstance(reference, (str, bytes, os.PathLike, Image.Image)) or (
        isinstance(reference, (torch.Tensor, np.ndarray)) and reference.ndim < 4
    )
    if single or not hasattr(reference, "__len__"):
        raise TypeError(
            "reference must be a list of images (anything load_image accepts) or an (N, 3, H, W) batch, "
            f"got {type(reference).__name__}"
        )
    if len(reference) == 0:
        raise ValueError("the reference set for collective normalisation is empty; pass images or None")


class ReferenceMaps:
    """Reference images (default: the bundled samples) at the model's input and their attribution maps
    per target description, an LRU of ``cache_size()`` entries."""

    def __init__(self, model: Model, reference: Sequence[ImageInput] | None, cache_size: int) -> None:
        check_reference(reference)
        self.model = model
        self.inputs = reference
        self.cache_size = cache_size
        self._images: torch.Tensor | None = None
        self._maps: OrderedDict[tuple[str, str], torch.Tensor] = OrderedDict()

    def images(self) -> torch.Tensor:
        """The reference images as the model sees them (N, 3, h, w), computed on first use."""
        if self._images is None:
            images = list(sample_images().values()) if self.inputs is None else list(self.inputs)
            if not images:
                raise ValueError("the reference set for collective normalisation is empty")
            self._images = self.model.to_input(images)
        return self._images

    def maps(self, objective: Objective, source: str, cache_size: int | None = None) -> torch.Tensor:
        """Raw attribution maps (N, h, w) of the reference images for ``objective``."""
        key = (objective.description, source)
        if key in self._maps:
            self._maps.move_to_end(key)
            return self._maps[key]
        maps = attribution_maps(self.model, self.images(), objective, source=source)
        self._maps[key] = maps
        while len(self._maps) > (self.cache_size if cache_size is None else cache_size):
            self._maps.popitem(last=False)
        return maps
