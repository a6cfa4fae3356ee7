"""``TriageReport``: the ranked mistakes of a triage, their images and masks, and an offline HTML page.

Ranking (``rank_by``; ties always go by dataset order):

* ``"margin"`` (default): p(predicted) − p(true), largest first — the model preferred the wrong class
  by the widest margin, so the most telling mistakes come first;
* ``"confidence"``: p(predicted), largest first;
* ``"true_rank"``: the true class's rank among all classes (1 = top), worst first;
* ``"label_issue"``: the label-issue score (see :mod:`.labels`), largest first — the mistakes whose
  *label* is most likely wrong come first;
* ``"index"``: dataset order.

Each item also carries ``likely_label_error`` (shown as a badge) and its natural exemplars: the nearest
correctly classified images of its predicted and true class in the same data (see :mod:`.exemplars`).

Masks: one :class:`~faccent_widget.CollectiveNormalizer` is fitted on every stored raw Grad-CAM map of
the report (both targets, all mistakes), so a mask means the same in every card (equation 1 of the
paper with the normaliser's default percentiles). Maps are stored at the Grad-CAM layer's resolution
and normalised there; the masks are upsampled bilinearly when they are blended.

The HTML page is one file: every image is embedded as a ``data:`` URI, a Content-Security-Policy
forbids any network access, and every label, file name and setting is escaped with ``html.escape``.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..core.compositing import heatmap_overlay, masked_accentuation
from ..core.masks import CollectiveNormalizer
from ..core.model import Model
from ..images import load_image
from .page import CSP, SCRIPT_HASH, render_html
from .selection import TagsAndSelection
from .store import FORMAT, TriageStore

if TYPE_CHECKING:  # the browser (ipywidgets, the widget) is imported only when a report is shown
    from .browser import TriageBrowser

__all__ = ["CSP", "RANKINGS", "SCRIPT_HASH", "TriageItem", "TriageReport", "build_index", "rank_rows"]

RANKINGS: dict[str, Callable[[Mapping[str, Any]], tuple]] = {
    "margin": lambda r: (-(r["p_predicted"] - r["p_true"]), r["index"]),
    "confidence": lambda r: (-r["p_predicted"], r["index"]),
    "true_rank": lambda r: (-r["true_rank"], -(r["p_predicted"] - r["p_true"]), r["index"]),
    "label_issue": lambda r: (-float(r.get("label_issue") or 0.0), r["index"]),
    "index": lambda r: (r["index"],),
}


def rank_rows(rows: Sequence[Mapping[str, Any]], by: str) -> list[Mapping[str, Any]]:
    """``rows`` sorted by the ranking ``by`` (see the module docstring)."""
    if by not in RANKINGS:
        raise ValueError(f"rank_by must be one of {', '.join(RANKINGS)}, got {by!r}")
    return sorted(rows, key=RANKINGS[by])


def _normalizer(rows: Sequence[Mapping[str, Any]]) -> CollectiveNormalizer | None:
    maps = [torch.tensor(r["gradcam"][t], dtype=torch.float32) for r in rows for t in r["targets"]]
    if not maps:
        return None
    norm = CollectiveNormalizer(target="triage: predicted and true class of every mistake", source="gradcam")
    return norm.fit(maps)


def build_index(
    store: TriageStore,
    predictions: Sequence[Mapping[str, Any]],
    skipped: Sequence[Mapping[str, Any]],
    rank_by: str,
    fingerprint: Mapping[str, Any],
    run: Mapping[str, Any],
    *,
    annotations: Mapping[str, Mapping[str, Any]] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The merged index of a store: summary, every prediction (in dataset order, at this run's
    positions), the ranked finished mistakes, the skipped files and folders (key and reason), the
    normaliser, and the history of runs that filled the store. ``annotations`` (item id → extra
    fields: label-issue score and flag, exemplars) are added to the predictions and items; ``meta``
    (how they were made) goes to the index as is."""
    notes = annotations or {}
    preds = [
        {**dict(p), **{k: v for k, v in notes.get(str(p["id"]), {}).items() if k != "exemplars"}} for p in predictions
    ]
    mistakes = [p for p in preds if p["predicted"] != p["true"]]
    done = store.done()
    rows = [
        {
            **store.item_row(p["id"]),
            **notes.get(str(p["id"]), {}),
            "index": p["index"],
            "key": p["key"],
            "source": p.get("source"),
        }
        for p in mistakes
        if p["id"] in done
    ]
    norm = _normalizer(rows)
    n = len(preds)
    runs = []
    if store.index_path.is_file():
        runs = list(store.read_index().get("runs", []))
    runs.append(dict(run))
    return {
        "format": FORMAT + "/index",
        "version": 1,
        "summary": {
            "items": n,
            "correct": n - len(mistakes),
            "accuracy": (n - len(mistakes)) / n if n else 0.0,
            "mistakes": len(mistakes),
            "accentuated": len(rows),
            "missing": len(mistakes) - len(rows),
            "skipped": len(skipped),
        },
        "rank_by": rank_by,
        **dict(meta or {}),
        "fingerprint": dict(fingerprint),
        "normalizer": norm.to_dict() if norm is not None else None,
        "runs": runs,
        "predictions": preds,
        "skipped": [{"key": str(r["key"]), "reason": str(r["reason"])} for r in skipped],
        "items": [dict(r) for r in rank_rows(rows, rank_by)],
    }


