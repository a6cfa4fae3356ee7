"""Validation tools for any model: λ calibration, path similarity and the randomization check.

Thin wrappers over :mod:`faccent_widget.core.validation` that accept a bare ``nn.Module`` or a
:class:`~faccent_widget.Model` (and ``device=``), like ``accentuate`` does.

* :func:`calibrate_lambda` — the λ 'sensitive region' of appendix E and a recommended λ;
* :func:`path_similarity` — per-layer activation correlation between image sets (section 3, fig. 8);
* :func:`randomization_check` — cascading randomization sanity check (appendix D), on a private
  copy of the model.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch
from torch import nn

from .core.objectives import Target
from .core.validation import (
    DEFAULT_LAMBDA_GRID, LambdaCalibration, LambdaCurve, PathSimilarity, RandomizationCheck,
)
from .core.validation import calibrate_lambda as _calibrate_lambda
from .core.validation import path_similarity as _path_similarity
from .core.validation import randomization_check as _randomization_check
from .models import Model, as_model

__all__ = [
    "DEFAULT_LAMBDA_GRID", "LambdaCalibration", "LambdaCurve", "PathSimilarity", "RandomizationCheck",
    "calibrate_lambda", "path_similarity", "randomization_check",
]


def calibrate_lambda(
    model: nn.Module | Model,
    images: Any,
    *,
    reg_layer: str | None = None,
    targets: Target | Sequence[Target] | str = "second",
    lambdas: Sequence[float] | None = None,
    batch_images: bool = False,
    return_accentuations: bool = False,
    device: str | torch.device | None = None,
    **engine_settings: Any,
) -> LambdaCalibration:
    """Find the sensitive region of λ for ``model`` and recommend a λ (appendix E).

    Each image is accentuated toward its second most likely class (or ``targets``) at every λ of
    ``lambdas`` (default ``DEFAULT_LAMBDA_GRID`` = 0, 10⁻³ … 10³), all λ of an image in one batch.
    The final regularisation-layer distance is min-max normalised per image (smallest λ → 1,
    largest → 0); ``.recommended`` is where the mean crosses 0.5 (log-λ interpolation), ``.curve``
    holds the data and ``.table()`` / ``.plot()`` show it. Engine settings as for ``accentuate``.
    """
    return _calibrate_lambda(
        as_model(model, device=device), images, reg_layer=reg_layer, targets=targets, lambdas=lambdas,
        batch_images=batch_images, return_accentuations=return_accentuations, **engine_settings,
    )


def path_similarity(
    model: nn.Module | Model,
    images_a: Any,
    images_b: Any = None,
    layers: Iterable[str] | str | None = None,
    *,
    exclude_diagonal: bool = False,
    paired: bool = False,
    batch_size: int = 16,
    device: str | torch.device | None = None,
) -> PathSimilarity:
    """Per-layer Pearson correlation of hidden activations between two image sets, averaged over all
    pairs (i in a, j in b); ``.per_layer[layer]`` is the mean, ``.std`` the spread.

    ``layers=None`` compares every module with a tensor output plus ``"logits"`` (one forward per
    chunk of images). ``images_b=None`` compares ``images_a`` with itself — pass
    ``exclude_diagonal=True`` to skip the trivial (i, i) pairs; ``paired=True`` compares a[i] with
    b[i] only. Images (tensors, lists of images or :class:`Accentuation` s, dicts) are resized to the
    model's input size.
    """
    return _path_similarity(
        as_model(model, device=device), images_a, images_b, layers, exclude_diagonal=exclude_diagonal,
        paired=paired, batch_size=batch_size,
    )


def randomization_check(
    model: nn.Module | Model,
    image: Any,
    targets: Target | Sequence[Target] | None = None,
    *,
    depths: Sequence[int | str] | None = None,
    lam: float | None = None,
    reg_layer: str | None = None,
    baseline: bool = True,
    device: str | torch.device | None = None,
    **engine_settings: Any,
) -> RandomizationCheck:
    """Cascading randomization sanity check (appendix D) on a private deep copy of the model.

    For each depth k the last k parameterised modules (execution order) are re-initialised and
    ``image`` is accentuated toward ``targets`` (default: the intact model's top 4 classes), batched
    over targets. ``.scores`` gives, per depth, the mean SSIM between the accentuation's difference
    image (accentuation − seed) and the intact model's (1 = unchanged; it should fall with depth);
    ``.corr_diff``, ``.corr_specific`` (target-specific part of the change, ≥ 2 targets: the measure
    that separates randomised models from crop noise), ``.ssim_image``, ``.path`` (path similarity
    through the intact model) and ``.change`` complete it, and ``.baseline`` is the intact model
    rerun with another random seed (the noise floor). ``.table()`` prints it all. Your model is never
    modified.
    """
    adapter = as_model(model, device=device)

    def rebuild(module: nn.Module) -> Model:
        return Model(module, mean=adapter.mean, std=adapter.std, input_size=adapter.input_size,
                     labels=adapter.labels, name=f"{adapter.name} (randomised)")

    return _randomization_check(
        adapter, image, targets, rebuild=rebuild, depths=depths, lam=lam, reg_layer=reg_layer,
        baseline=baseline, **engine_settings,
    )
