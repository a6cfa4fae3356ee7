"""Tags, selection and filters of a triage report (mixed into :class:`~.report.TriageReport`).

Tags and the selection live in the store (:class:`.tags.TagBook`, ``<out>/tags.json``); the rows that
``report.tags`` and ``report.selected`` return have the columns :data:`.tags.COLUMNS`; filters and sorts
are those of :mod:`.query` (the same as the HTML page's and the notebook browser's).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .query import filter_items, item_facts, sort_items
from .tags import TagBook, as_rows, read_tags_file, write_tags_file

if TYPE_CHECKING:
    from .report import TriageItem

__all__ = ["TagsAndSelection"]


class TagsAndSelection:
    """Tagging, selecting, exporting/importing tags and filtering the mistakes of a report."""

    root: Path
    index: dict[str, Any]
    items: list[TriageItem]
    _book: TagBook | None = None

    # ------------------------------------------------------------------ tags and selection
    @property
    def book(self) -> TagBook:
        """The store's tags and selection (``<out>/tags.json``), read once per report."""
        if self._book is None:
            self._book = TagBook(self.root)
        return self._book

    def _find(self, item: TriageItem | int | str) -> TriageItem:
        from .report import TriageItem  # the report module imports this one

        if isinstance(item, TriageItem):
            return item
        if isinstance(item, int) and not isinstance(item, bool):
            return self.items[item]
        if isinstance(item, str):
            for it in self.items:
                if item in (it.id, it.key):
                    return it
            raise KeyError(f"no mistake with id or file name {item!r} in this report")
        raise TypeError(f"an item is a TriageItem, its position (int) or its id / file name (str), got {item!r}")

    def tag_of(self, item: TriageItem | int | str) -> str | None:
        """The tag of ``item`` (None when untagged)."""
        return self.book.tags.get(self._find(item).id)

    def set_tag(self, item: TriageItem | int | str, tag: str | None) -> None:
        """Tag ``item`` (a :class:`TriageItem`, its position, id or file name) with ``"label error"``,
        ``"model error"``, ``"ambiguous"`` or your own text; None removes the tag. Saved in the store."""
        self.book.set(self._find(item).id, tag)

    def select(self, *items: TriageItem | int | str, selected: bool = True) -> None:
        """Add ``items`` to the selection (``selected=False``: remove them). Saved in the store."""
        self.book.select([self._find(i).id for i in items], selected)

    def clear_selection(self) -> None:
        self.book.select(list(self.book.selected), False)

    def rows(self, items: list[TriageItem] | None = None) -> list[dict]:
        """One dict per item (default: every mistake in rank order) with :data:`.tags.COLUMNS`."""
        book = self.book
        return [
            {
                "id": it.id,
                "key": it.key,
                "index": it.index,
                "rank": it.rank,
                "true_label": it.true_label,
                "predicted_label": it.predicted_label,
                "p_true": it.p_true,
                "p_predicted": it.p_predicted,
                "margin": item_facts(it)["margin"],
                "label_issue": it.label_issue,
                "likely_label_error": it.likely_label_error,
                "tag": book.tags.get(it.id),
                "selected": it.id in book.selected,
            }
            for it in (self.items if items is None else items)
        ]

    @property
    def tags(self) -> Any:
        """The tagged mistakes as rows (a pandas DataFrame when pandas is installed, else a list of dicts)."""
        return as_rows(self.rows([it for it in self.items if it.id in self.book.tags]))

    @property
    def selected(self) -> Any:
        """The selected mistakes as rows (a pandas DataFrame when pandas is installed, else a list of dicts)."""
        return as_rows(self.rows([it for it in self.items if it.id in self.book.selected]))

    def import_tags(self, path: str | os.PathLike) -> int:
        """Import a tags file the HTML report exported (JSON or CSV): tags and selection of this
        report's mistakes, matched by id (else by file name), saved in the store. Returns how many
        entries matched; entries of other mistakes are ignored."""
        by_id = {it.id: it for it in self.items}
        by_key = {it.key: it for it in self.items}
        matched = []
        for e in read_tags_file(path):
            it = by_id.get(e["id"] or "") or by_key.get(e["key"] or "")
            if it is not None:
                matched.append({**e, "id": it.id})
        self.book.update(matched)
        return len(matched)

    def export_tags(self, path: str | os.PathLike) -> Path:
        """Write the tagged or selected mistakes as the HTML report exports them (CSV for ``.csv``, else JSON)."""
        book = self.book
        rows = self.rows([it for it in self.items if it.id in book.tags or it.id in book.selected])
        return write_tags_file(path, rows, self.report_id)

    @property
    def report_id(self) -> str:
        """A short digest of the store's settings and root (the HTML report's ``localStorage`` key)."""
        text = json.dumps([str(self.root.resolve()), self.index.get("fingerprint")], sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def filter(self, *, sort: str | None = None, descending: bool = True, **criteria: Any) -> list[TriageItem]:
        """The mistakes that match ``criteria`` (see :func:`.query.filter_items`: ``true``,
        ``predicted``, ``flag``, ``tag``, ``search``, ``only_selected``), sorted by ``sort`` (a key of
        :data:`.query.SORTS`; default: the report's order)."""
        items = self.items if sort is None else sort_items(self.items, sort, descending=descending)
        return filter_items(items, tags=self.book.tags, selected=self.book.selected, **criteria)
