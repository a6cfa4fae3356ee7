"""Validation tools: λ calibration (appendix E), path similarity (section 3, figure 8) and the
cascading-randomization sanity check (appendix D). Model-agnostic: they take any Model-like object;
``faccent_widget.validation`` wraps them for bare modules and model names."""

from .calibration import DEFAULT_LAMBDA_GRID, LambdaCalibration, LambdaCurve, calibrate_lambda
from .paths import PathSimilarity, path_similarity
from .randomization import RandomizationCheck, parameterized_layers, randomization_check

__all__ = [
    "DEFAULT_LAMBDA_GRID", "LambdaCalibration", "LambdaCurve", "PathSimilarity", "RandomizationCheck",
    "calibrate_lambda", "parameterized_layers", "path_similarity", "randomization_check",
]
