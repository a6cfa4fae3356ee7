"""The triage report as one offline HTML page (:meth:`TriageReport.html <.report.TriageReport.html>`).

Every image is embedded as a ``data:`` URI, a Content-Security-Policy forbids any network access and
runs only the page's own script (allowed by its SHA-256), and every label, file name and setting is
escaped with ``html.escape``. A card per mistake: seed, masks, masked accentuations, the "likely label
error" badge and label-issue score, and the natural exemplars (nearest correctly classified images of
the predicted and true class in the same data).
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
from typing import TYPE_CHECKING, Any

import torch

from ..images import to_pil

if TYPE_CHECKING:
    from .report import TriageItem, TriageReport

__all__ = ["CSP", "SCRIPT_HASH", "render_html"]


def _data_uri(image: torch.Tensor, tile: int) -> str:
    pil = to_pil(image).convert("RGB")
    short = min(pil.size)
    if tile and short > tile:
        scale = tile / short
        pil = pil.resize((max(1, round(pil.width * scale)), max(1, round(pil.height * scale))), resample=2)
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=88)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _pct(p: Any) -> str:
    return "–" if p is None else f"{100 * float(p):.1f}%"


_CSS = """
:root { color-scheme: light dark; --bg:#fff; --fg:#1d1d1f; --muted:#5f6368; --card:#f6f7f9; --line:#d9dce1;
        --bad:#b3261e; --good:#1e6b34; }
@media (prefers-color-scheme: dark) { :root { --bg:#16181c; --fg:#e8eaed; --muted:#9aa0a6; --card:#202329;
        --line:#3a3f47; --bad:#f28b82; --good:#81c995; } }
* { box-sizing: border-box; }
body { margin: 0; padding: 24px; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
       background: var(--bg); color: var(--fg); }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 15px; margin: 20px 0 8px; }
.muted { color: var(--muted); } .bad { color: var(--bad); } .good { color: var(--good); }
.stats { display: flex; flex-wrap: wrap; gap: 8px 24px; margin: 12px 0; }
.stats b { font-size: 18px; display: block; }
table { border-collapse: collapse; } td, th { padding: 2px 10px 2px 0; text-align: left; vertical-align: top; }
.cards { display: grid; grid-template-columns: 1fr; gap: 14px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px; }
.card header { display: flex; flex-wrap: wrap; gap: 4px 18px; align-items: baseline; margin-bottom: 8px; }
.card .rank { font-weight: 700; } .card .key { font-family: ui-monospace, monospace; font-size: 12px; }
.tiles { display: flex; gap: 8px; overflow-x: auto; }
figure { margin: 0; flex: 0 0 auto; } figcaption { font-size: 12px; color: var(--muted); max-width: 240px; }
figure img { height: 150px; width: auto; border-radius: 4px; cursor: zoom-in; display: block; }
.card.zoom figure img { height: 300px; cursor: zoom-out; }
.badge { background: var(--bad); color: var(--bg); border-radius: 9px; padding: 0 8px; font-size: 12px; }
.exemplars { display: flex; flex-wrap: wrap; gap: 6px 18px; margin-top: 8px; }
.exemplars .row { display: flex; gap: 4px; align-items: flex-start; }
.exemplars .row > span { font-size: 12px; color: var(--muted); max-width: 130px; }
.exemplars figure img { height: 72px; cursor: default; }
.card.zoom .exemplars figure img { height: 72px; }
"""

_SCRIPT = """
document.querySelectorAll('.card').forEach(function (card) {
  card.addEventListener('click', function (ev) {
    if (ev.target && ev.target.tagName === 'IMG') { card.classList.toggle('zoom'); }
  });
});
var sorter = document.getElementById('sort');
if (sorter) {
  sorter.addEventListener('change', function () {
    var key = sorter.value, grid = document.querySelector('.cards');
    var cards = Array.prototype.slice.call(grid.querySelectorAll('.card'));
    cards.sort(function (a, b) {
      var d = key === 'index' ? 0 : parseFloat(b.dataset[key]) - parseFloat(a.dataset[key]);
      return d || parseFloat(a.dataset.index) - parseFloat(b.dataset.index);
    });
    cards.forEach(function (c) { grid.appendChild(c); });
  });
}
"""

#: The page runs only its own script: the CSP allows it by its SHA-256, not by 'unsafe-inline'.
SCRIPT_HASH = "sha256-" + base64.b64encode(hashlib.sha256(_SCRIPT.encode("utf-8")).digest()).decode("ascii")
CSP = f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src '{SCRIPT_HASH}'"


def _exemplar_rows(item: TriageItem) -> str:
    """The card's natural exemplars: per target, small thumbnails of the nearest correctly classified
    images of that class in the same data, or a line saying there are none."""
    if not item.exemplars:
        return ""
    parts = []
    for t, label, shown in item.exemplar_groups():
        if not shown:
            parts.append(
                f'<div class="row" data-target="{t}"><span>no correctly classified {_e(label)} ({t}) in your data'
                "</span></div>"
            )
            continue
        figs = "".join(
            f'<figure><img alt="{_e(e["key"])}" src="{_data_uri(img, 96)}">'
            f"<figcaption>{_e(e['key'])} · cos {float(e['similarity']):.2f}</figcaption></figure>"
            if img is not None
            else f"<figure><figcaption>{_e(e['key'])} (no thumbnail)</figcaption></figure>"
            for e, img in shown
        )
        parts.append(
            f'<div class="row" data-target="{t}"><span>correct {_e(label)} in your data ({t})</span>{figs}</div>'
        )
    return f'<div class="exemplars">{"".join(parts)}</div>'


def _card(item: TriageItem, tile: int) -> str:
    figures = "".join(
        f'<figure><img alt="{_e(cap)}" src="{_data_uri(img, tile)}"><figcaption>{_e(cap)}</figcaption></figure>'
        for cap, img in item.tiles()
    )
    lines = []
    for t in item.targets:
        s = item.scores[t]
        fell = ' <b class="bad" title="the accentuation lowered p">▼ p fell</b>' if s.get("p_fell") else ""
        lines.append(f"<span>toward {_e(s['label'])}: p {_pct(s['seed_prob'])} → {_pct(s['prob'])}{fell}</span>")
    badge = '<span class="badge">likely label error</span>' if item.likely_label_error else ""
    score = f"<span>label issue {item.label_issue:.2f}</span>" if item.label_issue is not None else ""
    return (
        f'<article class="card" data-index="{item.index}" data-label-issue="{item.label_issue or 0:.6f}" '
        f'data-margin="{item.p_predicted - item.p_true:.6f}" data-confidence="{item.p_predicted:.6f}" '
        f'data-true-rank="{item.true_rank}">'
        f'<header><span class="rank">#{item.rank}</span><span class="key">{_e(item.key)}</span>{badge}'
        f'<span>true: <b class="good">{_e(item.true_label)}</b> ({_pct(item.p_true)}, rank {item.true_rank})</span>'
        f'<span>predicted: <b class="bad">{_e(item.predicted_label)}</b> ({_pct(item.p_predicted)})</span>'
        f'{"".join(lines)}{score}</header><div class="tiles">{figures}</div>{_exemplar_rows(item)}</article>'
    )


_SORTS = (
    ("margin", "margin", "margin p(predicted) − p(true)"),
    ("confidence", "confidence", "confidence p(predicted)"),
    ("trueRank", "true_rank", "rank of the true class"),
    ("labelIssue", "label_issue", "label-issue score"),
    ("index", "index", "dataset order"),
)


def _sort_options(current: str) -> str:
    """The report's sort menu (in the page, without a reload): dataset keys of the cards' attributes."""
    return "".join(
        f'<option value="{key}"{" selected" if name == current else ""}>{_e(text)}</option>'
        for key, name, text in _SORTS
    )


def render_html(report: TriageReport, *, max_items: int | None, tile: int) -> str:
    s = report.summary
    fp = report.settings
    engine = fp.get("engine", {})
    model = fp.get("model", {}).get("name", "?")
    items = report.items if max_items is None else report.items[: max(0, int(max_items))]
    rule = {
        "margin": "p(predicted) − p(true), largest first",
        "confidence": "p(predicted), largest first",
        "true_rank": "rank of the true class, worst first",
        "label_issue": "label-issue score (likely label errors first)",
        "index": "dataset order",
    }[report.rank_by]
    setting_keys = ("preset", "steps", "n_crops", "input_size", "canvas", "lam", "reg_layer", "param", "seed")
    settings = ", ".join(f"{_e(k)} {_e(engine[k])}" for k in setting_keys if k in engine)
    confusions = "".join(
        f"<tr><td>{_e(t)}</td><td>→ {_e(p)}</td><td>{n}</td></tr>" for t, p, n in report.confusions(10)
    )
    shown = f"showing the first {len(items)}" if len(items) < len(report.items) else ""
    li = report.index.get("label_issues") or {}
    flagged = sum(1 for it in report.items if it.likely_label_error)
    label_line = (
        f"<div>Label issues: {_e(li.get('method'))}; {flagged} mistake(s) flagged “likely label error”. "
        f"{_e(li.get('note', ''))} {_e(li.get('caveat', ''))}</div>"
        if li
        else ""
    )
    cards = "".join(_card(item, tile) for item in items) or '<p class="muted">No mistakes.</p>'
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
<title>Triage: {_e(model)}</title><style>{_CSS}</style></head>
<body>
<h1>Dataset triage: {_e(model)}</h1>
<div class="muted">Feature accentuation of every mistake toward the predicted and the true class (faccent-widget).</div>
<div class="stats">
<div><b>{s["items"]}</b>images</div><div><b>{100 * s["accuracy"]:.1f}%</b>accuracy</div>
<div><b class="bad">{s["mistakes"]}</b>mistakes</div><div><b>{s["accentuated"]}</b>accentuated</div>
{f'<div><b class="bad">{len(unread)}</b>skipped</div>' if unread else ""}
</div>
<div>Ranked by {_e(rule)}{"; " + _e(shown) if shown else ""}. Masks: one collective normalisation over the
Grad-CAM maps of all mistakes. Settings: {settings}.</div>
{label_line}
<h2>Most frequent confusions</h2><table><tr><th>true</th><th>predicted</th><th>count</th></tr>{confusions}</table>
{skipped}
<h2>Mistakes</h2>
<label>Sort by <select id="sort">{_sort_options(report.rank_by)}</select></label>
<div class="cards">{cards}</div>
<script>{_SCRIPT}</script>
</body></html>
"""
