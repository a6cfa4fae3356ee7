"""The triage report that scales: tags and selection (store, resume, export/import), rows back in
Python, the filter and sort data of the HTML page, and the notebook browser's filters and tags.

Real model (the default EfficientNet-Lite0) and real images (the bundled samples), tiny settings.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import sys
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import pytest

import faccent_widget as fw
from faccent_widget.triage import TriageReport, build_demo_folder
from faccent_widget.triage.page import CSP, STYLE, page_data
from faccent_widget.triage.query import SORTS, p_fell, sort_items
from faccent_widget.triage.store import TriageStoreError
from faccent_widget.triage.tags import COLUMNS, csv_guard, csv_unguard, write_tags_file

FAST = dict(steps=3, n_crops=2, input_size=96, canvas=96, exemplars=1)


@pytest.fixture(scope="module")
def run(model: fw.Model, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The 7 labelled samples (4 or more are mistakes of the model), triaged once."""
    data = build_demo_folder(tmp_path_factory.mktemp("demo") / "images", variants=1, size=112)
    out = tmp_path_factory.mktemp("triage") / "out"
    report = fw.triage(model, data, out=out, **FAST)
    assert len(report) >= 3 and len({(it.true_label, it.predicted_label) for it in report}) >= 2
    return {"data": data, "out": out, "report": report}


def test_tags_and_selection_round_trip_through_the_store_and_resume(model: fw.Model, run: dict[str, Any]) -> None:
    report: TriageReport = TriageReport.load(run["out"])
    first, second = report[0], report[1]
    report.set_tag(first, "label error")
    report.set_tag(second.key, "  blurry   photo ")  # a custom tag, by file name; spaces normalised
    report.select(1, 2)
    assert report.tag_of(0) == "label error" and report.tag_of(second.id) == "blurry photo"
    again = TriageReport.load(run["out"])
    assert {it.id: again.tag_of(it) for it in again if again.tag_of(it)} == {
        first.id: "label error",
        second.id: "blurry photo",
    }
    assert again.book.selected == {report[1].id, report[2].id}
    # a rerun with the same settings resumes: nothing is redone, the tags stay
    resumed = fw.triage(model, run["data"], out=run["out"], **FAST)
    assert resumed.book.tags == again.book.tags and resumed.book.selected == again.book.selected
    assert json.loads((run["out"] / "tags.json").read_text())["tags"] == again.book.tags
    resumed.set_tag(first, None)  # removes the tag
    resumed.select(2, selected=False)
    assert TriageReport.load(run["out"]).book.tags == {second.id: "blurry photo"}
    assert TriageReport.load(run["out"]).book.selected == {report[1].id}
    with pytest.raises(TypeError, match="a tag must be a string"):
        resumed.set_tag(first, 3)
    with pytest.raises(KeyError, match="no mistake with id or file name 'nope.jpg'"):
        resumed.set_tag("nope.jpg", "ambiguous")
    resumed.clear_selection()
    for it in list(resumed):
        resumed.set_tag(it, None)
    (run["out"] / "tags.json").write_text("{broken")
    with pytest.raises(TriageStoreError, match="tags file .* is damaged"):
        _ = TriageReport.load(run["out"]).tags
    (run["out"] / "tags.json").unlink()


