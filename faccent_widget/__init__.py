"""faccent-widget: feature accentuation for PyTorch vision models, with a live Jupyter widget."""

from .images import load_image, sample_image, sample_image_names, sample_images
from .models import LayerNotFoundError, Model, Prediction, WeightsUnavailableError, available_models, load_model

__version__ = "0.1.0"

__all__ = [
    "LayerNotFoundError", "Model", "Prediction", "WeightsUnavailableError", "available_models",
    "load_image", "load_model", "sample_image", "sample_image_names", "sample_images",
]
