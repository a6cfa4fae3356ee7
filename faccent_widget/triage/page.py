"""The triage report as one offline HTML page (:meth:`TriageReport.html <.report.TriageReport.html>`).

Every mistake is *data*: one JSON block (labels, probabilities, ranking keys, tags, small JPEG
thumbnails as ``data:`` URIs, the collectively normalised masks as 8-bit grids) that the page's script
renders a page at a time, with filters (true class, predicted class, confusion pair — a click on the
confusion table —, label-issue badge, failed accentuation, tag, selection), every sort of
:data:`.query.SORTS`, search by file name and label, and per card the views *accentuation*, *where*
(the mask over the seed), *difference* (|accentuation − seed|, scaled so that the largest change is
white) and *swipe*. Tags and selection are
kept in the browser's ``localStorage`` and exported as a tags file (JSON or CSV) that
:meth:`TriageReport.import_tags <.report.TriageReport.import_tags>` reads.

Safety: the text of the page is built with ``textContent`` (labels and file names are never parsed as
HTML), the static header is escaped with ``html.escape``, the JSON block escapes ``<``, ``>`` and ``&``,
and a Content-Security-Policy forbids any network access and allows only the page's own script and
style, by their SHA-256. The script and style are package data (``report_assets/``).
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import TYPE_CHECKING, Any

import torch

from ..core.compositing import masked_accentuation
from ..images import to_pil
from .query import FLAGS, SORTS, item_facts
from .tags import COLUMNS, TAGS, TAGS_FORMAT

if TYPE_CHECKING:
    from .report import TriageItem, TriageReport

__all__ = ["CSP", "SCRIPT", "SCRIPT_HASH", "STYLE", "STYLE_HASH", "THUMBS", "choose_thumbs", "page_data", "render_html"]

_ASSETS = resources.files(__package__) / "report_assets"
SCRIPT = (_ASSETS / "report.js").read_text(encoding="utf-8")
STYLE = (_ASSETS / "report.css").read_text(encoding="utf-8")


def _sha256(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")


#: The page runs only its own script and style: the CSP allows them by SHA-256, not by 'unsafe-inline'.
SCRIPT_HASH = _sha256(SCRIPT)
STYLE_HASH = _sha256(STYLE)
CSP = f"default-src 'none'; img-src data: blob:; style-src '{STYLE_HASH}'; script-src '{SCRIPT_HASH}'"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


#: Thumbnail (shorter side in px, JPEG quality) candidates, largest first: a report takes the largest
#: that keeps the file under its byte budget (``max_mb``), estimated on a sample of its mistakes.
THUMBS = ((160, 75), (128, 72), (112, 70), (96, 68), (80, 65), (64, 60), (64, 50), (56, 50), (48, 45))
_JSON_BYTES = 900  # an item's data besides its thumbnails (labels, numbers, masks), about


def _jpeg(image: Any, tile: int, quality: int = 70) -> str:
    """A JPEG ``data:`` URI of ``image`` with its shorter side at most ``tile`` px."""
    pil = to_pil(image).convert("RGB")
    short = min(pil.size)
    if tile and short > tile:
        scale = tile / short
        pil = pil.resize((max(1, round(pil.width * scale)), max(1, round(pil.height * scale))), resample=2)
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _pictures(item: TriageItem) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(name → image: the seed and the masked accentuation toward each target, target → mask)."""
    seed, accents = item.seed, item.accentuations
    masks = item.masks if item.normalizer is not None else {}
    pics = {"seed": seed}
    for t in item.targets:
        m = masks.get(t)
        pics[t] = masked_accentuation(seed, accents[t], m) if m is not None else accents[t]
    return pics, masks