def test_selection_and_tags_are_rows_dataframe_or_dicts(run: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    import pandas as pd

    report = TriageReport.load(run["out"])
    report.set_tag(0, "model error")
    report.select(0, 1)
    try:
        tags, chosen = report.tags, report.selected
        assert isinstance(tags, pd.DataFrame) and list(tags.columns) == list(COLUMNS)
        assert tags["id"].tolist() == [report[0].id] and tags["tag"].tolist() == ["model error"]
        assert chosen["key"].tolist() == [report[0].key, report[1].key] and chosen["selected"].all()
        assert chosen["tag"].tolist()[0] == "model error" and chosen["tag"].isna().tolist()[1]
        assert chosen["margin"].tolist() == pytest.approx([it.p_predicted - it.p_true for it in report[:2]])
        monkeypatch.setitem(sys.modules, "pandas", None)  # pandas not installed
        rows = report.selected
        assert isinstance(rows, list) and [r["id"] for r in rows] == chosen["id"].tolist()
        assert set(rows[0]) == set(COLUMNS) and rows[0]["tag"] == "model error" and rows[1]["tag"] is None
    finally:
        report.set_tag(0, None)
        report.clear_selection()


def test_exported_tags_files_import_back(run: dict[str, Any], tmp_path: Path) -> None:
    report = TriageReport.load(run["out"])
    report.set_tag(0, "ambiguous")
    report.set_tag(1, 'odd, "quoted" tag')
    report.select(1)
    paths = [report.export_tags(tmp_path / "tags.json"), report.export_tags(tmp_path / "tags.csv")]
    exported = json.loads(paths[0].read_text())
    assert exported["format"] == "faccent-widget/triage/tags" and len(exported["items"]) == 2
    for path in paths:
        report.set_tag(0, None)
        report.set_tag(1, None)
        report.clear_selection()
        assert report.import_tags(path) == 2
        fresh = TriageReport.load(run["out"])
        assert fresh.tag_of(0) == "ambiguous" and fresh.tag_of(1) == 'odd, "quoted" tag'
        assert fresh.book.selected == {report[1].id}
    # a CSV as the page writes it (True/False, keys only), with an entry of another report
    (tmp_path / "page.csv").write_text(
        f"key,tag,selected\n{report[2].key},label error,True\nother.jpg,ambiguous,False\n"
    )
    assert report.import_tags(tmp_path / "page.csv") == 1
    assert report.tag_of(2) == "label error" and report[2].id in report.book.selected
    (tmp_path / "bad.csv").write_text("name,label\na,b\n")
    with pytest.raises(ValueError, match="a tags CSV needs a header with id \\(or key\\) and tag"):
        report.import_tags(tmp_path / "bad.csv")
    (tmp_path / "bad.json").write_text('{"items": []}')
    with pytest.raises(ValueError, match="not a faccent-widget tags file"):
        report.import_tags(tmp_path / "bad.json")
    for i in range(3):
        report.set_tag(i, None)
    report.clear_selection()


def test_csv_export_neutralises_formulas_and_imports_them_back_unchanged(run: dict[str, Any], tmp_path: Path) -> None:
    """OWASP CSV injection: a text cell starting with = + - @ tab or CR gets a quote in front (so a
    spreadsheet shows it as text), numbers stay numbers, and import_tags strips the quote again."""
    report = TriageReport.load(run["out"])
    evil = {0: '=HYPERLINK("http://example.com/x","click")', 1: "@SUM(A1)", 2: "'+already quoted"}
    for i, tag in evil.items():
        report.set_tag(i, tag)
    try:
        path = report.export_tags(tmp_path / "tags.csv")
        cells = {r["id"]: r for r in csv.DictReader(io.StringIO(path.read_text(encoding="utf-8")))}
        for i, tag in evil.items():
            assert cells[report[i].id]["tag"] == "'" + tag
        assert all(not c["tag"].startswith(("=", "@", "+")) for c in cells.values())
        margins = [float(c["margin"]) for c in cells.values()]  # numbers unquoted, negative ones included
        assert margins == pytest.approx([it.p_predicted - it.p_true for it in report[:3]])
        for i in evil:
            report.set_tag(i, None)
        assert report.import_tags(path) == 3
        assert {i: TriageReport.load(run["out"]).tag_of(i) for i in evil} == evil
        # labels are guarded the same way (they come from folder names), and read back as they were
        row = {
            **dict.fromkeys(COLUMNS, ""),
            "id": "x",
            "true_label": "-cmd|' /C calc'!A0",
            "tag": "\tx",
            "margin": -0.5,
        }
        write_tags_file(tmp_path / "rows.csv", [row])
        (cell,) = csv.DictReader(io.StringIO((tmp_path / "rows.csv").read_text(encoding="utf-8")))
        assert (cell["true_label"], cell["tag"], cell["margin"]) == ("'-cmd|' /C calc'!A0", "'\tx", "-0.5")
        assert [csv_unguard(cell[k]) for k in ("true_label", "tag")] == [row["true_label"], row["tag"]]
        assert [csv_unguard(csv_guard(t)) for t in ("'", "''=x", "a=b", "")] == ["'", "''=x", "a=b", ""]
    finally:
        for i in evil:
            report.set_tag(i, None)


def test_page_data_carries_filter_and_sort_fields_and_the_csp_hashes(run: dict[str, Any]) -> None:
    report = TriageReport.load(run["out"])
    report.set_tag(0, "label error")
    try:
        data = page_data(report)
        assert [d["id"] for d in data["items"]] == [it.id for it in report]
        assert data["tags"] == {report[0].id: "label error"} and [k for k, _ in data["sorts"]] == list(SORTS)
        for d, it in zip(data["items"], report):
            assert d["margin"] == pytest.approx(it.p_predicted - it.p_true) and d["p_fell"] == p_fell(it)
            for t in it.targets:
                s = it.scores[t]
                assert d[f"gain_{t}"] == pytest.approx(s["prob"] - s["seed_prob"])
                assert d["masks"][t]["shape"] == list(it.gradcam[t].shape)
                grid = base64.b64decode(d["masks"][t]["values"])  # 8-bit, row-major
                expect = (it.masks[t].clamp(0, 1) * 255).round().flatten().tolist()
                assert list(grid) == expect
            assert all(src.startswith("data:image/jpeg;base64,") for src in d["images"].values())
        page = report.html()
        style = page.split("<style>", 1)[1].split("</style>", 1)[0]
        assert style == STYLE and "unsafe-inline" not in CSP
        assert f"style-src 'sha256-{base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()}'" in CSP
        # the Python side filters and sorts with the same keys
        label = report[0].true_label
        assert {it.true_label for it in report.filter(true=label)} == {label}
        assert [it.id for it in report.filter(tag="label error")] == [report[0].id]
        assert len(report.filter(tag="untagged")) == len(report) - 1
        assert report.filter(search=report[1].key.upper()) == [report[1]]
        assert report.filter(flag="fell") == [it for it in report if p_fell(it)]
        for key in SORTS:
            ranked = sort_items(list(report), key)
            assert sort_items(list(report), key, descending=False) == ranked[::-1]
        gains = [d["gain_predicted"] for d in sorted(data["items"], key=lambda d: -d["gain_predicted"])]
        assert [it.id for it in report.filter(sort="gain_predicted")][0] == next(
            d["id"] for d in data["items"] if d["gain_predicted"] == gains[0]
        )
        with pytest.raises(ValueError, match="sort must be one of margin"):
            report.filter(sort="nope")
    finally:
        report.set_tag(0, None)


def test_browser_filters_sorts_and_tags(run: dict[str, Any]) -> None:
    report = TriageReport.load(run["out"])
    browser = report.show(page_size=2)
    assert browser.pages == -(-len(report) // 2) and len(browser.cards) == 2
    t, p, n = report.confusions(1)[0]
    browser.pair_menu.value = (t, p)
    assert browser.true_menu.value == t and browser.predicted_menu.value == p
    assert len(browser.shown) == n and all((it.true_label, it.predicted_label) == (t, p) for it in browser.shown)
    browser.pair_menu.value = None
    browser.true_menu.value = browser.predicted_menu.value = None
    browser.search.value = report[1].key
    assert browser.shown == [report[1]] and "1–1 of 1 matching" in browser.status.value
    browser.search.value = ""
    browser.sort_menu.value = "confidence"
    assert [it.p_predicted for it in browser.shown] == sorted((it.p_predicted for it in report), reverse=True)
    browser.descending.value = False
    assert [it.p_predicted for it in browser.shown] == sorted(it.p_predicted for it in report)
    cell = browser.grid.children[0]
    menu = next(w for w in cell.children if getattr(w, "description", "") == "tag")
    menu.value = "model error"
    first = browser.shown[0]
    assert report.tag_of(first) == "model error" and browser.counts.value.startswith("1 tagged")
    browser.tag_menu.value = "model error"
    assert browser.shown == [first]
    browser.tag_menu.value = ""
    browser.select(first)
    browser.custom_tag.value = "needs a second look"
    next(w for w in browser.detail.children[-2].children if isinstance(w, widgets.Button)).click()
    assert TriageReport.load(run["out"]).tag_of(first.id) == "needs a second look"
    assert "needs a second look" in dict(browser.tag_menu.options).values()
    report.set_tag(first, None)
