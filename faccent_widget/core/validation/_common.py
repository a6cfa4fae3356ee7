"""Shared pieces of the validation tools: image batches and running the engine from core.

Core must not import the model registry, so the validation tools drive :class:`AccentuationRun`
directly (the same thing ``faccent_widget.start_run`` does) with any Model-like object.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...images import load_image
from ..config import EngineConfig, resolve_config
from ..engine import Accentuation, AccentuationRun, FeatureModel
from ..objectives import Objective

__all__ = ["ValidationModel", "as_image_list", "model_batch", "engine_config", "load_seeds", "run_engine", "ENGINE_SETTINGS"]

#: Engine settings the validation tools accept: every ``EngineConfig`` field, as ``accentuate`` does,
#: minus ``lam``/``reg_layer`` (the tools take them explicitly; ``device`` goes to the top-level wrappers).
ENGINE_SETTINGS = tuple(f.name for f in dataclasses.fields(EngineConfig) if f.name not in ("lam", "reg_layer"))


class ValidationModel(FeatureModel, Protocol):
    """What the validation tools need from a model (``faccent_widget.Model`` implements it)."""

    module: nn.Module

    @property
    def layer_names(self) -> list[str]: ...

    @property
    def labels(self) -> list[str]: ...

    def class_index(self, target: int | str) -> int: ...

    def execution_order(self, layers: Sequence[str]) -> list[str]: ...

    def layer_depth(self, name: str) -> float: ...


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


def model_batch(images: Any, size: int, what: str = "images") -> torch.Tensor:
    """Load ``images`` (see :func:`as_image_list`) and resize each to ``size`` × ``size``: the
    un-augmented model view the engine scores on (bilinear, antialiased)."""
    out = []
    for img in as_image_list(images, what):
        t = load_image(img)[None]
        out.append(F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False))
    return torch.cat(out).clamp_(0, 1)


def engine_config(model: FeatureModel, settings: dict[str, Any], *, reg_layer: str | None = None,
                  lean_snapshots: bool = True) -> EngineConfig:
    """Resolve engine settings like ``accentuate`` does; unknown names raise ``TypeError``.

    With ``lean_snapshots`` and no explicit ``snapshot_every``, only the final image is kept as a
    snapshot (the validation tools never look at intermediate frames).
    """
    unknown = sorted(set(settings) - set(ENGINE_SETTINGS))
    if unknown:
        raise TypeError(f"unknown engine setting(s) {', '.join(map(repr, unknown))}; known: {', '.join(ENGINE_SETTINGS)}")
    preset = settings.get("preset")
    overrides = {k: v for k, v in settings.items() if k != "preset"}
    cfg = resolve_config(preset, model.device, reg_layer=reg_layer or "", **overrides)
    if lean_snapshots and settings.get("snapshot_every") is None:
        cfg = dataclasses.replace(cfg, snapshot_every=cfg.steps)
    return cfg


def load_seeds(images: Sequence[Any], canvas: int) -> torch.Tensor:
    """Seeds on one canvas: the first image sets it (shorter side = ``canvas``), others are resized to it."""
    first = load_image(images[0], size=canvas)
    h, w = first.shape[-2:]
    return torch.stack([first, *[load_image(img, size=(h, w)) for img in images[1:]]])


def run_engine(model: FeatureModel, seeds: torch.Tensor, objectives: Sequence[Objective], lams: Sequence[float],
               cfg: EngineConfig, seed_index: Sequence[int]) -> list[Accentuation]:
    """Run one batched accentuation to the end and return its results."""
    run = AccentuationRun(model, seeds, list(objectives), [float(v) for v in lams], cfg, seed_index=list(seed_index))
    while not run.done:
        run.step()
    return run.result()
