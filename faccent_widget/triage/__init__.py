"""Dataset triage: find a model's mistakes in labelled images, accentuate predicted vs true for each.

``fw.triage(model, data, out=...)`` → :class:`TriageReport` (iterate it, ``.show()`` it in a notebook,
``.to_html(path)`` it). Modules, one job each: :mod:`.data` (inputs and folder → label mapping),
:mod:`.decode` (bounded decoding; what an unreadable file raises), :mod:`.store` (the resumable,
locked on-disk store), :mod:`.run` (``triage()``: checks, settings, the store), :mod:`.stages`
(predict, accentuate, merge), :mod:`.labels` (label-issue scores), :mod:`.exemplars` (nearest
correctly classified images), :mod:`.report` (ranking, report), :mod:`.query` (filters and sorts),
:mod:`.tags` (tags and selection in the store, tags files), :mod:`.selection` (the report's tag,
select and filter methods), :mod:`.page` (the offline HTML page; script and style in ``report_assets/``),
:mod:`.browser` (the notebook browser; the one application → application edge, to the widget),
:mod:`.distributed` (torchrun sharding), :mod:`.demo` (a labelled folder from the sample images).
"""

from .data import TriageData, TriageImageError, TriageInputError, load_class_map
from .demo import DEMO_CLASSES, build_demo_folder
from .report import RANKINGS, TriageItem, TriageReport
from .run import TARGETS, triage
from .store import TriageSettingsMismatch, TriageStoreError, TriageStoreLocked

__all__ = [
    "DEMO_CLASSES",
    "RANKINGS",
    "TARGETS",
    "TriageData",
    "TriageImageError",
    "TriageInputError",
    "TriageItem",
    "TriageReport",
    "TriageSettingsMismatch",
    "TriageStoreError",
    "TriageStoreLocked",
    "build_demo_folder",
    "load_class_map",
    "triage",
]