# --------------------------------------------------------------------------- items


@dataclass
class TriageItem:
    """One mistake: labels, probabilities, scores, and (loaded on access) its images and masks.

    ``rank`` is the 1-based position in the report; ``scores[target]`` holds ``class``, ``label``,
    ``seed_prob``/``prob`` (the target's probability before/after accentuation; ``seed_prob`` is the
    prediction's, of the full image, as ``p_true``/``p_predicted``), ``p_fell``, ``seed_logit``/``logit``,
    ``distance`` and ``lam_effective``.
    """

    row: dict[str, Any] = field(repr=False)
    rank: int
    directory: Path = field(repr=False)
    normalizer: CollectiveNormalizer | None = field(repr=False, default=None)

    index: int = field(init=False)
    key: str = field(init=False)
    true_index: int = field(init=False)
    true_label: str = field(init=False)
    predicted_index: int = field(init=False)
    predicted_label: str = field(init=False)
    p_true: float = field(init=False)
    p_predicted: float = field(init=False)
    true_rank: int = field(init=False)
    label_issue: float | None = field(init=False)
    likely_label_error: bool = field(init=False)

    @property
    def id(self) -> str:
        """The item id in the store (stable across runs: see :mod:`.data`)."""
        return str(self.row["id"])

    def __post_init__(self) -> None:
        r = self.row
        self.index, self.key = int(r["index"]), str(r["key"])
        self.true_index, self.true_label = int(r["true"]), str(r["true_label"])
        self.predicted_index, self.predicted_label = int(r["predicted"]), str(r["predicted_label"])
        self.p_true, self.p_predicted, self.true_rank = float(r["p_true"]), float(r["p_predicted"]), int(r["true_rank"])
        self.label_issue = float(r["label_issue"]) if r.get("label_issue") is not None else None
        self.likely_label_error = bool(r.get("likely_label_error", False))

    @property
    def exemplars(self) -> dict[str, list[dict[str, Any]]]:
        """Target ("predicted"/"true") → the nearest correctly classified items of that class in the
        same data (``id``, ``key``, ``index``, cosine ``similarity``), most similar first; an empty
        list when the class has no correctly classified item; ``{}`` when none were computed."""
        return {t: [dict(e) for e in es] for t, es in self.row.get("exemplars", {}).items()}

    def exemplar_images(self, target: str) -> list[tuple[dict[str, Any], torch.Tensor | None]]:
        """(exemplar, thumbnail or None when it is missing) for ``target``'s exemplars."""
        folder = self.directory.parent.parent / "exemplars"
        out: list[tuple[dict[str, Any], torch.Tensor | None]] = []
        for e in self.exemplars.get(target, []):
            path = folder / f"{e['id']}.jpg"
            out.append((e, load_image(path) if path.is_file() else None))
        return out

    def exemplar_groups(self) -> list[tuple[str, str, list[tuple[dict[str, Any], torch.Tensor | None]]]]:
        """(target "predicted"/"true", its class label, :meth:`exemplar_images`) for the targets that have
        exemplars computed (an empty list: no correctly classified image of that class in the data)."""
        return [
            (t, self.predicted_label if t == "predicted" else self.true_label, self.exemplar_images(t))
            for t in ("predicted", "true")
            if t in self.exemplars
        ]

    @property
    def targets(self) -> list[str]:
        return list(self.row["targets"])

    @property
    def scores(self) -> dict[str, dict[str, Any]]:
        return self.row["scores"]

    @property
    def top5(self) -> list[tuple[int, str, float]]:
        return [(int(i), str(lab), float(p)) for i, lab, p in self.row["top5"]]

    def _png(self, name: str) -> torch.Tensor:
        return load_image(self.directory / name)

    @property
    def source(self) -> Path | None:
        """The image file the item came from, when it was a file and is still there (else None)."""
        src = self.row.get("source")
        return Path(src) if src and Path(src).is_file() else None

    @property
    def seed(self) -> torch.Tensor:
        """The seed (3, H, W) in [0, 1] at the canvas size."""
        return self._png("seed.png")

    @property
    def accentuations(self) -> dict[str, torch.Tensor]:
        """Target ("predicted"/"true") → accentuation (3, H, W)."""
        return {t: self._png(f"{t}.png") for t in self.targets}

    @property
    def gradcam(self) -> dict[str, torch.Tensor]:
        """Target → raw Grad-CAM map at the Grad-CAM layer's resolution (h, w)."""
        return {t: torch.tensor(self.row["gradcam"][t], dtype=torch.float32) for t in self.targets}

    @property
    def masks(self) -> dict[str, torch.Tensor]:
        """Target → collectively normalised mask (h, w) in [0, 1] (see the module docstring)."""
        norm = self.normalizer
        if norm is None:
            raise RuntimeError("this report has no fitted normaliser (no finished mistakes)")
        return {t: norm(m) for t, m in self.gradcam.items()}

    def masked(self, target: str) -> torch.Tensor:
        """The accentuation toward ``target`` blended over the seed through its mask (3, H, W)."""
        if target not in self.targets:
            raise KeyError(f"no accentuation toward {target!r}; this item has {', '.join(self.targets)}")
        return masked_accentuation(self.seed, self.accentuations[target], self.masks[target])

    def tiles(self) -> list[tuple[str, torch.Tensor]]:
        """(caption, image) pairs of the report's card: seed, then per target its mask over the seed
        and the masked accentuation."""
        seed = self.seed
        accents, masks = self.accentuations, self.masks
        out = [("seed", seed)]
        for t in self.targets:
            label = self.scores[t]["label"]
            out.append((f"where: {label} ({t})", heatmap_overlay(seed, masks[t], alpha=0.5)))
            out.append((f"→ {label} ({t})", masked_accentuation(seed, accents[t], masks[t])))
        return out


