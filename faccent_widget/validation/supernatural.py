"""The "super-natural" test of appendix A (figures 8 and 12) on images at hand: for each class, its
natural images (distinct photos and, optionally, augmented views of them), accentuations of some of
them toward the class at several λ, and noise-seeded visualisations of the class; then
:func:`~faccent_widget.validation.class_paths.class_path_similarity` per class and the mean over classes.

Caveat: augmented views of one photo are not independent natural images. Views share their photo's
source, so they are never compared with each other nor with an accentuation of that photo
(``view_level=False``, the default); ``view_level=True`` treats each view as its own source — the only
choice for a class with one photo, where natural-to-natural is inflated by near-duplicates.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..accentuate import run_to_end, start_run
from ..core.config import EngineConfig
from ..core.model import Model, as_model
from ..images import ImageInput, load_image
from ._common import as_image_list, validation_config
from .class_paths import ClassPathSimilarity, average_classes, class_path_similarity

__all__ = ["DEFAULT_SUPERNATURAL_LAMBDAS", "NOISE", "SuperNatural", "augmented_views", "lambda_name", "supernatural"]

DEFAULT_SUPERNATURAL_LAMBDAS = (0.0, 0.1, 1.0, 10.0)
NOISE = "noise-seeded"


def lambda_name(lam: float) -> str:
    """The curve name of the accentuations at ``lam`` (e.g. ``"λ=0.1"``)."""
    return f"λ={lam:g}"


def augmented_views(
    image: ImageInput,
    n: int,
    *,
    seed: int = 0,
    size: int = 224,
    scale: tuple[float, float] = (0.35, 1.0),
    jitter: float = 0.25,
    include_original: bool = True,
) -> list[torch.Tensor]:
    """``n`` views of ``image`` as (3, size, size) tensors in [0, 1]: random resized crops (area
    fraction in ``scale``), horizontal flips and colour jitter (brightness, contrast, saturation ±
    ``jitter``, hue ± jitter / 5), drawn from ``seed`` without touching the global random state. With
    ``include_original`` the first view is the whole image, resized. Views of one photo are not
    independent natural images: give them the photo's source."""
    from torchvision.transforms import v2

    if int(n) < 1:
        raise ValueError(f"n must be >= 1 (the number of views), got {n}")
    if not (0 < scale[0] <= scale[1] <= 1):
        raise ValueError(f"scale must be (low, high) with 0 < low <= high <= 1, got {scale}")
    img = load_image(image)
    augment = v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=scale, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter, hue=min(0.5, jitter / 5)),
        ]
    )
    views = [load_image(img, size=(size, size))] if include_original else []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        while len(views) < int(n):
            views.append(augment(img).clamp(0, 1))
    return views


@dataclass
class SuperNatural:
    """The outcome of :func:`supernatural`.

    Attributes:
        classes: class label → its :class:`ClassPathSimilarity`.
        mean: the mean over classes (:func:`average_classes`).
        lambdas: the λ values of the accentuations (curves ``lambda_name(λ)``), plus the curve ``NOISE``.
        photos: class label → number of photos kept (views predicted as the class, when filtered).
        naturals: class label → number of natural images (photos × kept views).
        view_level: whether each view counted as its own source (see the module's caveat).
        config: the engine settings of every run (one random seed).
        probs: class label → curve name → (mean target probability of the seeds, of the results), to see
            whether the accentuations reached their class (noise-seeded: of the noise, of the result).
    """

    classes: dict[str, ClassPathSimilarity]
    mean: ClassPathSimilarity
    lambdas: list[float]
    photos: dict[str, int]
    naturals: dict[str, int]
    view_level: bool
    config: EngineConfig
    probs: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)

    def table(self, layers: Sequence[str] | None = None) -> str:
        """The mean over classes, per layer, as differences to natural-to-natural (figure 12A)."""
        return self.mean.table(layers)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready numbers: the mean (with its classes) and the protocol's settings."""
        return {
            "lambdas": self.lambdas,
            "photos": self.photos,
            "naturals": self.naturals,
            "view_level": self.view_level,
            "probs": {k: {c: list(v) for c, v in d.items()} for k, d in self.probs.items()},
            "config": {k: v for k, v in self.config.as_dict().items() if _jsonable(v)},
            "mean": self.mean.to_dict(),
        }


def _jsonable(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str, list, tuple))


def _class_views(
    model: Model, photos: list[Any], index: int, n_views: int, seed: int, require_prediction: bool
) -> list[list[torch.Tensor]]:
    """Per photo, its kept views (the photo first); a view the model does not call the class is dropped
    when ``require_prediction`` (up to 4 × ``n_views`` draws per photo)."""
    out = []
    for p, photo in enumerate(photos):
        n = 4 * n_views if require_prediction else n_views
        drawn = augmented_views(photo, n, seed=seed + 1000 * p, size=model.input_size)
        if require_prediction:
            with torch.no_grad():
                top = model.logits(model.to_input(drawn).to(model.device)).argmax(1).tolist()
            drawn = [v for v, t in zip(drawn, top) if t == index]
        out.append(drawn[:n_views])
    return out


