"""Validation tools from the paper, for any model: λ calibration (appendix E), path similarity
(section 3, figure 8) and its class-wise "super-natural" test (appendix A, figures 8 and 12), the
cascading-randomization sanity check (appendix D) and transferability to judge models
that were not optimised (the MACO benchmark's test). The λ calibration also runs in steps
(:class:`LambdaCalibrationRun`), as the widget's λ mark does.

They run the engine through :func:`faccent_widget.start_run`, like every other user of it, and take a
:class:`~faccent_widget.Model` or a bare ``nn.Module`` (plus ``device=``).
"""

from .calibration import DEFAULT_LAMBDA_GRID, LambdaCalibration, LambdaCalibrationRun, LambdaCurve, calibrate_lambda
from .class_paths import ClassPathSimilarity, average_classes, class_path_similarity
from .paths import PathSimilarity, path_similarity
from .randomization import RandomizationCheck, parameterized_layers, randomization_check
from .supernatural import SuperNatural, augmented_views, supernatural
from .transfer import Transferability, attack_to_gain, transferability

__all__ = [
    "ClassPathSimilarity",
    "SuperNatural",
    "augmented_views",
    "average_classes",
    "class_path_similarity",
    "supernatural",
    "DEFAULT_LAMBDA_GRID",
    "LambdaCalibration",
    "LambdaCalibrationRun",
    "LambdaCurve",
    "PathSimilarity",
    "RandomizationCheck",
    "Transferability",
    "calibrate_lambda",
    "attack_to_gain",
    "parameterized_layers",
    "path_similarity",
    "randomization_check",
    "transferability",
]
