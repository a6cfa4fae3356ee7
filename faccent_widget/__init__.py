"""faccent-widget: feature accentuation for PyTorch vision models, with a live Jupyter widget."""

from .accentuate import accentuate, iter_accentuate, start_run, visualize
from .core.attribution import activation_attribution, attribution_maps, gradcam, gradient_attribution
from .core.compositing import difference_image, heatmap_overlay, labelled_strip, masked_accentuation, panel
from .core.config import DEFAULT_LAMBDA, PRESETS, EngineConfig
from .core.derived_objectives import caricature, suppress
from .core.engine import Accentuation, AccentuationRun, Score, StepState
from .core.masks import CollectiveNormalizer, per_image_normalize
from .core.model import LayerNotFoundError, Model, Prediction
from .core.objectives import Objective, channel, direction, logit, neuron
from .images import load_image, sample_image, sample_image_names, sample_images, to_pil, to_png_bytes
from .triage import TriageReport, triage
from .validation import (
    LambdaCalibration,
    PathSimilarity,
    RandomizationCheck,
    SuperNatural,
    Transferability,
    calibrate_lambda,
    path_similarity,
    randomization_check,
    supernatural,
    transferability,
)
from .widget import FaccentWidget
from .zoo import WeightsUnavailableError, available_models, load_model

__version__ = "0.1.0"

__all__ = [
    "caricature",
    "suppress",
    "Transferability",
    "transferability",
    "SuperNatural",
    "supernatural",
    "CollectiveNormalizer",
    "FaccentWidget",
    "activation_attribution",
    "attribution_maps",
    "difference_image",
    "gradcam",
    "gradient_attribution",
    "heatmap_overlay",
    "masked_accentuation",
    "labelled_strip",
    "panel",
    "per_image_normalize",
    "to_pil",
    "to_png_bytes",
    "LambdaCalibration",
    "PathSimilarity",
    "RandomizationCheck",
    "calibrate_lambda",
    "path_similarity",
    "randomization_check",
    "Accentuation",
    "AccentuationRun",
    "DEFAULT_LAMBDA",
    "EngineConfig",
    "LayerNotFoundError",
    "Model",
    "Objective",
    "PRESETS",
    "Prediction",
    "Score",
    "StepState",
    "WeightsUnavailableError",
    "accentuate",
    "available_models",
    "channel",
    "direction",
    "iter_accentuate",
    "load_image",
    "load_model",
    "logit",
    "neuron",
    "sample_image",
    "sample_image_names",
    "sample_images",
    "start_run",
    "visualize",
    "TriageReport",
    "triage",
]
