"""Model adapter, registry and the offline default model."""

from .adapter import ACTIVATION_TYPES, LayerNotFoundError, Model, Prediction, imagenet_labels
from .registry import DEFAULT_MODEL, WeightsUnavailableError, as_model, available_models, load_model

__all__ = [
    "ACTIVATION_TYPES", "DEFAULT_MODEL", "LayerNotFoundError", "Model", "Prediction",
    "WeightsUnavailableError", "as_model", "available_models", "imagenet_labels", "load_model",
]