# --------------------------------------------------------------------------- report


class TriageReport(TagsAndSelection):
    """The result of :func:`~faccent_widget.triage`: the ranked mistakes (iterate, index, ``len``), the
    ``summary``, every prediction, ``to_html(path)`` and ``show()``.

    Load a finished store with ``TriageReport.load(out)``. ``keep_alive``: an object the report holds
    on to (a temporary output folder lives as long as the report).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        index: Mapping[str, Any],
        model: Model | None = None,
        rank_by: str | None = None,
        *,
        keep_alive: Any = None,
    ) -> None:
        self.root = Path(root)
        self.keep_alive = keep_alive
        self.index = dict(index)
        self.model = model
        self.rank_by = rank_by or self.index.get("rank_by", "margin")
        self.normalizer = self._load_normalizer()
        rows = rank_rows(self.index["items"], self.rank_by)
        store = TriageStore(self.root)
        self.items: list[TriageItem] = [
            TriageItem(dict(r), k + 1, store.item_dir(str(r["id"])), self.normalizer) for k, r in enumerate(rows)
        ]
        self._book = None

    @classmethod
    def load(
        cls, out: str | os.PathLike, model: Model | None = None, rank_by: str | None = None, *, keep_alive: Any = None
    ) -> TriageReport:
        """The report of a finished triage folder."""
        store = TriageStore(out)
        index = store.read_index()
        if index.get("format") != FORMAT + "/index":
            raise ValueError(f"{store.index_path} is not a faccent-widget triage index")
        return cls(out, index, model=model, rank_by=rank_by, keep_alive=keep_alive)

    def _load_normalizer(self) -> CollectiveNormalizer | None:
        data = self.index.get("normalizer")
        return CollectiveNormalizer.from_dict(data) if data else None

    def ranked(self, by: str) -> TriageReport:
        """The same report ordered by another ranking (see the module docstring)."""
        return TriageReport(self.root, self.index, model=self.model, rank_by=by, keep_alive=self.keep_alive)

    # ------------------------------------------------------------------ container
    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[TriageItem]:
        return iter(self.items)

    def __getitem__(self, i: int) -> TriageItem:
        return self.items[i]

    def __repr__(self) -> str:
        s = self.summary
        return (
            f"TriageReport({s['items']} images, accuracy {s['accuracy']:.1%}, {s['mistakes']} mistakes, "
            f"{s['accentuated']} accentuated, ranked by {self.rank_by}, in {self.root})"
        )

    @property
    def summary(self) -> dict[str, Any]:
        """Counts: ``items`` (images predicted), ``correct``, ``accuracy``, ``mistakes``,
        ``accentuated``, ``missing``, ``skipped`` (files and folders that could not be read)."""
        return {"skipped": 0, **self.index["summary"]}

    @property
    def skipped(self) -> list[dict[str, str]]:
        """The files and folders this triage could not read: ``{"key", "reason"}`` each."""
        return [dict(r) for r in self.index.get("skipped", [])]

    @property
    def predictions(self) -> list[dict[str, Any]]:
        """Every triaged item's prediction row (index, key, true/predicted class and label, p_true,
        p_predicted, true_rank, top5), in dataset order."""
        return [dict(p) for p in self.index["predictions"]]

    @property
    def settings(self) -> dict[str, Any]:
        """The fingerprint the store was made with (model, engine settings, targets, data digest)."""
        return dict(self.index["fingerprint"])

    @property
    def runs(self) -> list[dict[str, Any]]:
        """One entry per run that filled the store: run id, seconds, world size, items predicted and
        accentuated by that run."""
        return [dict(r) for r in self.index.get("runs", [])]

    def confusions(self, k: int = 10) -> list[tuple[str, str, int]]:
        """The ``k`` most frequent (true label, predicted label, count) pairs among the mistakes."""
        c = Counter(
            (p["true_label"], p["predicted_label"]) for p in self.index["predictions"] if p["predicted"] != p["true"]
        )
        return [(t, p, n) for (t, p), n in c.most_common(k)]

    # ------------------------------------------------------------------ views
    def html(self, *, max_items: int | None = None, tile: int | None = None, max_mb: float = 45) -> str:
        """The self-contained HTML page as a string (see :meth:`to_html`)."""
        return render_html(self, max_items=max_items, tile=tile, max_mb=max_mb)

    def to_html(
        self, path: str | os.PathLike, *, max_items: int | None = None, tile: int | None = None, max_mb: float = 45
    ) -> Path:
        """Write one offline HTML file: summary, a clickable confusion table, and every mistake (the
        first ``max_items`` in rank order) as data rendered in the page a page at a time, with
        filters, sorts, search, views (accentuation, where, difference, swipe), tags and selection.
        Images are small JPEG thumbnails embedded in the file, their shorter side ``tile`` px (default:
        the largest of 160 … 48 px that keeps the file under about ``max_mb`` megabytes). Returns the path."""
        p = Path(path)
        p.write_text(self.html(max_items=max_items, tile=tile, max_mb=max_mb), encoding="utf-8")
        return p

    def show(self, model: Model | None = None, *, page_size: int = 12) -> TriageBrowser:
        """A browsable widget: a grid of the mistakes; click one to see it large, and open it in a
        ``FaccentWidget`` (``model`` defaults to the triage's model, or loads it by name)."""
        from .browser import TriageBrowser

        return TriageBrowser(self, model=model if model is not None else self.model, page_size=page_size)
