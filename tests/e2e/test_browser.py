"""End to end in a real browser: JupyterLab / Notebook 7 + Debian's Chromium driven by Playwright.

The test starts a Jupyter server on 127.0.0.1 (free port, token, fresh config/runtime/data dirs under
``tmp_path``) over a directory holding one generated notebook, opens it in Chromium, runs all cells,
clicks Accentuate, watches the step counter and the accentuation image advance, clicks Stop and checks
that the counter stops. It measures the time from the click to the first painted frame
(``el.dataset.firstFrameMs``) and the frames per second while running (``el.dataset.frames`` over the
browser's clock), prints them, writes them to ``test-output/e2e/metrics-<frontend>.json`` and saves
screenshots there (``test-output/`` is gitignored); the final screenshot is also copied to ``tmp_path``.

Chromium comes from Debian (``apt-get install chromium``; ``.ci/run`` does it). Playwright's own
browser download is never used. A missing Chromium is a failure, not a skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import nbformat
import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "test-output" / "e2e"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]
STEPS = 30
CELL = (
    "import faccent_widget as fw\n"
    f'w = fw.FaccentWidget(fw.load_model(), fw.sample_image("chelsea"), steps={STEPS})\n'
    "w"
)
NOTEBOOK = "faccent_e2e.ipynb"

# kernel of the current notebook, in JupyterLab and Notebook 7 alike (app exposed as window.jupyterapp)
JS_KERNEL_IDLE = """() => {
  const app = window.jupyterapp;
  const w = app && app.shell && app.shell.currentWidget;
  const ctx = w && w.sessionContext;
  const kernel = ctx && ctx.session && ctx.session.kernel;
  return Boolean(kernel && kernel.status === 'idle' && kernel.connectionStatus === 'connected');
}"""
JS_READ = """() => {
  const el = document.querySelector('[data-testid=accentuate]').closest('.faccent').parentElement;
  const img = document.querySelector('[data-testid=accent-img]');
  return {
    now: performance.now(),
    frames: Number(el.dataset.frames || 0),
    firstFrameMs: el.dataset.firstFrameMs == null ? null : Number(el.dataset.firstFrameMs),
    step: document.querySelector('[data-testid=step]').textContent,
    src: img.getAttribute('src'),
    error: document.querySelector('[data-testid=error]').textContent,
  };
}"""


# ---------------------------------------------------------------------------------------- server
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_notebook(directory: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(CELL)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    path = directory / NOTEBOOK
    nbformat.write(nb, path)
    return path


def _descendants(pid: int) -> list[Any]:
    try:
        import psutil

        return psutil.Process(pid).children(recursive=True)
    except Exception:  # psutil missing or the process is gone
        return []


@contextlib.contextmanager
def jupyter_server(app: str, tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """Start ``python -m <app>`` (jupyterlab or notebook); yield (base URL, token, log path)."""
    port, token = _free_port(), secrets.token_hex(16)
    home = tmp_path / f"{app}-home"
    nb_dir = tmp_path / f"{app}-notebooks"
    for d in ("config", "runtime", "data", "ipython"):
        (home / d).mkdir(parents=True, exist_ok=True)
    nb_dir.mkdir()
    _write_notebook(nb_dir)
    # keep JupyterLab's "news" question and update checks out of the way (and off the network)
    (home / "config" / "labconfig").mkdir()
    (home / "config" / "labconfig" / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}})
    )
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "IPYTHONDIR": str(home / "ipython"),
        "JUPYTER_PLATFORM_DIRS": "1",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    expose = "--LabApp.expose_app_in_browser=True" if app == "jupyterlab" else \
        "--JupyterNotebookApp.expose_app_in_browser=True"
    cmd = [
        sys.executable, "-m", app, "--no-browser", "--allow-root", f"--port={port}", "--ip=127.0.0.1",
        "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={nb_dir}",
        expose,
    ]
    log_path = tmp_path / f"{app}-server.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=nb_dir, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    spawned: dict[int, Any] = {}
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{app} exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{app} did not answer within 120 s:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.5)
        yield base, token, log_path
    finally:
        for child in _descendants(proc.pid):  # kernels run in sessions of their own
            spawned[child.pid] = child
        with contextlib.suppress(OSError):
            req = urllib.request.Request(f"{base}/api/shutdown?token={token}", method="POST")
            urllib.request.urlopen(req, timeout=10).close()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        for child in spawned.values():  # anything the server started and left behind
            with contextlib.suppress(Exception):
                if child.is_running():
                    child.kill()
        log.close()


# ---------------------------------------------------------------------------------------- browser
def _step_of(text: str) -> int:
    # "step k / n"
    return int(text.split()[1])


def _drive(app: str, url: str, tmp_path: Path) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    out = OUT
    out.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
            page.on("console", lambda m: problems.append(f"console.{m.type}: {m.text}")
                    if m.type == "error" else None)
            page.set_default_timeout(60_000)
            page.goto(url, wait_until="domcontentloaded")
            page.wait_for_function(JS_KERNEL_IDLE, timeout=120_000, polling=250)
            if app == "jupyterlab":
                page.locator("#jp-main-statusbar").get_by_text("Idle").first.wait_for(timeout=30_000)
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            accent_btn = page.locator("[data-testid=accentuate]")
            accent_btn.wait_for(state="visible", timeout=180_000)
            # the front end said "ready": the tiles are filled (Grad-CAM and mask take a moment)
            for key in ("seed", "gradcam", "mask", "accent"):
                page.locator(f"[data-testid={key}-img][src]").wait_for(state="attached", timeout=120_000)
            page.wait_for_function(JS_KERNEL_IDLE, timeout=60_000, polling=250)
            page.locator(".faccent").scroll_into_view_if_needed()
            page.screenshot(path=str(out / f"{app}-before.png"))
            before = page.evaluate(JS_READ)
            assert _step_of(before["step"]) == 0 and before["error"] == "", before

            accent_btn.click()
            page.wait_for_function(
                "() => document.querySelector('[data-first-frame-ms]') !== null", timeout=120_000, polling=50,
            )
            first = page.evaluate(JS_READ)
            # the counter advances and the accentuation image changes
            page.wait_for_function(
                """([src]) => {
                  const k = Number(document.querySelector('[data-testid=step]').textContent.split(' ')[1]);
                  return k >= 2 && document.querySelector('[data-testid=accent-img]').getAttribute('src') !== src;
                }""",
                arg=[before["src"]], timeout=60_000, polling=50,
            )
            # frames per second while running: painted frames over the browser clock
            page.wait_for_timeout(2500)
            running = page.evaluate(JS_READ)
            assert _step_of(running["step"]) < STEPS, f"the run ended before Stop could be tested: {running}"
            page.screenshot(path=str(out / f"{app}-running.png"))
            page.locator("[data-testid=stop]").click()
            page.wait_for_timeout(1000)  # a chunk that was in flight may still land
            stopped = page.evaluate(JS_READ)
            page.wait_for_timeout(2000)
            later = page.evaluate(JS_READ)
            assert _step_of(later["step"]) == _step_of(stopped["step"]) < STEPS, (stopped, later)
            assert later["frames"] == stopped["frames"]
            assert page.locator("[data-testid=stop]").is_disabled()
            assert later["error"] == "", later["error"]
            page.wait_for_function(JS_KERNEL_IDLE, timeout=60_000, polling=250)
            final = out / f"{app}.png"
            page.screenshot(path=str(final))
            page.locator(".faccent").screenshot(path=str(out / f"{app}-widget.png"))
            shutil.copy(final, tmp_path / final.name)
        finally:
            browser.close()

    frames = running["frames"] - first["frames"]
    seconds = (running["now"] - first["now"]) / 1000.0
    steps_done = _step_of(running["step"]) - _step_of(first["step"])
    metrics = {
        "frontend": app,
        "first_frame_ms": first["firstFrameMs"],
        "frames_per_second": round(frames / seconds, 2),
        "steps_per_second": round(steps_done / seconds, 2),
        "frames_counted": frames,
        "window_s": round(seconds, 2),
        "stopped_at_step": _step_of(later["step"]),
        "steps": STEPS,
        "kernel_omp_num_threads": os.environ.get("OMP_NUM_THREADS", "1"),
        "screenshot": str(out / f"{app}.png"),
        "screenshot_copy": str(tmp_path / f"{app}.png"),
        "browser_problems": problems,
    }
    (out / f"metrics-{app}.json").write_text(json.dumps(metrics, indent=2))
    print(f"\n[e2e {app}] click → first painted frame: {metrics['first_frame_ms']:.0f} ms; "
          f"{metrics['frames_per_second']} frames/s, {metrics['steps_per_second']} steps/s while running "
          f"({frames} frames in {seconds:.1f} s); stopped at step {metrics['stopped_at_step']}/{STEPS}; "
          f"screenshot {metrics['screenshot']}")
    assert first["firstFrameMs"] is not None and first["firstFrameMs"] > 0
    assert frames >= 1 and steps_done >= 1
    widget_errors = [p for p in problems if "faccent" in p.lower() or "widget" in p.lower()]
    assert not widget_errors, widget_errors
    return metrics


def _require_chromium() -> None:
    assert Path(CHROMIUM).exists(), (
        f"{CHROMIUM} is missing: install Debian's Chromium (apt-get install -y chromium chromium-driver; "
        ".ci/run does this). Playwright's browser download is not used."
    )
    import playwright  # noqa: F401  (a dev dependency: pip install -e ".[dev]")


def test_jupyterlab(tmp_path: Path) -> None:
    _require_chromium()
    with jupyter_server("jupyterlab", tmp_path) as (base, token, _log):
        _drive("jupyterlab", f"{base}/lab/tree/{NOTEBOOK}?token={token}", tmp_path)


def test_notebook7(tmp_path: Path) -> None:
    _require_chromium()
    try:
        import notebook
    except ImportError:
        pytest.skip("the `notebook` package (Notebook 7) is not installed")
    if int(notebook.__version__.split(".")[0]) < 7:
        pytest.skip(f"notebook {notebook.__version__} is not Notebook 7")
    with jupyter_server("notebook", tmp_path) as (base, token, _log):
        _drive("notebook", f"{base}/notebooks/{NOTEBOOK}?token={token}", tmp_path)
