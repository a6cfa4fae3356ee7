"""The library functions triage uses, imported from their own floors (not from the package face)."""

from __future__ import annotations

from ..accentuate import accentuate, start_run
from ..core.attribution import gradcam
from ..core.compositing import heatmap_overlay, masked_accentuation
from ..core.config import DEFAULT_LAMBDA
from ..core.masks import CollectiveNormalizer
from ..core.model import Model, as_model
from ..images import load_image, sample_images, to_pil, to_png_bytes
from ..widget import FaccentWidget
from ..zoo import available_models, load_model

__all__ = [
    "CollectiveNormalizer",
    "DEFAULT_LAMBDA",
    "FaccentWidget",
    "Model",
    "as_model",
    "accentuate",
    "available_models",
    "gradcam",
    "heatmap_overlay",
    "load_image",
    "load_model",
    "masked_accentuation",
    "sample_images",
    "start_run",
    "to_pil",
    "to_png_bytes",
]
