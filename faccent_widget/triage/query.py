"""Sorting and filtering a triage's mistakes — the same keys and rules in ``report.show()``, in
:meth:`TriageReport.filter <.report.TriageReport.filter>` and (in JavaScript) in the HTML report.

Sort keys (:data:`SORTS`; ``descending`` = the "worst first" order given here, ties by dataset order):
``margin`` p(predicted) − p(true); ``confidence`` p(predicted); ``true_rank`` the true class's rank;
``label_issue`` the label-issue score; ``gain_predicted`` / ``gain_true`` how much accentuation raised
p(target) (p after − p before; negative = the accentuation *failed*); ``pair`` grouped by confusion pair,
most frequent first; ``index`` dataset order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .report import TriageItem

__all__ = ["FLAGS", "SORTS", "filter_items", "gain", "p_fell", "sort_items"]

#: Sort key → its label in the menus (the page's and the browser's).
SORTS: dict[str, str] = {
    "margin": "margin p(predicted) − p(true)",
    "confidence": "confidence p(predicted)",
    "true_rank": "rank of the true class",
    "label_issue": "label-issue score",
    "gain_predicted": "p gain toward predicted",
    "gain_true": "p gain toward true",
    "pair": "confusion pair (most frequent first)",
    "index": "dataset order",
}
#: Flag filter → its label.
FLAGS: dict[str, str] = {
    "": "all mistakes",
    "label": "likely label errors",
    "model": "not flagged as label errors",
    "fell": "failed accentuations (p fell)",
}


def gain(item: TriageItem, target: str) -> float | None:
    """p(target) after − before accentuation (None when the item has no accentuation toward it)."""
    s = item.scores.get(target) if target in item.targets else None
    if not s or s.get("prob") is None or s.get("seed_prob") is None:
        return None
    return float(s["prob"]) - float(s["seed_prob"])


def p_fell(item: TriageItem) -> bool:
    """True when accentuating toward any target *lowered* that target's probability."""
    return any((g := gain(item, t)) is not None and g < 0 for t in item.targets)


def _key(by: str, pairs: Counter) -> Callable[[TriageItem], tuple]:
    def g(it: TriageItem, t: str) -> float:
        v = gain(it, t)
        return -1e9 if v is None else v  # items without that accentuation last

    keys: dict[str, Callable[[TriageItem], tuple]] = {
        "margin": lambda it: (-(it.p_predicted - it.p_true), it.index),
        "confidence": lambda it: (-it.p_predicted, it.index),
        "true_rank": lambda it: (-it.true_rank, -(it.p_predicted - it.p_true), it.index),
        "label_issue": lambda it: (-(it.label_issue or 0.0), it.index),
        "gain_predicted": lambda it: (-g(it, "predicted"), it.index),
        "gain_true": lambda it: (-g(it, "true"), it.index),
        "pair": lambda it: (
            -pairs[(it.true_label, it.predicted_label)],
            it.true_label,
            it.predicted_label,
            -(it.p_predicted - it.p_true),
            it.index,
        ),
        "index": lambda it: (it.index,),
    }
    return keys[by]


def sort_items(items: Sequence[TriageItem], by: str, *, descending: bool = True) -> list[TriageItem]:
    """``items`` in the order ``by`` (see the module docstring); ``descending=False`` reverses it."""
    if by not in SORTS:
        raise ValueError(f"sort must be one of {', '.join(SORTS)}, got {by!r}")
    pairs = Counter((it.true_label, it.predicted_label) for it in items)
    out = sorted(items, key=_key(by, pairs))
    return out if descending else out[::-1]


def filter_items(
    items: Sequence[TriageItem],
    *,
    true: str | None = None,
    predicted: str | None = None,
    flag: str = "",
    tag: str | None = None,
    search: str = "",
    tags: Mapping[str, str] | None = None,
    selected: set[str] | None = None,
    only_selected: bool = False,
) -> list[TriageItem]:
    """The ``items`` that match every given criterion, in their order.

    ``true`` / ``predicted``: class labels (both together: one confusion pair); ``flag``: a key of
    :data:`FLAGS`; ``tag``: a tag, ``"untagged"`` or ``"tagged"`` (``tags``: item id → tag);
    ``search``: case-insensitive text in the file name or either label; ``only_selected``: the items
    in ``selected`` (item ids).
    """
    if flag not in FLAGS:
        raise ValueError(f"flag must be one of {', '.join(repr(f) for f in FLAGS)}, got {flag!r}")
    tags = tags or {}
    needle = search.strip().lower()

    def keep(it: TriageItem) -> bool:
        if true is not None and it.true_label != true:
            return False
        if predicted is not None and it.predicted_label != predicted:
            return False
        if flag == "label" and not it.likely_label_error:
            return False
        if flag == "model" and it.likely_label_error:
            return False
        if flag == "fell" and not p_fell(it):
            return False
        mine = tags.get(it.id)
        if tag == "untagged" and mine is not None:
            return False
        if tag == "tagged" and mine is None:
            return False
        if tag not in (None, "", "untagged", "tagged") and mine != tag:
            return False
        if only_selected and it.id not in (selected or set()):
            return False
        return not needle or needle in f"{it.key}\n{it.true_label}\n{it.predicted_label}".lower()

    return [it for it in items if keep(it)]


def item_facts(item: TriageItem) -> dict[str, Any]:
    """The numbers the page and the rows share: margin and the gain toward each target."""
    return {
        "margin": item.p_predicted - item.p_true,
        "gain_predicted": gain(item, "predicted"),
        "gain_true": gain(item, "true"),
        "p_fell": p_fell(item),
    }
