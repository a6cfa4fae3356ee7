"""``TriageBrowser``: browse, filter, sort and tag a :class:`~faccent_widget.triage.report.TriageReport`
in a notebook.

Plain ipywidgets (works wherever ipywidgets do). A bar of filters (search by file name or label, true
class, predicted class, confusion pair, label-issue badge or failed accentuation, tag, selection) and
sorts (every key of :data:`.query.SORTS`, either direction), then the large view of the chosen mistake
(above the grid, so it is in sight), then a grid of the matching mistakes a page at a time: seed and
accentuation toward the predicted class, labels that wrap, a tag menu and a select box. Images are
read from the store when a page or an item is shown. The large view has the seed, per target the mask
("where"), the masked accentuation and its change from the seed, the natural exemplars, the tag (with
your own text) and a button that opens the image in a live :class:`~faccent_widget.FaccentWidget`.

Tags and selection go to the store at once (``report.tags``, ``report.selected``). Labels are shown
through text-only widgets (``Label``, ``Button`` descriptions, menu options) or ``HTML`` widgets that
only ever get text passed through ``html.escape``.
"""

from __future__ import annotations

import html

import ipywidgets as widgets
import torch

from ..core.model import Model
from ..widget import FaccentWidget  # the one application → application edge: triage.browser → widget
from ..zoo import available_models, load_model
from .decode import jpeg_thumbnail
from .query import FLAGS, SORTS
from .report import TriageItem, TriageReport
from .tags import TAGS

__all__ = ["TriageBrowser"]

_NONE = "—"


def _text(value: str, width: str = "188px", size: str = "13px") -> widgets.HTML:
    """Text that wraps instead of being cut off (escaped: never parsed as markup)."""
    return widgets.HTML(
        f'<div style="white-space:normal;overflow-wrap:anywhere;line-height:1.3;font-size:{size}">'
        f"{html.escape(value)}</div>",
        layout=widgets.Layout(width=width),
    )


def _pct(p: float | None) -> str:
    return "–" if p is None else f"{100 * p:.1f}%"


