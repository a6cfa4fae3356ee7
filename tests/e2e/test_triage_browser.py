"""End to end in Chromium: the triage HTML report (offline, labels escaped, no console errors) and the
notebook browser (``report.show()``) in JupyterLab, down to opening a mistake in ``FaccentWidget``.

Screenshots go to ``test-output/e2e/triage-*.png`` (gitignored). Chromium comes from Debian
(``/usr/bin/chromium``; ``.ci/run`` installs it); a missing Chromium is a failure, not a skip.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import nbformat
import pytest
from test_browser import CHROMIUM, CHROMIUM_ARGS, JS_KERNEL_IDLE, OUT, _require_chromium, jupyter_server

import faccent_widget as fw
from faccent_widget.triage import build_demo_folder
from faccent_widget.triage.store import TriageStore

pytestmark = pytest.mark.e2e

EVIL = "<img src=x onerror=alert(1)>"
#: a custom tag a spreadsheet would run (OWASP CSV injection), with a comma and quotes to escape as well
FORMULA_TAG = '=HYPERLINK("http://example.com/x","odd, crop")'
FAST = dict(steps=3, n_crops=2, input_size=96, canvas=96)


def _evil_report(tmp_path: Path) -> fw.TriageReport:
    model = fw.load_model()
    labels = list(model.labels)
    labels[657] = EVIL  # "missile", the rocket's true class
    evil = fw.Model(
        model.module,
        labels=labels,
        mean=model.mean,
        std=model.std,
        input_size=model.input_size,
        name="<script>alert(2)</script>",
    )
    for name, folder in (("rocket", EVIL), ("china", "palace"), ("coffee", "espresso")):
        path = tmp_path / "data" / folder / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fw.to_pil(fw.sample_image(name, size=128)).save(path)
    return fw.triage(evil, tmp_path / "data", out=tmp_path / "out", **FAST)


def test_html_report_in_chromium(tmp_path: Path) -> None:
    _require_chromium()
    from playwright.sync_api import sync_playwright

    report = _evil_report(tmp_path)
    page_path = report.to_html(tmp_path / "report.html")
    problems: list[str] = []
    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on(
                "console",
                lambda m: problems.append(f"console.{m.type}: {m.text}") if m.type in ("error", "warning") else None,
            )
            page.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
            page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(page_path.resolve().as_uri(), wait_until="load")
            page.wait_for_selector("body[data-ready]", state="attached")
            assert page.locator("article.card").count() == len(report) == 2
            assert page.locator("img[src='x']").count() == 0 and page.locator("body script").count() == 2
            assert page.locator("body script:not([type])").count() == 1  # the code; the other is JSON data
            text = page.inner_text("body")
            assert f"true: {EVIL}" in text and "Dataset triage: <script>alert(2)</script>" in text
            page.wait_for_function("() => [...document.images].every(i => i.complete)")
            natural = page.evaluate("() => [...document.images].map(i => i.naturalWidth)")
            assert len(natural) == 6 and min(natural) > 0  # seed and two accentuations per card decode
            first = page.locator("article.card").first
            first.locator("img").first.click()
            assert "zoom" in (first.get_attribute("class") or "")
            OUT.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(OUT / "triage-report.png"))
        finally:
            browser.close()
    assert not problems, problems
    assert all(u.startswith(("file://", "data:")) for u in requests), requests


PAIRS = [("palace", "bell cote"), ("tabby", "tiger cat"), ("tabby", "Egyptian cat"), (EVIL, "drilling platform")]


def _grow(out: Path, n: int) -> None:
    """Grow a finished store to ``n`` mistakes: the real items' folders linked under new ids, with
    file names, labels and probabilities varied deterministically (tests the page's controls on
    more mistakes than a CPU can accentuate in a test)."""
    store = TriageStore(out)
    index = store.read_index()
    real = index["items"]
    rng = random.Random(0)
    items, preds = [], []
    for k in range(n):
        row = json.loads(json.dumps(real[k % len(real)]))
        t, p = PAIRS[k % len(PAIRS)] if k % 5 else PAIRS[0]
        folder = store.item_dir(f"grown{k:04d}")
        folder.mkdir(parents=True)
        for name in row["files"]:
            os.link(store.item_dir(real[k % len(real)]["id"]) / name, folder / name)
        (folder / "row.json").write_text("{}")
        pt = rng.uniform(0.01, 0.3)
        row.update(
            id=f"grown{k:04d}",
            index=k,
            key=f"{t}/img_{k:04d}.jpg",
            true_label=t,
            predicted_label=p,
            p_true=pt,
            p_predicted=pt + rng.uniform(0.05, 0.6),
            true_rank=rng.randint(2, 20),
            label_issue=rng.random(),
            exemplars={},
        )
        row["likely_label_error"] = row["label_issue"] > 0.8
        row["scores"]["predicted"].update(label=p, seed_prob=row["p_predicted"], prob=rng.uniform(0.05, 0.99))
        row["scores"]["true"].update(label=t, seed_prob=pt, prob=rng.uniform(0.0, 0.9))
        items.append(row)
        preds.append(
            {k2: row[k2] for k2 in ("id", "index", "key", "true", "true_label", "predicted", "predicted_label")}
        )
    index["items"], index["predictions"] = items, preds
    index["summary"].update(items=n, correct=0, accuracy=0.0, mistakes=n, accentuated=n)
    store.write_index(index)


def _ids(page: Any) -> list[str]:
    return page.evaluate("() => [...document.querySelectorAll('article.card')].map(c => c.dataset.id)")


def test_html_report_filter_sort_page_tag_export(tmp_path: Path) -> None:
    _require_chromium()
    from playwright.sync_api import sync_playwright

    _evil_report(tmp_path)
    _grow(tmp_path / "out", 60)
    report = fw.TriageReport.load(tmp_path / "out")
    page_path = report.to_html(tmp_path / "report.html")
    problems: list[str] = []
    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1366, "height": 900}, accept_downloads=True)
            page = context.new_page()
            page.on("console", lambda m: problems.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(page_path.resolve().as_uri(), wait_until="load")
            page.wait_for_selector("body[data-ready]", state="attached")
            # page: 24 at a time, in the report's order
            assert page.inner_text("#status") == "1–24 of 60 matching (60 mistakes)"
            assert _ids(page) == [it.id for it in report][:24]
            page.click("#next")
            assert page.inner_text("#status") == "25–48 of 60 matching (60 mistakes)"
            page.click("#last")
            assert _ids(page) == [it.id for it in report][48:] and page.inner_text("#page") == "page 3 / 3"
            # sort: every key, both directions, agrees with the Python side
            for key in ("confidence", "true_rank", "label_issue", "gain_predicted", "gain_true", "pair", "index"):
                page.select_option("#sort", key)
                assert _ids(page) == [it.id for it in report.filter(sort=key)][:24], key
            page.click("#dir")
            assert _ids(page) == [it.id for it in report.filter(sort="index", descending=False)][:24]
            page.click("#dir")
            page.select_option("#sort", "margin")
            # filter: true class, confusion pair (a click on the table), flag, search
            page.select_option("#f-true", "tabby")
            assert _ids(page) == [it.id for it in report.filter(true="tabby")][:24]
            page.click("#clear")
            row = page.locator("#confusions tr", has_text="Egyptian cat")
            row.click()
            expect = [it.id for it in report.filter(true="tabby", predicted="Egyptian cat")]
            assert _ids(page) == expect and "active" in (row.get_attribute("class") or "")
            assert page.input_value("#f-true") == "tabby" and page.input_value("#f-predicted") == "Egyptian cat"
            row.click()  # again: the pair filter is off
            assert page.inner_text("#status").endswith("of 60 matching (60 mistakes)")
            page.select_option("#f-flag", "fell")
            fell = [it.id for it in report.filter(flag="fell")]
            assert _ids(page) == fell[:24] and page.locator("article.card .badge.fell").count() == min(24, len(fell))
            page.select_option("#f-flag", "label")
            assert _ids(page) == [it.id for it in report.filter(flag="label")][:24]
            page.click("#clear")
            page.fill("#f-search", "IMG_0007")
            assert _ids(page) == ["grown0007"]
            page.fill("#f-search", EVIL[:8])  # by label, as text
            assert _ids(page) == [it.id for it in report.filter(search=EVIL[:8])][:24]
            assert float(page.evaluate("document.body.dataset.applyMs")) < 200
            page.click("#clear")
            # views: where and difference draw canvases, swipe stacks the seed under the accentuation
            card = page.locator("article.card").first
            card.locator("button[data-view=difference]").click()
            assert card.locator(".box canvas").count() == 2
            card.locator("button[data-view=swipe]").click()
            assert card.locator(".box[data-target=predicted] img").count() == 2
            page.select_option("#view", "where")
            assert page.locator("article.card .box canvas").count() == 48
            page.select_option("#view", "accentuation")
            # tag and select; the tags survive a reload (localStorage), then export and import
            first, second = _ids(page)[:2]
            page.locator(f"article.card[data-id='{first}'] select[data-role=tag]").select_option("label error")
            other = page.locator(f"article.card[data-id='{second}']")
            other.locator("select[data-role=tag]").select_option("\u0001custom")
            other.locator("input[data-role=custom-tag]").fill(FORMULA_TAG)
            other.locator("input[data-role=custom-tag]").press("Enter")
            other.locator("input[data-role=select]").check()
            assert page.inner_text("#counts") == "2 tagged · 1 selected"
            page.reload(wait_until="load")
            page.wait_for_selector("body[data-ready]", state="attached")
            assert page.inner_text("#counts") == "2 tagged · 1 selected"
            page.select_option("#f-tag", FORMULA_TAG)
            assert _ids(page) == [second]
            page.select_option("#f-tag", "")
            page.select_option("#f-true", "palace")
            page.click("#select-all")
            palace = [it.id for it in report.filter(true="palace")]
            assert page.inner_text("#counts") == f"2 tagged · {len(set(palace) | {second})} selected"
            with page.expect_download() as dl:
                page.click("#export-json")
            dl.value.save_as(tmp_path / "tags.json")
            with page.expect_download() as dl:
                page.click("#export-csv")
            dl.value.save_as(tmp_path / "tags.csv")
            OUT.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(OUT / "triage-report-controls.png"))
        finally:
            browser.close()
    assert not problems, problems
    assert all(u.startswith(("file://", "data:", "blob:")) for u in requests), requests
    # the page's CSV guards the formula with a quote; import_tags reads the tag back as it was
    cells = {r["id"]: r for r in csv.DictReader(io.StringIO((tmp_path / "tags.csv").read_text(encoding="utf-8")))}
    assert cells[second]["tag"] == "'" + FORMULA_TAG and cells[first]["tag"] == "label error"
    for path in (tmp_path / "tags.json", tmp_path / "tags.csv"):
        (tmp_path / "out" / "tags.json").unlink(missing_ok=True)
        fresh = fw.TriageReport.load(tmp_path / "out")
        assert fresh.import_tags(path) == len(set(palace) | {first, second})
        assert fresh.tag_of(first) == "label error" and fresh.tag_of(second) == FORMULA_TAG
        assert set(fresh.selected["id"]) == set(palace) | {second}


NOTEBOOK = "triage_e2e.ipynb"


def test_triage_browser_in_jupyterlab(tmp_path: Path) -> None:
    _require_chromium()
    from playwright.sync_api import sync_playwright

    data = build_demo_folder(tmp_path / "demo", variants=1, size=160)
    for folder in data.iterdir():  # keep the two classes the model gets wrong: rocket and the palace
        if folder.name not in ("missile", "palace"):
            shutil.rmtree(folder)
    problems: list[str] = []
    with jupyter_server("jupyterlab", tmp_path) as (base, token, _log):
        nb_dir = tmp_path / "jupyterlab-notebooks"  # the server's root (see test_browser.jupyter_server)
        fw.triage(fw.load_model(), data, out=nb_dir / "triage_out", steps=6, n_crops=2, input_size=128, canvas=160)
        nb = nbformat.v4.new_notebook()
        nb.cells = [
            nbformat.v4.new_code_cell(
                "from faccent_widget.triage import TriageReport\n"
                'browser = TriageReport.load("triage_out").show(page_size=6)\nbrowser'
            )
        ]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
        nbformat.write(nb, nb_dir / NOTEBOOK)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1100})
                page.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
                page.on(
                    "console", lambda m: problems.append(f"console.{m.type}: {m.text}") if m.type == "error" else None
                )
                page.set_default_timeout(60_000)
                page.goto(f"{base}/lab/tree/{NOTEBOOK}?token={token}", wait_until="domcontentloaded")
                page.wait_for_function(JS_KERNEL_IDLE, timeout=120_000, polling=250)
                page.locator("#jp-main-statusbar").get_by_text("Idle").first.wait_for(timeout=30_000)
                page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
                card = page.locator("button.widget-button", has_text="#1 ")
                card.wait_for(state="visible", timeout=180_000)
                assert page.get_by_text("predicted: drilling platform").count() == 1
                assert page.get_by_text("true: palace").count() == 1
                OUT.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(OUT / "triage-browser-grid.png"))
                card.click()
                opener = page.locator("button.widget-button", has_text="Open in FaccentWidget")
                opener.wait_for(state="visible", timeout=60_000)
                page.get_by_text("accentuated toward").first.wait_for(timeout=30_000)
                page.screenshot(path=str(OUT / "triage-browser-detail.png"))
                opener.click()
                page.locator("[data-testid=accentuate]").wait_for(state="visible", timeout=180_000)
                for key in ("seed", "gradcam", "mask"):
                    page.locator(f"[data-testid={key}-img][src]").wait_for(state="attached", timeout=120_000)
                page.wait_for_function(JS_KERNEL_IDLE, timeout=60_000, polling=250)
                page.locator(".faccent").scroll_into_view_if_needed()
                assert "missile" in page.locator(".faccent").inner_text()
                page.screenshot(path=str(OUT / "triage-browser-faccent.png"))
            finally:
                browser.close()
    widget_errors = [p for p in problems if "widget" in p.lower() or "faccent" in p.lower() or "pageerror" in p]
    assert not widget_errors, widget_errors
