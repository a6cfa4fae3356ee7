"""A small labelled ``ImageFolder`` built from the bundled sample images, for the triage demo.

The sample images ship inside installed packages (scikit-image, matplotlib, scikit-learn). Their true
ImageNet classes are in :data:`DEMO_CLASSES`; the default model gets some of them wrong for real
(the rocket is "drilling platform", the Summer Palace tower is "bell cote", Chelsea the tabby is
"Egyptian cat"). The astronaut portrait has no ImageNet class and is left out.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

from ..images import sample_images, to_pil

__all__ = ["DEMO_CLASSES", "AUGMENTATIONS", "build_demo_folder"]

#: Sample image → its true ImageNet class (the folder name).
DEMO_CLASSES: dict[str, str] = {
    "camera": "tripod",
    "chelsea": "tabby",
    "coffee": "espresso",
    "rocket": "missile",
    "grace_hopper": "military uniform",
    "china": "palace",
    "flower": "daisy",
}


def _crop(left: float, top: float, size: float) -> Callable[[Image.Image], Image.Image]:
    def f(img: Image.Image) -> Image.Image:
        w, h = img.size
        cw, ch = round(w * size), round(h * size)
        x, y = round((w - cw) * left), round((h - ch) * top)
        return img.crop((x, y, x + cw, y + ch))

    return f


#: Deterministic variants: the first two make the default demo, all eight the ≥ 50-image benchmark set.
AUGMENTATIONS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "orig": lambda img: img,
    "flip": ImageOps.mirror,
    "crop_center": _crop(0.5, 0.5, 0.8),
    "crop_topleft": _crop(0.0, 0.0, 0.85),
    "crop_bottomright": _crop(1.0, 1.0, 0.85),
    "rotate": lambda img: img.rotate(8, resample=Image.Resampling.BILINEAR, expand=False, fillcolor=(127, 127, 127)),
    "darker": lambda img: ImageEnhance.Brightness(img).enhance(0.75),
    "desaturated": lambda img: ImageEnhance.Color(img).enhance(0.4),
}


def build_demo_folder(path: str | os.PathLike, *, variants: int = 2, size: int = 256) -> Path:
    """Write ``path/<true class>/<sample>_<variant>.jpg`` for every sample image in
    :data:`DEMO_CLASSES` and the first ``variants`` of :data:`AUGMENTATIONS` (1…8; the default 2 gives
    14 images, 8 gives 56), each resized so its shorter side is ``size``. Returns ``path``.
    Existing files are rewritten with the same content."""
    if isinstance(variants, bool) or not isinstance(variants, int) or not 1 <= variants <= len(AUGMENTATIONS):
        raise ValueError(f"variants must be an int in 1…{len(AUGMENTATIONS)}, got {variants!r}")
    root = Path(path)
    samples = sample_images(size=size)
    for name, label in DEMO_CLASSES.items():
        if name not in samples:  # e.g. scikit-learn (china, flower) not installed
            continue
        base = to_pil(samples[name]).convert("RGB")
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for variant in list(AUGMENTATIONS)[:variants]:
            AUGMENTATIONS[variant](base).save(folder / f"{name}_{variant}.jpg", format="JPEG", quality=92)
    return root
