"""``TriageBrowser``: browse a :class:`~faccent_widget.triage.report.TriageReport` in a notebook.

Plain ipywidgets (works wherever ipywidgets do): a grid of the ranked mistakes, a page at a time;
clicking one shows it large (seed, masks and masked accentuations, probabilities), and a button
opens it in a live :class:`~faccent_widget.FaccentWidget` for that image with its true label. Labels
are shown through text-only widgets (``Label``, ``Button`` descriptions); ``HTML`` widgets only ever
get text passed through ``html.escape``.
"""

from __future__ import annotations

import html

import ipywidgets as widgets

from ..core.model import Model
from ..widget import FaccentWidget  # the one application → application edge: triage.browser → widget
from ..zoo import available_models, load_model
from .decode import jpeg_thumbnail
from .report import TriageItem, TriageReport

__all__ = ["TriageBrowser"]


class TriageBrowser(widgets.VBox):
    """A grid of a triage report's mistakes; click one to open it large or in a ``FaccentWidget``.

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
        s = report.summary
        name = report.settings.get("model", {}).get("name", "?")
        header = widgets.HTML(
            f"<b>Dataset triage: {html.escape(str(name))}</b> — {s['items']} images, accuracy "
            f"{100 * s['accuracy']:.1f}%, {s['mistakes']} mistakes, ranked by {html.escape(report.rank_by)}"
        )
        self.grid = widgets.GridBox(
            layout=widgets.Layout(grid_template_columns="repeat(auto-fill, 196px)", grid_gap="8px")
        )
        self.prev_button = widgets.Button(description="◀ previous", layout=widgets.Layout(width="110px"))
        self.next_button = widgets.Button(description="next ▶", layout=widgets.Layout(width="110px"))
        self.page_label = widgets.Label()
        self.prev_button.on_click(lambda _: self.show_page(self.page - 1))
        self.next_button.on_click(lambda _: self.show_page(self.page + 1))
        self.detail = widgets.VBox(layout=widgets.Layout(border="1px solid #d9dce1", padding="6px", display="none"))
        self.cards: list[widgets.Button] = []
        super().__init__(
            [header, widgets.HBox([self.prev_button, self.page_label, self.next_button]), self.grid, self.detail]
        )
        self.show_page(0)

    @property
    def pages(self) -> int:
        return max(1, -(-len(self.report) // self.page_size))

    def show_page(self, page: int) -> None:
        """Show grid page ``page`` (0-based, clipped to the valid range)."""
        self.page = max(0, min(int(page), self.pages - 1))
        start = self.page * self.page_size
        items = list(self.report)[start : start + self.page_size]
        cells = []
        self.cards = []
        for item in items:
            image = widgets.Image(
                value=jpeg_thumbnail(item.seed, 176, 88),
                format="jpeg",
                layout=widgets.Layout(width="188px", height="auto"),
            )
            button = widgets.Button(
                description=f"#{item.rank}  open",
                tooltip=f"{item.key}: open it large",
                layout=widgets.Layout(width="188px"),
            )
            button.on_click(lambda _, it=item: self.select(it))
            self.cards.append(button)
            cells.append(
                widgets.VBox(
                    [
                        image,
                        widgets.Label(
                            f"true: {item.true_label}", tooltip=item.key, layout=widgets.Layout(width="188px")
                        ),
                        widgets.Label(
                            f"predicted: {item.predicted_label} ({100 * item.p_predicted:.0f}%)",
                            layout=widgets.Layout(width="188px"),
                        ),
                        *([widgets.Label("⚠ likely label error")] if item.likely_label_error else []),
                        button,
                    ]
                )
            )
        if not cells:
            cells = [widgets.Label("No mistakes.")]
        self.grid.children = cells
        self.page_label.value = f"page {self.page + 1} / {self.pages}"
        self.prev_button.disabled = self.page == 0
        self.next_button.disabled = self.page >= self.pages - 1

    def select(self, item: TriageItem | int) -> None:
        """Show ``item`` (a :class:`TriageItem`, or its 0-based position in the report) large."""
        if isinstance(item, int):
            item = self.report[item]
        self.selected = item
        self.faccent = None
        tiles = []
        for caption, image in item.tiles():
            tiles.append(
                widgets.VBox(
                    [
                        widgets.Image(
                            value=jpeg_thumbnail(image, 320, 88),
                            format="jpeg",
                            layout=widgets.Layout(height="240px", width="auto"),
                        ),
                        widgets.HTML(
                            f'<div style="white-space:normal;line-height:1.3;max-width:240px">'
                            f"{html.escape(caption)}</div>"
                        ),
                    ]
                )
            )
        lines = [
            widgets.Label(f"#{item.rank}  {item.key}"),
            widgets.Label(
                f"true: {item.true_label} ({100 * item.p_true:.1f}%, rank {item.true_rank})   "
                f"predicted: {item.predicted_label} ({100 * item.p_predicted:.1f}%)"
            ),
        ]
        if item.label_issue is not None:
            flag = "likely label error — " if item.likely_label_error else ""
            lines.append(widgets.Label(f"{flag}label-issue score {item.label_issue:.2f}"))
        for t in item.targets:
            sc = item.scores[t]
            before = "–" if sc["seed_prob"] is None else f"{100 * sc['seed_prob']:.1f}%"
            after = "–" if sc["prob"] is None else f"{100 * sc['prob']:.1f}%"
            lines.append(widgets.Label(f"accentuated toward {sc['label']} ({t}): {before} → {after}"))
        self.open_button = widgets.Button(
            description="Open in FaccentWidget", button_style="primary", layout=widgets.Layout(width="220px")
        )
        self.close_button = widgets.Button(description="Close", layout=widgets.Layout(width="90px"))
        self.message = widgets.Label()
        self.open_button.on_click(lambda _: self.open_faccent())
        self.close_button.on_click(lambda _: self.close_detail())
        self.detail.children = [
            *lines,
            widgets.HBox(tiles, layout=widgets.Layout(overflow="auto")),
            *self._exemplars(item),
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
            self.faccent = FaccentWidget(self._model(), item.seed, true_label=item.true_index, preset=preset)
        except (ValueError, RuntimeError) as exc:
            self.message.value = f"cannot open: {exc}"
            return None
        self.message.value = ""
        self.detail.children = [*self.detail.children, self.faccent]
        return self.faccent
