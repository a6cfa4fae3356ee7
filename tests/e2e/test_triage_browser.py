"""End to end in Chromium: the triage HTML report (offline, labels escaped, no console errors) and the
notebook browser (``report.show()``) in JupyterLab, down to opening a mistake in ``FaccentWidget``.

Screenshots go to ``test-output/e2e/triage-*.png`` (gitignored). Chromium comes from Debian
(``/usr/bin/chromium``; ``.ci/run`` installs it); a missing Chromium is a failure, not a skip.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from test_browser import CHROMIUM, CHROMIUM_ARGS, JS_KERNEL_IDLE, OUT, _require_chromium, jupyter_server

import faccent_widget as fw
from faccent_widget.triage import build_demo_folder

pytestmark = pytest.mark.e2e

EVIL = "<img src=x onerror=alert(1)>"
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
            assert page.locator("article.card").count() == len(report) == 2
            assert page.locator("img[src='x']").count() == 0 and page.locator("body script").count() == 1
            text = page.inner_text("body")
            assert f"true: {EVIL}" in text and "Dataset triage: <script>alert(2)</script>" in text
            natural = page.evaluate("() => [...document.images].map(i => i.naturalWidth)")
            assert len(natural) == 10 and min(natural) > 0  # every embedded image decodes
            first = page.locator("article.card").first
            first.locator("img").first.click()
            assert "zoom" in (first.get_attribute("class") or "")
            OUT.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(OUT / "triage-report.png"))
        finally:
            browser.close()
    assert not problems, problems
    assert all(u.startswith(("file://", "data:")) for u in requests), requests


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
