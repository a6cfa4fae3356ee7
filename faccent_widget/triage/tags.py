"""Tags and selection of a triage's mistakes: kept in the store, exported by the HTML report, imported back.

A mistake carries at most one tag: ``"label error"``, ``"model error"``, ``"ambiguous"`` (:data:`TAGS`)
or any other short text (a custom tag). The selection is a set of mistakes. Both live in the store's
``tags.json`` (keyed by item id, so they survive a resume and a rerun that adds files), written
atomically; a triage run never touches the file.

The HTML report keeps its edits in the browser's ``localStorage`` and exports them as a tags file, JSON
(``{"format": "faccent-widget/triage/tags", "items": [{"id", "key", "tag", "selected", ...}]}``) or CSV
(a header row with at least ``id`` or ``key``, ``tag`` and ``selected``); :func:`read_tags_file` reads
both, :func:`write_tags_file` writes them the same way.

A CSV text cell that a spreadsheet would run as a formula (it starts with ``=``, ``+``, ``-``, ``@``, a tab
or a carriage return, OWASP's list; labels and tags come from folder names and typing) is written with a
single quote in front (:func:`csv_guard`), and read back without it (:func:`csv_unguard`): a label
``=HYPERLINK(…)`` opens as text, and imports as it was.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .store import FORMAT, TriageStoreError, atomic_write_bytes, atomic_write_json

__all__ = [
    "COLUMNS",
    "TAGS",
    "TAGS_FORMAT",
    "TagBook",
    "as_rows",
    "check_tag",
    "csv_guard",
    "csv_unguard",
    "read_tags_file",
    "write_tags_file",
]

#: The tags offered everywhere; any other short text is a custom tag.
TAGS = ("label error", "model error", "ambiguous")
TAGS_FORMAT = FORMAT + "/tags"
MAX_TAG = 64
#: The columns of the rows ``report.tags`` / ``report.selected`` return, and of an exported CSV.
COLUMNS = (
    "id",
    "key",
    "index",
    "rank",
    "true_label",
    "predicted_label",
    "p_true",
    "p_predicted",
    "margin",
    "label_issue",
    "likely_label_error",
    "tag",
    "selected",
)


#: A cell a spreadsheet reads as a formula: one of OWASP's trigger characters first, after any single
#: quotes (a quote is added to those too, so that reading strips exactly the one the writer added).
_FORMULA = re.compile(r"'*[=+\-@\t\r]")


def csv_guard(value: Any) -> Any:
    """A CSV cell that no spreadsheet runs as a formula: text starting with ``=``, ``+``, ``-``, ``@``, a
    tab or a carriage return gets a single quote in front; numbers, booleans and other text as they are."""
    return "'" + value if isinstance(value, str) and _FORMULA.match(value) else value


def csv_unguard(value: str) -> str:
    """The text of a cell :func:`csv_guard` wrote: its single quote removed (other cells as they are)."""
    return value[1:] if value.startswith("'") and _FORMULA.match(value, 1) else value


def check_tag(tag: Any) -> str | None:
    """``tag`` stripped, or None for no tag (``None`` or an empty string); a clear error otherwise."""
    if tag is None:
        return None
    if not isinstance(tag, str):
        raise TypeError(f"a tag must be a string ({', '.join(TAGS)} or your own) or None, got {type(tag).__name__}")
    text = " ".join(tag.split())
    if len(text) > MAX_TAG:
        raise ValueError(f"a tag is at most {MAX_TAG} characters, got {len(text)}: {text[:20]!r}…")
    return text or None


class TagBook:
    """The tags and selection of one store (``<out>/tags.json``); every change is saved at once."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.path = Path(root) / "tags.json"
        self.tags: dict[str, str] = {}
        self.selected: set[str] = set()
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise TriageStoreError(
                    f"the tags file {self.path} is damaged ({exc}); delete it to start over"
                ) from None
            if not isinstance(data, dict) or data.get("format") != TAGS_FORMAT:
                raise TriageStoreError(f"{self.path} is not a faccent-widget triage tags file")
            self.tags = {str(k): str(v) for k, v in dict(data.get("tags", {})).items()}
            self.selected = {str(i) for i in data.get("selected", [])}

    def save(self) -> None:
        if not self.path.parent.is_dir():
            raise FileNotFoundError(f"no triage store at {self.path.parent}; tags are kept in the store")
        atomic_write_json(
            self.path,
            {
                "format": TAGS_FORMAT,
                "version": 1,
                "tags": dict(sorted(self.tags.items())),
                "selected": sorted(self.selected),
            },
        )

    def set(self, item_id: str, tag: Any) -> None:
        """Tag ``item_id`` (None or "" removes its tag) and save."""
        text = check_tag(tag)
        if text is None:
            self.tags.pop(item_id, None)
        else:
            self.tags[item_id] = text
        self.save()

    def select(self, item_ids: Iterable[str], selected: bool = True) -> None:
        """Add ``item_ids`` to the selection (or remove them) and save."""
        ids = set(item_ids)
        self.selected = self.selected | ids if selected else self.selected - ids
        self.save()

    def update(self, entries: Iterable[Mapping[str, Any]]) -> None:
        """Set the tag and selection of each entry (``id``, ``tag``, ``selected``) and save once."""
        for e in entries:
            i, text = str(e["id"]), check_tag(e.get("tag"))
            if text is None:
                self.tags.pop(i, None)
            else:
                self.tags[i] = text
            if e.get("selected") is not None:
                (self.selected.add if e["selected"] else self.selected.discard)(i)
        self.save()


