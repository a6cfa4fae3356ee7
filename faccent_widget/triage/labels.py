"""Label-issue scores: is a mistake more likely a wrong *label* than a wrong *model*?

Computed at the merge from the predicted probabilities the prediction stage already stored (nothing is
predicted again). The probabilities are restricted to the classes that occur as labels in the data and
renormalised over them (an ImageNet model triaged on a 20-class folder is judged among those 20).

* With ``cleanlab`` installed (``pip install 'faccent-widget[label-issues]'``): the flag ("likely label
  error") is confident learning's ``cleanlab.filter.find_label_issues(labels, pred_probs,
  filter_by="confident_learning")`` (Northcutt et al., 2021: the off-diagonal of the calibrated
  confident joint; cleanlab's default "prune_by_noise_rate" under-flags on folders of a few dozen
  images, where the noise rates cannot be estimated), the score ``1 −
  cleanlab.rank.get_label_quality_scores(labels, pred_probs, method="self_confidence")``.
* Without it (the fallback, ``method="self-confidence"``): the score is ``1 − p(given label)`` (the same
  number), the flag confident learning's *confident joint* done here in a few lines, as cleanlab
  counts it: per-class thresholds ``t_k`` (the mean ``p_k`` over the items labelled ``k``); an item's
  class guess is the class with ``p_k ≥ t_k`` (the most probable one when several pass); flagged when
  the guess is not the given label and the label is not the most probable class.

Score: in [0, 1], larger = more likely a label error (sort key ``rank_by="label_issue"``).

Caveat — in-sample probabilities. Confident learning assumes *out-of-sample* probabilities (each item
predicted by a model that did not train on it). A user's own validation folder is out-of-sample for a
pretrained model; the model's *training* images are not: the model has fitted (and may have memorised)
their labels, wrong ones included, so label errors there score low and are under-reported.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["CAVEAT", "INSTALL_HINT", "LABEL_ISSUE_METHODS", "LabelIssues", "label_issues", "require_cleanlab"]

#: ``"auto"``: cleanlab when installed, else the fallback (with a warning); ``"cleanlab"``: require it;
#: ``"self-confidence"``: the fallback; ``"off"``: no label-issue scores.
LABEL_ISSUE_METHODS = ("auto", "cleanlab", "self-confidence", "off")

INSTALL_HINT = (
    "cleanlab is not installed: label-issue scores use the self-confidence fallback (1 − p(given label)); "
    "for confident learning install it: pip install 'faccent-widget[label-issues]'"
)

CAVEAT = (
    "Label-issue scores assume out-of-sample probabilities: they are for data the model did not train on "
    "(your own validation folder); on the model's training images they under-report label errors."
)


@dataclass(frozen=True)
class LabelIssues:
    """Per item: ``scores`` (larger = more likely a label error) and ``flags`` ("likely label error");
    ``method`` used ("cleanlab" or "self-confidence") and a ``note`` (why a fallback was used, or "")."""

    scores: list[float]
    flags: list[bool]
    method: str
    note: str = ""


def require_cleanlab() -> None:
    """Raise ``ImportError`` naming the install command unless cleanlab can be imported."""
    try:
        import cleanlab  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        raise ImportError(
            "label_issues='cleanlab' needs cleanlab, not installed: pip install 'faccent-widget[label-issues]' "
            "(or use label_issues='auto' for the self-confidence fallback)"
        ) from None


def _restricted(labels: Sequence[int], probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels as 0…K'−1 over the classes that occur, and ``probs`` restricted and renormalised to them."""
    classes = np.unique(np.asarray(labels, dtype=np.int64))
    lookup = {int(c): i for i, c in enumerate(classes)}
    y = np.array([lookup[int(c)] for c in labels], dtype=np.int64)
    p = np.clip(probs[:, classes].astype(np.float64), 1e-12, None)
    return y, p / p.sum(axis=1, keepdims=True)


def _confident_joint_flags(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Off-diagonal entries of the confident joint, as cleanlab counts them: per-class thresholds
    ``t_k`` = mean ``p_k`` over the items labelled ``k``; an item's class guess is the one class with
    ``p_k ≥ t_k`` (the most probable class when several pass; none when no class passes); flagged when
    that guess is not its label, unless the label is the most probable class."""
    k = p.shape[1]
    thresholds = np.array([p[y == j, j].mean() if (y == j).any() else 2.0 for j in range(k)])
    thresholds = np.clip(thresholds, 2e-6, None)  # as cleanlab: a near-zero threshold is not "confident"
    confident = p >= thresholds[None, :] - 1e-6
    count = confident.sum(axis=1)
    guess = np.where(count > 1, p.argmax(axis=1), confident.argmax(axis=1))
    boosted = p.copy()
    boosted[np.arange(len(y)), y] += 1e-6
    agrees = boosted.argmax(axis=1) == y  # as cleanlab: never flag an item whose label is the model's top class
    return (count > 0) & (guess != y) & ~agrees


def label_issues(labels: Sequence[int], probs: np.ndarray, method: str = "auto") -> LabelIssues:
    """Label-issue scores and flags for items with given ``labels`` (class indices) and predicted
    ``probs`` (N, C); see the module docstring. ``method`` is one of :data:`LABEL_ISSUE_METHODS`
    except "off". Raises ``ImportError`` (with the install command) for "cleanlab" when it is missing."""
    if method not in LABEL_ISSUE_METHODS or method == "off":
        raise ValueError(f"label_issues method must be one of {', '.join(LABEL_ISSUE_METHODS[:3])}, got {method!r}")
    probs = np.asarray(probs)
    if probs.ndim != 2 or probs.shape[0] != len(labels):
        raise ValueError(f"probs must be (N, C) for N = {len(labels)} labels, got shape {probs.shape}")
    if not len(labels):
        return LabelIssues([], [], "self-confidence" if method == "self-confidence" else "cleanlab")
    y, p = _restricted(labels, probs)
    score = 1.0 - p[np.arange(len(y)), y]
    note = ""
    if method in ("auto", "cleanlab"):
        try:
            import cleanlab.filter  # type: ignore[import-untyped]
            import cleanlab.rank  # type: ignore[import-untyped]
        except ImportError:
            if method == "cleanlab":
                require_cleanlab()
            note = INSTALL_HINT
        else:
            if p.shape[1] < 2:
                note = "only one class in the data: label issues cannot be told apart (self-confidence fallback)"
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # cleanlab warns about tiny classes; the flags still stand
                    flags = cleanlab.filter.find_label_issues(y, p, filter_by="confident_learning", n_jobs=1)
                    quality = cleanlab.rank.get_label_quality_scores(y, p, method="self_confidence")
                return LabelIssues([float(1.0 - q) for q in quality], [bool(f) for f in flags], "cleanlab", "")
    flags = _confident_joint_flags(y, p)
    return LabelIssues([float(s) for s in score], [bool(f) for f in flags], "self-confidence", note)
