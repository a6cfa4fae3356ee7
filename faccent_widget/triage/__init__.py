"""Dataset triage: find a model's mistakes in labelled images, accentuate predicted vs true for each.

``fw.triage(model, data, out=...)`` → :class:`TriageReport` (iterate it, ``.show()`` it in a notebook,
``.to_html(path)`` it). Modules, one job each: :mod:`.data` (inputs and folder → label mapping),
:mod:`.store` (the resumable on-disk store), :mod:`.run` (predict, accentuate, merge),
:mod:`.report` (ranking, report, HTML), :mod:`.browser` (the notebook browser),
:mod:`.distributed` (torchrun sharding), :mod:`.demo` (a labelled folder from the sample images).
"""

from .data import TriageData, TriageInputError, load_class_map
from .demo import DEMO_CLASSES, build_demo_folder
from .report import RANKINGS, TriageItem, TriageReport
from .run import TARGETS, triage
from .store import TriageSettingsMismatch

__all__ = [
    "DEMO_CLASSES",
    "RANKINGS",
    "TARGETS",
    "TriageData",
    "TriageInputError",
    "TriageItem",
    "TriageReport",
    "TriageSettingsMismatch",
    "build_demo_folder",
    "load_class_map",
    "triage",
]
