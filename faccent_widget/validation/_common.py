"""What the validation tools share: their input handling and the settings of their runs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..core.config import SETTING_LIMITS, EngineConfig, fresh_rng_seed, resolve_config, resolve_run_config
from ..core.engine import Accentuation
from ..core.model import Model

__all__ = ["as_image_list", "validation_config"]


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


def validation_config(model: Model, reg_layer: str | None, engine_settings: Mapping[str, Any]) -> EngineConfig:
    """The settings of every run of a validation tool, resolved once (pass them as ``start_run(config=...)``).

    ``engine_settings`` (with ``preset``) as for ``accentuate``; then, unless given: ONE random seed for
    every run (drawn from the OS; so every λ, image and depth sees the same crops) and only the final
    image kept (``snapshot_every`` past any step count). The crop size and the regularisation layer
    (``reg_layer``, checked by :meth:`Model.check_reg_layer`; None → the model's default) are filled in
    by :func:`~faccent_widget.core.config.resolve_run_config`.
    """
    settings = dict(engine_settings)
    preset = settings.pop("preset", None)
    if settings.get("seed") is None:
        settings["seed"] = fresh_rng_seed()
    if settings.get("snapshot_every") is None:  # only the final image is looked at
        settings["snapshot_every"] = SETTING_LIMITS["snapshot_every"][1]
    return resolve_run_config(model, resolve_config(preset, model.device, reg_layer=reg_layer, **settings))