def choose_thumbs(items: list[TriageItem], max_mb: float) -> tuple[int, int]:
    """The largest (tile, quality) of :data:`THUMBS` whose estimated file size for ``items`` stays
    under ``max_mb`` megabytes (measured on up to 12 of them, spread evenly)."""
    if not items:
        return THUMBS[0]
    sample = [_pictures(it)[0] for it in items[:: max(1, len(items) // 12)][:12]]
    for tile, quality in THUMBS:
        per_item = sum(len(_jpeg(img, tile, quality)) for pics in sample for img in pics.values()) / len(sample)
        if len(items) * (per_item + _JSON_BYTES) <= max_mb * 1e6:
            return tile, quality
    return THUMBS[-1]


def _item_data(item: TriageItem, tile: int, quality: int) -> dict[str, Any]:
    """One mistake as the page's data: facts, scores, thumbnails, 8-bit masks, exemplar references."""
    pics, masks = _pictures(item)
    images: dict[str, str | None] = {name: _jpeg(img, tile, quality) for name, img in pics.items()}
    grids = {}
    for t, m in masks.items():
        q = (m.clamp(0, 1) * 255).round().to(torch.uint8)
        grids[t] = {"shape": list(q.shape), "values": base64.b64encode(q.flatten().numpy().tobytes()).decode("ascii")}
    scores = {
        t: {
            "label": str(s["label"]),
            "seed_prob": None if s.get("seed_prob") is None else float(s["seed_prob"]),
            "prob": None if s.get("prob") is None else float(s["prob"]),
        }
        for t, s in item.scores.items()
    }
    return {
        "id": item.id,
        "rank": item.rank,
        "index": item.index,
        "key": item.key,
        "true_label": item.true_label,
        "predicted_label": item.predicted_label,
        "p_true": item.p_true,
        "p_predicted": item.p_predicted,
        "true_rank": item.true_rank,
        "label_issue": item.label_issue,
        "likely_label_error": item.likely_label_error,
        **item_facts(item),
        "targets": item.targets,
        "scores": scores,
        "images": images,
        "masks": grids,
        "exemplars": {
            t: [{"id": str(e["id"]), "key": str(e["key"]), "similarity": float(e["similarity"])} for e in es]
            for t, es in item.exemplars.items()
        },
    }


def _exemplar_images(report: TriageReport, items: list[TriageItem]) -> dict[str, str]:
    """Exemplar id → its stored JPEG thumbnail as a ``data:`` URI (each embedded once)."""
    out: dict[str, str] = {}
    folder = report.root / "exemplars"
    for it in items:
        for es in it.exemplars.values():
            for e in es:
                i = str(e["id"])
                path = folder / f"{i}.jpg"
                if i not in out and path.is_file():
                    out[i] = "data:image/jpeg;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    return out


def page_data(
    report: TriageReport, *, max_items: int | None = None, tile: int | None = None, max_mb: float = 45
) -> dict[str, Any]:
    """Everything the page's script renders (see the module docstring), as plain JSON-able data.
    ``tile``: the thumbnails' shorter side in px (default: the largest that keeps the file under
    ``max_mb`` megabytes, see :func:`choose_thumbs`)."""
    items = report.items if max_items is None else report.items[: max(0, int(max_items))]
    tile, quality = (int(tile), 70) if tile else choose_thumbs(items, max_mb)
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        rows = list(pool.map(lambda it: _item_data(it, tile, quality), items))
    ids = {it.id for it in items}
    book = report.book
    return {
        "report_id": report.report_id,
        "thumbnails": {"tile": tile, "quality": quality},
        "rank_by": report.rank_by,
        "items": rows,
        "exemplar_images": _exemplar_images(report, items),
        "tags": {i: t for i, t in book.tags.items() if i in ids},
        "selected": sorted(i for i in book.selected if i in ids),
        "tag_names": list(TAGS),
        "tags_format": TAGS_FORMAT,
        "columns": list(COLUMNS),
        "sorts": [[k, v] for k, v in SORTS.items()],
        "flags": [[k, v] for k, v in FLAGS.items()],
    }


def _json_block(data: Any) -> str:
    """``data`` as JSON safe inside a ``<script type="application/json">`` element."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


_RULES = {
    "margin": "p(predicted) − p(true), largest first",
    "confidence": "p(predicted), largest first",
    "true_rank": "rank of the true class, worst first",
    "label_issue": "label-issue score (likely label errors first)",
    "index": "dataset order",
}

_TOOLBAR = """<div class="bar" id="bar">
<div class="row">
<label>Search <input type="search" id="f-search" placeholder="file name or label"></label>
<label>true <select id="f-true"></select></label>
<label>predicted <select id="f-predicted"></select></label>
<label>show <select id="f-flag"></select></label>
<label>tag <select id="f-tag"></select></label>
<label><input type="checkbox" id="f-only"> selected only</label>
<button type="button" id="clear">clear filters</button>
</div>
<div class="row">
<label>Sort by <select id="sort"></select></label><button type="button" id="dir">↓ worst first</button>
<label>view <select id="view"></select></label>
<label>per page <select id="size"></select></label>
<span class="pager"><button type="button" id="first">«</button><button type="button" id="prev">‹ previous</button>
<span id="page"></span><button type="button" id="next">next ›</button><button type="button" id="last">»</button></span>
<span class="status" id="status"></span>
</div>
<div class="row">
<span id="counts"></span>
<button type="button" id="select-all">select all matching</button>
<button type="button" id="select-none">clear selection</button>
<button type="button" id="export-json">export tags (JSON)</button>
<button type="button" id="export-csv">export tags (CSV)</button>
<span class="note" id="note"></span>
</div>
</div>"""


def render_html(report: TriageReport, *, max_items: int | None, tile: int | None, max_mb: float = 45) -> str:
    s = report.summary
    fp = report.settings
    engine = fp.get("engine", {})
    model = fp.get("model", {}).get("name", "?")
    data = page_data(report, max_items=max_items, tile=tile, max_mb=max_mb)
    n_shown, thumbs = len(data["items"]), data["thumbnails"]
    rule = _RULES.get(report.rank_by, report.rank_by)
    setting_keys = ("preset", "steps", "n_crops", "input_size", "canvas", "lam", "reg_layer", "param", "seed")
    settings = ", ".join(f"{_e(k)} {_e(engine[k])}" for k in setting_keys if k in engine)
    shown = f"; the first {n_shown} of {len(report.items)} are in this file" if n_shown < len(report.items) else ""
    li = report.index.get("label_issues") or {}
    flagged = sum(1 for it in report.items if it.likely_label_error)
    label_line = (
        f"<div>Label issues: {_e(li.get('method'))}; {flagged} mistake(s) flagged “likely label error”. "
        f"{_e(li.get('note', ''))} {_e(li.get('caveat', ''))}</div>"
        if li
        else ""
    )
    unread = report.skipped
    skipped = (
        f"<h2>Skipped: {len(unread)} file(s) or folder(s) could not be read</h2><table>"
        + "".join(f'<tr><td class="key">{_e(r["key"])}</td><td>{_e(r["reason"])}</td></tr>' for r in unread)
        + "</table>"
        if unread
        else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Triage: {_e(model)}</title><style>{STYLE}</style></head>
<body>
<h1>Dataset triage: {_e(model)}</h1>
<div class="muted">Feature accentuation of every mistake toward the predicted and the true class (faccent-widget).</div>
<div class="stats">
<div><b>{s["items"]}</b>images</div><div><b>{100 * s["accuracy"]:.1f}%</b>accuracy</div>
<div><b class="bad">{s["mistakes"]}</b>mistakes</div><div><b>{s["accentuated"]}</b>accentuated</div>
{f'<div><b class="bad">{len(unread)}</b>skipped</div>' if unread else ""}
</div>
<div>Ranked by {_e(rule)}{_e(shown)}. Masks: one collective normalisation over the Grad-CAM maps of all
mistakes. Settings: {settings}. Thumbnails: {thumbs["tile"]} px (JPEG quality {thumbs["quality"]}); full images are
in the triage folder and in <code>report.show()</code>.</div>
{label_line}
<h2>Confusions <span class="muted">(click a row to show only that pair)</span></h2>
<div class="confusions"><table><thead><tr><th>true</th><th>predicted</th><th>count</th></tr></thead>
<tbody id="confusions"></tbody></table><div class="muted" id="more-pairs"></div></div>
{skipped}
<h2>Mistakes</h2>
{_TOOLBAR}
<div class="cards" id="cards"></div>
<script type="application/json" id="triage-data">{_json_block(data)}</script>
<script>{SCRIPT}</script>
</body></html>
"""
