"""Public entry points of the engine: ``accentuate`` and ``iter_accentuate``.

They accept a bare ``nn.Module`` or a :class:`~faccent_widget.Model`, anything ``load_image``
accepts, and targets given as class indices, labels, ``"layer:unit"`` or objectives.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence, Union, overload

import torch
from torch import nn

from .core.config import DEFAULT_LAMBDA, EngineConfig, resolve_config
from .core.engine import Accentuation, AccentuationRun, StepState
from .core.objectives import Target, resolve_objective
from .images import ImageInput, load_image
from .models import Model, as_model

__all__ = ["accentuate", "iter_accentuate", "start_run", "visualize"]

Targets = Union[Target, Sequence[Target]]
Images = Union[ImageInput, Sequence[ImageInput], None]


def _is_batch(value: Any) -> bool:
    return isinstance(value, (list, tuple))


def _canvas_seeds(images: Sequence[ImageInput], canvas: int) -> torch.Tensor:
    """Load seeds; the first sets the canvas (shorter side = ``canvas``), the others are resized to it."""
    first = load_image(images[0], size=canvas)
    h, w = first.shape[-2:]
    rest = [load_image(img, size=(h, w)) for img in images[1:]]
    return torch.stack([first, *rest])


def start_run(
    model: nn.Module | Model,
    image: Images,
    target: Targets,
    *,
    lam: float | Sequence[float] | None = None,
    reg_layer: str | None = None,
    steps: int | None = None,
    n_crops: int | None = None,
    crop_range: tuple[float, float] | None = None,
    input_size: int | None = None,
    canvas: int | None = None,
    lr: float | None = None,
    param: str | None = None,
    noise: float | None = None,
    balance: bool | None = None,
    snapshot_every: int | None = None,
    autocast: bool | str | None = None,
    preset: str | None = None,
    seed: int | None = None,
    device: str | torch.device | None = None,
) -> AccentuationRun:
    """Set up an :class:`AccentuationRun` (the object the widget advances chunk by chunk).

    Batching: a list of targets, of images and/or of λ values runs as ONE batch. Lists of equal
    length are paired item by item; a single value is shared by every item (one image with several
    targets accentuates it toward each; one target with several λ sweeps λ).
    ``image=None`` starts from noise (classic feature visualisation).
    """
    adapter = as_model(model, device=device)
    cfg: EngineConfig = resolve_config(
        preset, adapter.device, steps=steps, n_crops=n_crops, crop_range=crop_range, input_size=input_size,
        canvas=canvas, lr=lr, param=param, noise=noise, balance=balance, snapshot_every=snapshot_every, autocast=autocast,
        seed=seed, reg_layer=reg_layer or "",
    )
    targets = list(target) if _is_batch(target) else [target]
    if not targets:
        raise ValueError("target list is empty")
    objectives = [resolve_objective(adapter, t) for t in targets]
    if image is None:
        images: list[ImageInput] = []
    else:
        images = list(image) if _is_batch(image) else [image]
        if not images:
            raise ValueError("image list is empty")
    lams = [float(v) for v in lam] if _is_batch(lam) else [DEFAULT_LAMBDA if lam is None else float(lam)]
    n_items = max(len(objectives), len(images) or 1, len(lams))
    for what, count in (("images", len(images) or 1), ("targets", len(objectives)), ("λ values", len(lams))):
        if count not in (1, n_items):
            raise ValueError(
                f"cannot batch {count} {what} with {n_items} items: give one, or one per item "
                f"({len(images) or 1} images, {len(objectives)} targets, {len(lams)} λ values)"
            )
    objectives = objectives * (n_items // len(objectives))
    lams = lams * (n_items // len(lams))
    if image is None:
        return AccentuationRun(adapter, None, objectives, lams, cfg)
    seeds = _canvas_seeds(images, cfg.canvas)
    seed_index = list(range(n_items)) if len(images) == n_items else [0] * n_items
    return AccentuationRun(adapter, seeds, objectives, lams, cfg, seed_index=seed_index)


def iter_accentuate(model: nn.Module | Model, image: Images, target: Targets, **settings: Any) -> Iterator[StepState]:
    """Yield a :class:`StepState` after every step; the last one has ``done`` and ``result()``.

    Closing the generator (``gen.close()``, or leaving the loop) stops the run cleanly; the model
    is left exactly as it was. Settings as for :func:`accentuate`.
    """
    run = start_run(model, image, target, **settings)
    yield from run


@overload
def accentuate(model: nn.Module | Model, image: ImageInput, target: Target, **settings: Any) -> Accentuation: ...
@overload
def accentuate(model: nn.Module | Model, image: Images, target: Targets, **settings: Any) -> list[Accentuation]: ...


def accentuate(model, image, target, **settings):  # type: ignore[no-untyped-def]
    """Accentuate ``image`` toward ``target`` with ``model``; returns an :class:`Accentuation`.

    Settings (``None`` = the preset's value; the preset is picked by device: CUDA → "paper",
    CPU → "preview"): ``lam`` (λ, balanced so 1 means objective and regulariser pull equally),
    ``reg_layer``, ``steps``, ``n_crops``, ``crop_range``, ``input_size`` (crop size fed to the
    model), ``canvas`` (shorter side of the optimised image), ``lr``, ``param`` ("fourier", "pixel",
    "maco"), ``noise`` (σ), ``balance``, ``snapshot_every``, ``autocast`` (low-precision model passes;
    default: by device — bf16 on CUDA sm80+ and on CPUs with native bf16 for models without depthwise
    convolutions, fp16 on T4/V100, fp32 elsewhere; ``False`` = fp32, ``"fp16"``/``"bf16"`` to force),
    ``preset``, ``seed``, ``device``.

    A list of targets (e.g. the top-5 classes) or of images runs as one batch and returns a list.
    """
    run = start_run(model, image, target, **settings)
    for _ in run:
        pass
    results = run.result()
    batched = _is_batch(target) or _is_batch(image) or _is_batch(settings.get("lam"))
    return results if batched else results[0]


def visualize(model: nn.Module | Model, target: Targets, **settings: Any) -> Accentuation | list[Accentuation]:
    """Noise-seeded feature visualisation (the classic baseline): ``accentuate`` from noise, λ = 0."""
    settings.setdefault("lam", 0.0)
    return accentuate(model, None, target, **settings)