def supernatural(
    model: nn.Module | Model,
    classes: Mapping[Any, Any],
    *,
    lambdas: Iterable[float] = DEFAULT_SUPERNATURAL_LAMBDAS,
    n_seeds: int = 4,
    n_views: int = 1,
    n_noise: int = 2,
    view_level: bool = False,
    require_prediction: bool = True,
    layers: Iterable[str] | str | None = None,
    view_seed: int = 0,
    reg_layer: str | None = None,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    **engine_settings: Any,
) -> SuperNatural:
    """Appendix A's class-wise path similarity ("super-natural" images) for the given classes.

    Args:
        model: a :class:`~faccent_widget.Model` or a bare ``nn.Module``.
        classes: class (index or label) → its photos (distinct natural images; a list, tensor or dict).
        lambdas: λ of the accentuations (balanced λ, as ``accentuate`` takes it).
        n_seeds: accentuate this many seeds per class (the first view of the first ``n_seeds`` sources).
        n_views: natural images per photo: the photo and ``n_views - 1`` augmented views.
        n_noise: noise-seeded visualisations per class (compared with every natural image).
        view_level: count each view as its own source (needed for a class with one photo; inflates
            natural-to-natural). Default: views share their photo's source.
        require_prediction: keep only views (the photo included) that the model calls the class, as the
            paper keeps correctly predicted images; a class left with fewer than 2 sources is an error.
        layers, batch_size: as for :func:`class_path_similarity`. view_seed: seed of the augmentations.
        reg_layer, preset and the other engine settings: as for ``accentuate`` (one random seed for all).
    """
    lams = [float(v) for v in lambdas]
    if not lams:
        raise ValueError("lambdas is empty; give the λ values to accentuate at, e.g. (0, 0.1, 1, 10)")
    for what, value, low in (("n_seeds", n_seeds, 1), ("n_views", n_views, 1), ("n_noise", n_noise, 0)):
        if int(value) < low:
            raise ValueError(f"{what} must be >= {low}, got {value}")
    if not isinstance(classes, Mapping) or not classes:
        raise ValueError("classes must be a non-empty mapping class (index or label) → its photos")
    adapter = as_model(model, device=device)
    config = validation_config(adapter, reg_layer, engine_settings)
    results: dict[str, ClassPathSimilarity] = {}
    photos_kept: dict[str, int] = {}
    naturals_kept: dict[str, int] = {}
    probs: dict[str, dict[str, tuple[float, float]]] = {}
    for target, photos in classes.items():
        index = adapter.class_index(target)
        label = adapter.labels[index]
        views = _class_views(
            adapter, as_image_list(photos, f"classes[{target!r}]"), index, int(n_views), view_seed, require_prediction
        )
        kept = [(p, v) for p, vs in enumerate(views) for v in vs]
        naturals = [v for _, v in kept]
        sources: list[Hashable] = list(range(len(kept))) if view_level else [p for p, _ in kept]
        if len(set(sources)) < 2:
            raise ValueError(
                f"class {label!r}: {len(set(sources))} source left of {len(views)} photos (views the model calls "
                f"{label!r}: {len(kept)}); give at least 2 photos it predicts, or view_level=True with n_views >= 2"
            )
        seed_pos = list(dict.fromkeys(sources))[: int(n_seeds)]
        first = {s: naturals[sources.index(s)] for s in seed_pos}
        seed_imgs = [first[s] for s in seed_pos for _ in lams]
        run = start_run(adapter, seed_imgs, index, lam=[lam for _ in seed_pos for lam in lams], config=config)
        accs = run_to_end(run)
        candidates: dict[str, Any] = {}
        cand_sources: dict[str, list[Hashable | None]] = {}
        for j, lam in enumerate(lams):
            candidates[lambda_name(lam)] = [accs[i * len(lams) + j] for i in range(len(seed_pos))]
            cand_sources[lambda_name(lam)] = list(seed_pos)
        if int(n_noise) > 0:
            noise_run = start_run(adapter, None, [index] * int(n_noise), lam=0.0, config=config)
            candidates[NOISE] = run_to_end(noise_run)
        results[label] = class_path_similarity(
            adapter,
            naturals,
            candidates,
            sources=sources,
            candidate_sources=cand_sources,
            target=label,
            layers=layers,
            batch_size=batch_size,
        )
        photos_kept[label] = sum(1 for vs in views if vs)
        naturals_kept[label] = len(naturals)
        probs[label] = {
            name: (
                float(sum(a.seed_score.prob or 0.0 for a in accs_) / len(accs_)),
                float(sum(a.score.prob or 0.0 for a in accs_) / len(accs_)),
            )
            for name, accs_ in candidates.items()
        }
    return SuperNatural(
        classes=results,
        mean=average_classes(list(results.values())),
        lambdas=lams,
        photos=photos_kept,
        naturals=naturals_kept,
        view_level=bool(view_level),
        config=config,
        probs=probs,
    )