def _truthy(value: Any) -> bool | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "y", "x"):
        return True
    if text in ("0", "false", "no", "n"):
        return False
    raise ValueError(f"selected must be true/false (or 1/0), got {value!r}")


def read_tags_file(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The entries of a tags file exported by the HTML report (JSON or CSV): ``id`` and/or ``key``,
    ``tag`` (None for none) and ``selected`` (None when the file does not say)."""
    p = Path(path)
    text = p.read_text(encoding="utf-8-sig")
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"{p} is not valid JSON ({exc}); expected a tags file exported by the report") from None
        if not isinstance(data, dict) or data.get("format") != TAGS_FORMAT or not isinstance(data.get("items"), list):
            raise ValueError(f"{p} is not a faccent-widget tags file (expected format {TAGS_FORMAT!r} with items)")
        rows: list[Mapping[str, Any]] = [r for r in data["items"] if isinstance(r, dict)]
    else:
        reader = csv.DictReader(io.StringIO(text))
        fields = set(reader.fieldnames or ())
        if not ({"id", "key"} & fields) or "tag" not in fields:
            raise ValueError(f"{p}: a tags CSV needs a header with id (or key) and tag columns, got {sorted(fields)}")
        rows = [{k: csv_unguard(v) if isinstance(v, str) else v for k, v in r.items()} for r in reader]
    out = []
    for r in rows:
        if not (r.get("id") or r.get("key")):
            continue
        out.append(
            {
                "id": str(r["id"]) if r.get("id") else None,
                "key": str(r["key"]) if r.get("key") else None,
                "tag": check_tag(r.get("tag") or None),
                "selected": _truthy(r.get("selected")),
            }
        )
    return out


def write_tags_file(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]], report_id: str = "") -> Path:
    """Write ``rows`` (dicts with :data:`COLUMNS`) as the HTML report exports them: CSV when ``path``
    ends in ``.csv``, JSON otherwise."""
    p = Path(path)
    if p.suffix.lower() == ".csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(COLUMNS), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: csv_guard(v) for k, v in r.items()} for r in rows)
        atomic_write_bytes(p, buf.getvalue().encode("utf-8"))
    else:
        data = {"format": TAGS_FORMAT, "version": 1, "report": report_id, "items": [dict(r) for r in rows]}
        atomic_write_json(p, data)
    return p


def as_rows(rows: list[dict[str, Any]]) -> Any:
    """``rows`` as a pandas DataFrame (columns :data:`COLUMNS`) when pandas is installed, else as is."""
    try:
        import pandas as pd  # type: ignore[import-untyped, import-not-found, unused-ignore]
    except ImportError:
        return rows
    return pd.DataFrame(rows, columns=list(COLUMNS))