class TriageBrowser(widgets.VBox):
    """Filter, sort, page through and tag a triage report's mistakes; open one large or in a ``FaccentWidget``.

    Args:
        report: the :class:`TriageReport`.
        model: the model for ``FaccentWidget`` (default: load the triage's model by name when it is
            one of ``fw.available_models()``).
        page_size: mistakes per page of the grid.
    """

    def __init__(self, report: TriageReport, model: Model | None = None, *, page_size: int = 12) -> None:
        if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
            raise ValueError(f"page_size must be a positive int, got {page_size!r}")
        self.report = report
        self.model = model
        self.page_size = page_size
        self.page = 0
        self.selected: TriageItem | None = None
        self.faccent: FaccentWidget | None = None
        self.shown: list[TriageItem] = list(report)
        self._quiet = False
        s = report.summary
        name = report.settings.get("model", {}).get("name", "?")
        header = widgets.HTML(
            f"<b>Dataset triage: {html.escape(str(name))}</b> — {s['items']} images, accuracy "
            f"{100 * s['accuracy']:.1f}%, {s['mistakes']} mistakes, ranked by {html.escape(report.rank_by)}"
        )
        trues = sorted({it.true_label for it in report})
        preds = sorted({it.predicted_label for it in report})
        w = widgets.Layout
        self.search = widgets.Text(placeholder="file name or label", description="search", layout=w(width="240px"))
        self.true_menu = widgets.Dropdown(options=[("any", None), *[(t, t) for t in trues]], description="true")
        self.predicted_menu = widgets.Dropdown(
            options=[("any", None), *[(p, p) for p in preds]], description="predicted"
        )
        self.pair_menu = widgets.Dropdown(
            options=[("any", None), *[(f"{t} → {p} ({n})", (t, p)) for t, p, n in report.confusions(10**9)]],
            description="pair",
        )
        self.flag_menu = widgets.Dropdown(options=[(v, k) for k, v in FLAGS.items()], description="show")
        self.tag_menu = widgets.Dropdown(description="tag")
        self.only_selected = widgets.Checkbox(description="selected only", indent=False, layout=w(width="130px"))
        self.sort_menu = widgets.Dropdown(
            options=[(v, k) for k, v in SORTS.items()],
            value=report.rank_by if report.rank_by in SORTS else "margin",
            description="sort by",
        )
        self.descending = widgets.ToggleButton(value=True, description="worst first", layout=w(width="110px"))
        self.prev_button = widgets.Button(description="◀ previous", layout=w(width="110px"))
        self.next_button = widgets.Button(description="next ▶", layout=w(width="110px"))
        self.page_label = widgets.Label()
        self.status = widgets.Label()
        self.counts = widgets.Label()
        select_all = widgets.Button(description="select all matching", layout=w(width="170px"))
        clear = widgets.Button(description="clear selection", layout=w(width="130px"))
        self.prev_button.on_click(lambda _: self.show_page(self.page - 1))
        self.next_button.on_click(lambda _: self.show_page(self.page + 1))
        select_all.on_click(lambda _: self._select_all())
        clear.on_click(lambda _: self._clear_selection())
        self._fill_tag_menu()
        self.pair_menu.observe(self._on_pair, "value")
        for control in (self.search, self.true_menu, self.predicted_menu, self.flag_menu, self.tag_menu):
            control.observe(lambda _: self.apply(), "value")
        for control in (self.only_selected, self.sort_menu, self.descending):
            control.observe(lambda _: self.apply(), "value")
        self.detail = widgets.VBox(layout=w(border="1px solid #d9dce1", padding="6px", display="none"))
        self.grid = widgets.GridBox(layout=w(grid_template_columns="repeat(auto-fill, 200px)", grid_gap="8px"))
        self.cards: list[widgets.Button] = []
        bar = widgets.VBox(
            [
                widgets.HBox(
                    [self.search, self.true_menu, self.predicted_menu, self.pair_menu], layout=w(flex_flow="row wrap")
                ),
                widgets.HBox([self.flag_menu, self.tag_menu, self.only_selected], layout=w(flex_flow="row wrap")),
                widgets.HBox(
                    [self.sort_menu, self.descending, self.prev_button, self.page_label, self.next_button, self.status],
                    layout=w(flex_flow="row wrap"),
                ),
                widgets.HBox([self.counts, select_all, clear], layout=w(flex_flow="row wrap")),
            ]
        )
        super().__init__([header, bar, self.detail, self.grid])
        self.apply()

    # ------------------------------------------------------------------ filters
    def _fill_tag_menu(self) -> None:
        custom = sorted(set(self.report.book.tags.values()) - set(TAGS))
        options = [("any", ""), ("tagged", "tagged"), ("untagged", "untagged"), *[(t, t) for t in (*TAGS, *custom)]]
        if list(self.tag_menu.options) != options:
            value = self.tag_menu.value
            self.tag_menu.options = options
            self.tag_menu.value = value if value in dict(options).values() else ""

    def _on_pair(self, change: dict) -> None:
        pair = change["new"]
        if pair is not None:
            self._quiet = True
            try:
                self.true_menu.value, self.predicted_menu.value = pair
            finally:
                self._quiet = False
        self.apply()

    def apply(self) -> None:
        """Filter and sort the report by the bar's controls and show the first page."""
        if self._quiet:
            return
        self.shown = self.report.filter(
            sort=self.sort_menu.value,
            descending=self.descending.value,
            true=self.true_menu.value,
            predicted=self.predicted_menu.value,
            flag=self.flag_menu.value,
            tag=self.tag_menu.value,
            search=self.search.value,
            only_selected=self.only_selected.value,
        )
        self.descending.description = "worst first" if self.descending.value else "reversed"
        self.show_page(0)

    def _counts(self) -> None:
        book = self.report.book
        self.counts.value = f"{len(book.tags)} tagged · {len(book.selected)} selected"

    def _select_all(self) -> None:
        self.report.select(*self.shown)
        self.show_page(self.page)

    def _clear_selection(self) -> None:
        self.report.clear_selection()
        self.show_page(self.page)

    # ------------------------------------------------------------------ grid
    @property
    def pages(self) -> int:
        return max(1, -(-len(self.shown) // self.page_size))

    def _tag_control(self, item: TriageItem, width: str = "188px") -> widgets.Dropdown:
        custom = sorted(set(self.report.book.tags.values()) - set(TAGS))
        menu = widgets.Dropdown(
            options=[(_NONE, ""), *[(t, t) for t in (*TAGS, *custom)]],
            value=self.report.tag_of(item) or "",
            description="tag",
            layout=widgets.Layout(width=width),
        )
        menu.observe(lambda ch, it=item: self.tag(it, ch["new"]), "value")
        return menu

    def tag(self, item: TriageItem | int | str, tag: str | None) -> None:
        """Tag ``item`` (None or "" removes the tag); saved in the store."""
        self.report.set_tag(item, tag)
        self._fill_tag_menu()
        self._counts()

    def _pick(self, item: TriageItem, on: bool) -> None:
        self.report.select(item, selected=on)
        self._counts()

    def _custom_tag(self, item: TriageItem) -> None:
        self.tag(item, self.custom_tag.value)
        self.select(item)

    def show_page(self, page: int) -> None:
        """Show grid page ``page`` (0-based, clipped to the valid range) of the matching mistakes."""
        self.page = max(0, min(int(page), self.pages - 1))
        start = self.page * self.page_size
        items = self.shown[start : start + self.page_size]
        cells = []
        self.cards = []
        book = self.report.book
        for item in items:
            thumbs = widgets.HBox(
                [
                    widgets.Image(value=jpeg_thumbnail(img, 92, 85), format="jpeg", layout=widgets.Layout(width="94px"))
                    for img in (item.seed, item.masked("predicted") if "predicted" in item.targets else item.seed)
                ]
            )
            button = widgets.Button(
                description=f"#{item.rank}  open",
                tooltip=f"{item.key}: open it large",
                layout=widgets.Layout(width="188px"),
            )
            button.on_click(lambda _, it=item: self.select(it))
            self.cards.append(button)
            pick = widgets.Checkbox(value=item.id in book.selected, description="select", indent=False)
            pick.observe(lambda ch, it=item: self._pick(it, ch["new"]), "value")
            flags = ["⚠ likely label error"] if item.likely_label_error else []
            cells.append(
                widgets.VBox(
                    [
                        thumbs,
                        _text(f"true: {item.true_label} ({_pct(item.p_true)})"),
                        _text(f"predicted: {item.predicted_label} ({_pct(item.p_predicted)})"),
                        *[widgets.Label(f) for f in flags],
                        self._tag_control(item),
                        pick,
                        button,
                    ],
                    layout=widgets.Layout(border="1px solid #d9dce1", padding="4px"),
                )
            )
        self.grid.children = cells or [widgets.Label("No mistake matches these filters.")]
        self.page_label.value = f"page {self.page + 1} / {self.pages}"
        lo = start + 1 if items else 0
        self.status.value = f"{lo}–{start + len(items)} of {len(self.shown)} matching ({len(self.report)} mistakes)"
        self.prev_button.disabled = self.page == 0
        self.next_button.disabled = self.page >= self.pages - 1
        self._counts()

    # ------------------------------------------------------------------ large view
    def _tile(self, caption: str, image: torch.Tensor) -> widgets.VBox:
        """A fixed 200 px box (portrait and landscape alike) with its caption wrapped below."""
        box = widgets.Layout(width="200px", height="200px", object_fit="contain")
        return widgets.VBox(
            [
                widgets.Image(value=jpeg_thumbnail(image, 320, 88), format="jpeg", layout=box),
                _text(caption, "200px", "12px"),
            ],
            layout=widgets.Layout(flex="0 0 auto", width="204px"),
        )

    def select(self, item: TriageItem | int) -> None:
        """Show ``item`` (a :class:`TriageItem`, or its 0-based position in the report) large, above the grid."""
        if isinstance(item, int):
            item = self.report[item]
        self.selected = item
        self.faccent = None
        seed = item.seed
        tiles = [self._tile(caption, image) for caption, image in item.tiles()]
        for t in item.targets:
            change = (item.masked(t) - seed).abs()
            change = change / change.max().clamp_min(1e-6)
            tiles.append(self._tile(f"change toward {item.scores[t]['label']} ({t}), largest = white", change))
        lines = [
            _text(f"#{item.rank}  {item.key}", width="auto"),
            _text(
                f"true: {item.true_label} ({_pct(item.p_true)}, rank {item.true_rank})   "
                f"predicted: {item.predicted_label} ({_pct(item.p_predicted)})",
                width="auto",
            ),
        ]
        if item.label_issue is not None:
            flag = "likely label error — " if item.likely_label_error else ""
            lines.append(widgets.Label(f"{flag}label-issue score {item.label_issue:.2f}"))
        for t in item.targets:
            sc = item.scores[t]
            fell = sc["prob"] is not None and sc["seed_prob"] is not None and sc["prob"] < sc["seed_prob"]
            note = "  ⚠ p fell: this accentuation failed" if fell else ""
            lines.append(
                widgets.Label(
                    f"accentuated toward {sc['label']} ({t}): {_pct(sc['seed_prob'])} → {_pct(sc['prob'])}{note}"
                )
            )
        self.open_button = widgets.Button(
            description="Open in FaccentWidget", button_style="primary", layout=widgets.Layout(width="220px")
        )
        self.close_button = widgets.Button(description="Close", layout=widgets.Layout(width="90px"))
        self.custom_tag = widgets.Text(placeholder="your own tag", layout=widgets.Layout(width="160px"))
        set_custom = widgets.Button(description="tag", layout=widgets.Layout(width="60px"))
        set_custom.on_click(lambda _, it=item: self._custom_tag(it))
        self.message = widgets.Label()
        self.open_button.on_click(lambda _: self.open_faccent())
        self.close_button.on_click(lambda _: self.close_detail())
        self.detail.children = [
            *lines,
            widgets.HBox(tiles, layout=widgets.Layout(overflow="auto")),
            *self._exemplars(item),
            widgets.HBox([self._tag_control(item, "240px"), self.custom_tag, set_custom]),
            widgets.HBox([self.open_button, self.close_button, self.message]),
        ]
        self.detail.layout.display = "flex"

    def _exemplars(self, item: TriageItem) -> list[widgets.Widget]:
        """Per target, a row of the nearest correctly classified images of that class in the data."""
        rows: list[widgets.Widget] = []
        for t, label, shown in item.exemplar_groups():
            if not shown:
                rows.append(widgets.Label(f"no correctly classified {label} ({t}) in your data"))
                continue
            thumbs = [
                widgets.Image(
                    value=jpeg_thumbnail(img, 96, 88), format="jpeg", layout=widgets.Layout(height="72px", width="auto")
                )
                for _, img in shown
                if img is not None
            ]
            rows.append(widgets.HBox([widgets.Label(f"correct {label} in your data ({t}):"), *thumbs]))
        return rows

    def close_detail(self) -> None:
        """Hide the large view."""
        self.selected = None
        self.faccent = None
        self.detail.children = []
        self.detail.layout.display = "none"

    def _model(self) -> Model:
        if self.model is None:
            name = self.report.settings.get("model", {}).get("name")
            if name not in available_models():
                raise ValueError(
                    f"the triage's model {name!r} cannot be loaded by name; pass it: report.show(model=...)"
                )
            self.model = load_model(name)
        return self.model

    def open_faccent(self) -> FaccentWidget | None:
        """Open the selected mistake in a ``FaccentWidget`` (with its true label) below the large view."""
        if self.selected is None:
            raise RuntimeError("select a mistake first")
        item = self.selected
        try:
            preset = self.report.settings.get("engine", {}).get("preset")
            # the full image where its file is still there: the panel's numbers are then the report's
            image = item.source if item.source is not None else item.seed
            self.faccent = FaccentWidget(self._model(), image, true_label=item.true_index, preset=preset)
        except (ValueError, RuntimeError) as exc:
            self.message.value = f"cannot open: {exc}"
            return None
        self.message.value = ""
        self.detail.children = [*self.detail.children, self.faccent]
        return self.faccent
