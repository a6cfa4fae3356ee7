"""Public entry points of the engine: ``start_run`` (the one place runs are built, and the settings
door), ``accentuate``, ``iter_accentuate``, ``run_to_end`` and ``visualize``.

They accept a bare ``nn.Module`` or a :class:`~faccent_widget.Model`, anything ``load_image``
accepts, and targets given as class indices, labels, ``"layer:unit"`` or objectives.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Union, overload

import torch
from torch import nn
from typing_extensions import Unpack

from .core.config import (
    DEFAULT_LAMBDA,
    EngineConfig,
    EngineOverrides,
    check_lambda,
    resolve_config,
)
from .core.derived_objectives import Caricature
from .core.engine import Accentuation, AccentuationRun, StepState
from .core.model import Model, as_model
from .core.objectives import Target, resolve_objective
from .images import ImageInput, canvas_size, load_image, resize_image

__all__ = ["accentuate", "iter_accentuate", "start_run", "run_to_end", "visualize"]

Targets = Union[Target, Sequence[Target]]
Images = Union[ImageInput, Sequence[ImageInput], None]


def _is_batch(value: Any) -> bool:
    return isinstance(value, (list, tuple))


def _canvas_seeds(images: Sequence[ImageInput], canvas: int) -> torch.Tensor:
    """Load seeds; the first sets the canvas (shorter side = ``canvas``, longer side at most
    ``MAX_ASPECT · canvas``: see :func:`~faccent_widget.images.canvas_size`), the others are resized to it."""
    loaded = load_image(images[0])
    h, w = canvas_size((int(loaded.shape[-2]), int(loaded.shape[-1])), canvas)
    first = resize_image(loaded, (h, w))
    rest = [load_image(img, size=(h, w)) for img in images[1:]]
    return torch.stack([first, *rest])


def _unique_images(images: Sequence[ImageInput]) -> tuple[list[ImageInput], list[int]]:
    """The distinct image objects (by identity) and, per item, the index of its image among them, so
    ``[a, a, b, b]`` loads and runs the seed branch for two seeds, not four."""
    unique: list[ImageInput] = []
    position: dict[int, int] = {}
    index = []
    for img in images:
        if id(img) not in position:
            position[id(img)] = len(unique)
            unique.append(img)
        index.append(position[id(img)])
    return unique, index


def start_run(
    model: nn.Module | Model,
    image: Images,
    target: Targets,
    *,
    lam: float | Sequence[float] | None = None,
    config: EngineConfig | None = None,
    preset: str | None = None,
    device: str | torch.device | None = None,
    **overrides: Unpack[EngineOverrides],
) -> AccentuationRun:
    """Set up an :class:`AccentuationRun`: the one place runs are built (``accentuate``, the widget
    and the validation tools all come through here), and the settings door: every setting and λ is
    checked here, once, and trusted inside. Iterate the run, or call ``step()`` chunk by chunk.

    Batching: a list of targets, of images and/or of λ values runs as ONE batch. Lists of equal
    length are paired item by item; a single value is shared by every item (one image with several
    targets accentuates it toward each; one target with several λ sweeps λ). The same image object
    given for several items is loaded once and shares one seed. ``image=None`` starts from noise
    (classic feature visualisation). ``config`` is a resolved :class:`EngineConfig` to start from
    (e.g. the widget's, or a result's ``config`` to repeat a run); ``overrides`` (the engine settings,
    :class:`~faccent_widget.core.config.EngineOverrides`; see :func:`accentuate`) override the preset's
    (or ``config``'s) values, ``None`` keeping them. Unknown names are a ``TypeError`` listing the known ones.
    """
    if config is not None and not isinstance(config, EngineConfig):
        raise TypeError(f"config must be an EngineConfig (see resolve_config), got {type(config).__name__}")
    adapter = as_model(model, device=device)
    cfg = resolve_config(preset, adapter.device, base=config, **overrides)
    targets: list[Target] = list(target) if isinstance(target, (list, tuple)) else [target]  # type: ignore[list-item]
    if not targets:
        raise ValueError("target list is empty")
    if image is None:
        images: list[ImageInput] = []
    else:
        images = list(image) if isinstance(image, (list, tuple)) else [image]  # type: ignore[list-item]
        if not images:
            raise ValueError("image list is empty")
    objectives = [resolve_objective(adapter, t) for t in _caricatures_of_their_seeds(targets, images)]
    lams = (
        [check_lambda(v) for v in lam]
        if isinstance(lam, (list, tuple))
        else [DEFAULT_LAMBDA if lam is None else check_lambda(lam)]
    )
    if not lams:
        raise ValueError("λ list is empty")
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
    unique, index = _unique_images(images)
    seeds = _canvas_seeds(unique, cfg.canvas)
    seed_index = index if len(images) == n_items else [0] * n_items
    # seed_score is measured on the images as given (their model view, as Model.probabilities), not on
    # the canvas copies: one image, one p(target), in the result, the widget and the triage report
    views = adapter.to_input(list(unique))
    return AccentuationRun(adapter, seeds, objectives, lams, cfg, seed_index=seed_index, seed_views=views)


def _caricatures_of_their_seeds(targets: list[Target], images: list[ImageInput]) -> list[Target]:
    """A caricature given without an image amplifies its item's seed (one caricature, several images:
    each image its own)."""
    if not images or not any(isinstance(t, Caricature) and t.image is None for t in targets):
        return targets
    if len(targets) == 1 and len(images) > 1:
        targets = targets * len(images)
    return [
        t.with_image(images[i if len(images) > 1 else 0]) if isinstance(t, Caricature) and t.image is None else t
        for i, t in enumerate(targets)
    ]


def run_to_end(run: AccentuationRun) -> list[Accentuation]:
    """Advance ``run`` to its last step and return its results (one per item)."""
    for _ in run:
        pass
    return run.result()


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


def accentuate(model, image, target, **settings):
    """Accentuate ``image`` toward ``target`` with ``model``; returns an :class:`Accentuation`.

    Settings (``None`` = the preset's value; the preset is picked by device: CUDA → "gpu",
    CPU → "preview"): ``lam`` (λ, balanced so 1 means objective and regulariser pull equally),
    ``reg_layer``, ``steps``, ``n_crops``, ``crop_range``, ``input_size`` (crop size fed to the
    model; default: the model's native size × the preset's ``input_scale``, exactly the native size
    for fixed-size models such as ViTs), ``input_scale``, ``canvas`` (shorter side of the optimised
    image; its longer side is capped at ``4 × canvas``, so images thinner than 1 : 4 get a shorter short
    side), ``lr``, ``param`` ("fourier", "pixel", "maco"), ``noise`` (σ), ``balance``,
    ``snapshot_every``, ``attribution_every`` (sample the gradient attribution every k regularised
    steps; 1 = exact, at the cost of a second backward per step), ``autocast`` (low-precision model
    passes; default: by device — bf16 on CUDA sm80+, on AMX CPUs and on other CPUs with native bf16 for
    models without depthwise convolutions, fp16 on T4/V100, fp32 elsewhere and for fp16/bf16 models;
    ``False`` = fp32,
    ``"fp16"``/``"bf16"`` to force), ``cuda_graphs`` (replay the steps as CUDA graphs; default: on
    for CUDA, off elsewhere; falls back to eager steps with a warning when a step cannot be captured),
    ``preset``, ``seed`` (the random seed of the crops and noise; None = a fresh one, recorded in
    ``result.config.seed``), ``device``.

    A list of targets (e.g. the top-5 classes) or of images runs as one batch and returns a list.
    """
    results = run_to_end(start_run(model, image, target, **settings))
    batched = _is_batch(target) or _is_batch(image) or _is_batch(settings.get("lam"))
    return results if batched else results[0]


def visualize(model: nn.Module | Model, target: Targets, **settings: Any) -> Accentuation | list[Accentuation]:
    """Noise-seeded feature visualisation (the classic baseline): ``accentuate`` from noise, λ = 0."""
    settings.setdefault("lam", 0.0)
    return accentuate(model, None, target, **settings)
