"""Screenshots of the panel in JupyterLab 4 (Debian Chromium, Playwright) for the UX notes: a laptop
(1366 × 768, file browser open) and a projector (1920 × 1080), light, and one dark.

    PYTHONPATH=<checkout> python tests/e2e/screenshots.py docs/screenshots/ux-turn4 --label after

``PYTHONPATH`` picks the checkout whose ``faccent_widget`` (and front end) the kernel imports, so the same
script takes the "before" shots from a copy of main. Each PNG is palette-reduced to stay under 400 KB.
Not a test: it asserts nothing beyond the panel getting to the end of a short run.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path
from typing import Any

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_browser import (  # noqa: E402  (the server and browser helpers of the e2e test)
    CHROMIUM,
    CHROMIUM_ARGS,
    JS_KERNEL_IDLE,
    NOTEBOOK,
    jupyter_server,
)

MAX_BYTES = 400_000
STEPS = 12


def _save(page: Any, path: Path) -> None:
    """A viewport screenshot as a PNG under ``MAX_BYTES`` (fewer colours until it fits)."""
    raw = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
    for colours in (256, 128, 64, 32):
        buf = io.BytesIO()
        raw.quantize(colors=colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            buf, "PNG", optimize=True
        )
        if buf.tell() < MAX_BYTES:
            break
    path.write_bytes(buf.getvalue())
    print(f"{path} {raw.size[0]}×{raw.size[1]} {buf.tell() // 1024} KB")


JS_LAYOUT = """() => {
  const root = document.querySelector('.faccent');
  const row = root.querySelector('.faccent-actions');
  const btn = root.querySelector('[data-testid=accentuate]').getBoundingClientRect();
  const tallest = Math.max(...[...row.children].map((c) => c.getBoundingClientRect().height));
  return {
    panel_px: Math.round(root.getBoundingClientRect().width),
    tile_px: Math.round(root.querySelector('[data-testid=accent-img]').getBoundingClientRect().width),
    font_px: getComputedStyle(root).fontSize,
    action_row_px: Math.round(row.getBoundingClientRect().height),
    action_row_one_line: row.getBoundingClientRect().height < 1.5 * tallest,
    button_px: Math.round(btn.height),
  };
}"""


def _layout(page: Any, name: str) -> None:
    print(name, page.evaluate(JS_LAYOUT))


def _top(page: Any) -> None:
    page.locator(".faccent").first.evaluate("el => el.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(400)


def _wait_done(page: Any, steps: int) -> None:
    page.wait_for_function(
        f"() => document.querySelector('[data-testid=step]').textContent.startsWith('step {steps} / {steps}')"
        " && document.querySelector('[data-testid=stop]').disabled",
        timeout=300_000,
    )
    page.wait_for_function(JS_KERNEL_IDLE, timeout=60_000, polling=100)
    page.wait_for_timeout(700)  # the throttled status line


def shoot(out: Path, label: str) -> None:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, jupyter_server("jupyterlab", Path(tmp)) as (base, token, _log):
        nb = Path(tmp) / "jupyterlab-notebooks" / NOTEBOOK
        nb.write_text(nb.read_text().replace("steps=30", f"steps={STEPS}"))
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            page.set_default_timeout(120_000)
            page.goto(f"{base}/lab/tree/{NOTEBOOK}?token={token}", wait_until="domcontentloaded")
            page.wait_for_function(JS_KERNEL_IDLE, timeout=180_000, polling=250)
            if not page.locator(".jp-FileBrowser").first.is_visible():
                page.evaluate("window.jupyterapp.commands.execute('filebrowser:toggle-main')")
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            for key in ("seed", "gradcam", "mask", "accent"):
                page.locator(f"[data-testid={key}-img][src]").wait_for(state="attached", timeout=180_000)
            page.wait_for_function(JS_KERNEL_IDLE, timeout=60_000, polling=100)
            # the review's target: the 2nd chip (tiger cat on chelsea)
            page.locator("[data-testid=chips] button").nth(1).click()
            page.wait_for_function(JS_KERNEL_IDLE, timeout=60_000, polling=100)
            page.wait_for_timeout(800)
            _top(page)
            _save(page, out / f"{label}-1366-light-picked.png")
            btn = page.locator("[data-testid=accentuate]")
            btn.click()  # the pointer stays on the button: the hovered, running state
            page.wait_for_function(
                "() => Number(document.querySelector('[data-testid=step]').textContent.split(' ')[1]) >= 3",
                timeout=120_000,
            )
            _save(page, out / f"{label}-1366-light-running.png")
            _wait_done(page, STEPS)
            _top(page)
            _save(page, out / f"{label}-1366-light-done.png")
            _layout(page, "1366")
            page.set_viewport_size({"width": 1920, "height": 1080})
            page.wait_for_timeout(800)
            _top(page)
            _save(page, out / f"{label}-1920-light-done.png")
            _layout(page, "1920")
            present = page.locator("[data-testid=toggle-presentation]")
            if present.count():
                present.click()
                page.wait_for_timeout(800)
                _top(page)
                _save(page, out / f"{label}-1920-light-presentation.png")
                present.click()
            # the top-k gallery, short runs
            page.locator("[data-testid=advanced] summary").click()
            steps = page.locator("[data-testid=steps]")
            steps.fill("3")
            steps.press("Enter")
            page.locator("[data-testid=advanced] summary").click()
            page.locator("[data-testid=gallery-topk]").click()
            page.wait_for_function(
                "() => document.querySelectorAll('[data-testid=gallery] figure').length === 5",
                timeout=300_000,
                polling=250,
            )
            page.wait_for_function(JS_KERNEL_IDLE, timeout=60_000, polling=100)
            page.locator("[data-testid=gallery]").scroll_into_view_if_needed()
            page.wait_for_timeout(500)
            _save(page, out / f"{label}-1920-light-gallery.png")
            zoom = page.locator("[data-testid=gallery] .faccent-gallery-zoom")
            if zoom.count():
                zoom.nth(1).click()
                page.wait_for_timeout(800)
                _save(page, out / f"{label}-1920-light-gallery-enlarged.png")
                page.keyboard.press("Escape")
            page.evaluate("window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})")
            page.wait_for_function("() => document.body.dataset.jpThemeLight === 'false'", timeout=60_000)
            page.wait_for_timeout(1200)
            _top(page)
            btn.hover()
            page.wait_for_timeout(300)
            _save(page, out / f"{label}-1920-dark-hover.png")
            page.set_viewport_size({"width": 1000, "height": 900})  # a narrow cell: under 720 px with the browser open
            page.wait_for_timeout(800)
            _top(page)
            _save(page, out / f"{label}-1000-dark-narrow.png")
            _layout(page, "1000")
            browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--label", default="after")
    args = parser.parse_args()
    shoot(args.out, args.label)


if __name__ == "__main__":
    main()
