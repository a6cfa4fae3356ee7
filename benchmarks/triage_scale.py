"""Does triage scale? Prediction throughput and memory at 1,000 and 10,000 images, and a report of
10,000 mistakes opened, filtered, sorted and paged in Chromium.

1. Builds labelled folders of N images from the bundled sample images and augmentations (the folder
   of ``triage_label_errors.py``: correct label = the default model's top-1 on the clean image, 10 %
   of the labels flipped), and runs the prediction stage (``fw.triage(..., accentuate=False)``, with
   the label-issue score and 3 natural exemplars) in a child process: images/s (the triage's own time,
   model loaded) and the child's peak resident memory.
2. Accentuates a few real mistakes of the largest folder (``--accentuate``, cheap settings), then
   *synthesises* a store of ``--mistakes`` mistakes (default 10,000): the real prediction rows of that
   folder's mistakes (cycled, file names numbered when repeated; labels, probabilities, label-issue
   scores as predicted), each linked to the images of one of the accentuated mistakes. Accentuating
   10,000 mistakes for real takes hours on a CPU; the page does not care where its data came from.
3. Writes the report (``report.to_html``): seconds and size; opens it in Debian's Chromium
   (``/usr/bin/chromium``, headless, through Playwright): time to the first page (navigation start to
   the first page rendered, median of 3 fresh loads), JS heap, and the time of a filter by true class,
   a click on the confusion table, a sort, a search and the next page (in-page time and wall time to
   the next painted frame). Saves a screenshot.

    python benchmarks/triage_scale.py                       # 1,000 and 10,000 images, 10,000 mistakes
    python benchmarks/triage_scale.py --sizes 1000 --screenshot docs/screenshots/triage-report-10000.png
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from triage_label_errors import build  # noqa: E402

import faccent_widget as fw  # noqa: E402
from faccent_widget.triage.store import TriageStore  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHEAP = dict(steps=4, n_crops=2, input_size=128, canvas=128)


def predict_child(root: str, out: str) -> None:
    """In a child process: the prediction stage of ``root`` into ``out``; prints a JSON line."""
    model = fw.load_model()
    class_map = {d.name: int(d.name[1:]) for d in Path(root).iterdir() if d.is_dir()}
    marks: dict[str, float] = {}

    def progress(stage: str, done: int, total: int) -> None:
        marks.setdefault(f"{stage}-first", time.perf_counter())
        marks[f"{stage}-last"] = time.perf_counter()

    t0 = time.perf_counter()
    report = fw.triage(model, root, out=out, class_map=class_map, accentuate=False, exemplars=3, progress=progress)
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    s = report.summary
    predict_s = marks.get("predict-last", t0 + seconds) - t0
    print(
        json.dumps(
            {
                "images": s["items"],
                "mistakes": s["mistakes"],
                "seconds": seconds,
                "predict_s": predict_s,
                "peak_mb": peak_mb,
            }
        )
    )


def predict(root: Path, out: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    code = f"from triage_scale import predict_child; predict_child({str(root)!r}, {str(out)!r})"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=Path(__file__).parent, env=env, capture_output=True, text=True, check=True
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def accentuate_some(src: Path, store: Path, n: int, work: Path) -> Path:
    """Copy ``n`` mistakes of the predicted folder ``store`` into a small folder and triage it for real."""
    preds = TriageStore(store).read_index()["predictions"]
    mistakes = [p for p in preds if p["predicted"] != p["true"]][:n]
    small = work / "small"
    for p in mistakes:
        dest = small / p["key"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / p["key"], dest)
    class_map = {d.name: int(d.name[1:]) for d in small.iterdir()}
    fw.triage(fw.load_model(), small, out=work / "small-out", class_map=class_map, exemplars=3, **CHEAP)
    return work / "small-out"


def synthesise(real: Path, predicted: Path, out: Path, n: int) -> None:
    """A store of ``n`` mistakes: ``predicted``'s mistake rows (cycled) on ``real``'s accentuated images."""
    shutil.copytree(real, out, ignore=shutil.ignore_patterns("items", ".lock"))
    src, dst = TriageStore(real), TriageStore(out)
    index = src.read_index()
    templates = index["items"]
    preds = [p for p in TriageStore(predicted).read_index()["predictions"] if p["predicted"] != p["true"]]
    items, rows = [], []
    for k in range(n):
        p, t = dict(preds[k % len(preds)]), templates[k % len(templates)]
        lap = k // len(preds)
        item_id = f"s{k:06d}"
        folder = dst.item_dir(item_id)
        folder.mkdir(parents=True)
        for name in t["files"]:
            os.link(src.item_dir(t["id"]) / name, folder / name)
        key = p["key"] if lap == 0 else p["key"].replace(".jpg", f"-{lap}.jpg")
        row = {**json.loads(json.dumps(t)), **{f: p[f] for f in p if f not in ("id", "index", "key")}}
        row.update(id=item_id, index=k, key=key)
        for target, seed_p, label in (
            ("predicted", p["p_predicted"], p["predicted_label"]),
            ("true", p["p_true"], p["true_label"]),
        ):
            s = row["scores"][target]
            gain = s["prob"] - s["seed_prob"]
            s.update(label=label, seed_prob=seed_p, prob=min(1.0, max(0.0, seed_p + gain)))
        items.append(row)
        rows.append({**p, "id": item_id, "index": k, "key": key})
    index["items"], index["predictions"] = items, rows
    index["summary"].update(items=n, correct=0, accuracy=0.0, mistakes=n, accentuated=n, missing=0)
    dst.write_index(index)


JS_WALL = """async ([sel, value]) => {
  const t0 = performance.now();
  const el = document.querySelector(sel);
  if (el.tagName === 'BUTTON' || el.tagName === 'TR') { el.click(); }
  else { el.value = value; el.dispatchEvent(new Event(el.tagName === 'INPUT' ? 'input' : 'change')); }
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  return [Number(document.body.dataset.applyMs || 0), performance.now() - t0,
          document.getElementById('status').textContent];
}"""


def chromium(page_path: Path, screenshot: Path | None) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    out: dict[str, Any] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"], headless=True)
        try:
            opens = []
            for _ in range(3):
                page = browser.new_page(viewport={"width": 1366, "height": 900})
                page.goto(page_path.resolve().as_uri(), wait_until="load", timeout=120_000)
                page.wait_for_selector("body[data-ready]", state="attached", timeout=120_000)
                opens.append(float(page.evaluate("document.body.dataset.ready")))
                heap = page.evaluate("performance.memory ? performance.memory.usedJSHeapSize / 1048576 : null")
                page.close()
            out["open_ms"], out["open_all_ms"], out["heap_mb"] = statistics.median(opens), opens, heap
            page = browser.new_page(viewport={"width": 1366, "height": 900})
            page.goto(page_path.resolve().as_uri(), wait_until="load", timeout=120_000)
            page.wait_for_selector("body[data-ready]", state="attached", timeout=120_000)
            common = page.evaluate("document.querySelector('#f-true').options[1].value")
            steps = [
                ("filter by true class", "#f-true", common),
                ("clear", "#clear", None),
                ("click the top confusion row", "#confusions tr", None),
                ("clear", "#clear", None),
                ("sort by label-issue score", "#sort", "label_issue"),
                ("search '-1.jpg'", "#f-search", "-1.jpg"),
                ("next page", "#next", None),
            ]
            out["actions"] = []
            for name, sel, value in steps:
                apply_ms, wall_ms, status = page.evaluate(JS_WALL, [sel, value])
                if name != "clear":
                    out["actions"].append({"action": name, "apply_ms": apply_ms, "wall_ms": wall_ms, "status": status})
            page.evaluate(JS_WALL, ["#clear", None])
            page.evaluate(JS_WALL, ["#sort", "margin"])
            if screenshot:
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                page.wait_for_timeout(500)
                page.screenshot(path=str(screenshot))
        finally:
            browser.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000], help="folder sizes to predict")
    ap.add_argument("--mistakes", type=int, default=10000, help="mistakes in the synthesised report")
    ap.add_argument("--accentuate", type=int, default=24, help="real mistakes accentuated for the report's images")
    ap.add_argument("--tile", type=int, help="thumbnail size of the report (default: by --max-mb)")
    ap.add_argument("--max-mb", type=float, default=45, help="the report's size budget (default 45 MB)")
    ap.add_argument("--screenshot", type=Path, help="save a screenshot of the large report here")
    ap.add_argument("--work", type=Path, help="keep the folders here (default: a temporary folder)")
    args = ap.parse_args(argv)
    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="faccent-triage-scale-")
    work = args.work or Path(tmp.name)  # type: ignore[union-attr]
    model = fw.load_model()
    table = []
    for n in args.sizes:
        root = work / f"images-{n}"
        if not root.exists():
            build(root, model, math.ceil(n / 8), 0.1, 0)
        out = work / f"predicted-{n}"
        shutil.rmtree(out, ignore_errors=True)
        r = predict(root, out)
        table.append((n, r))
        print(f"{n} images: {r['images'] / r['predict_s']:.1f} images/s, peak {r['peak_mb']:.0f} MB", flush=True)
    n_big = args.sizes[-1]
    real = work / "small-out"
    if not real.exists():
        real = accentuate_some(work / f"images-{n_big}", work / f"predicted-{n_big}", args.accentuate, work)
    synth = work / f"synth-{args.mistakes}"
    shutil.rmtree(synth, ignore_errors=True)
    synthesise(real, work / f"predicted-{n_big}", synth, args.mistakes)
    report = fw.TriageReport.load(synth)
    t0 = time.perf_counter()
    page_path = report.to_html(work / "report.html", tile=args.tile, max_mb=args.max_mb)
    write_s = time.perf_counter() - t0
    size_mb = page_path.stat().st_size / 1e6
    b = chromium(page_path, args.screenshot)
    print(
        "\n| images | prediction stage (images/s) | whole triage, with label issues and exemplars (images/s) "
        "| peak memory (MB) | mistakes |\n|---|---|---|---|---|"
    )
    for _, r in table:
        print(
            f"| {r['images']:,} | {r['images'] / r['predict_s']:.1f} | {r['images'] / r['seconds']:.1f} "
            f"| {r['peak_mb']:.0f} | {r['mistakes']:,} |"
        )
    print(
        f"\nReport of {args.mistakes:,} mistakes (synthesised from the {n_big:,}-image predictions and "
        f"{len(fw.TriageReport.load(real))} real accentuations): {size_mb:.1f} MB, written in {write_s:.0f} s; "
        f"first page in Chromium {b['open_ms']:.0f} ms (median of {b['open_all_ms']}), JS heap {b['heap_mb']} MB"
    )
    print("\n| action | in-page (ms) | to the next frame (ms) | shown |\n|---|---|---|---|")
    for a in b["actions"]:
        inpage = "–" if a["action"] == "next page" else f"{a['apply_ms']:.0f}"  # paging renders, filters nothing
        print(f"| {a['action']} | {inpage} | {a['wall_ms']:.0f} | {a['status']} |")
    print(f"\n{torch_threads()} torch threads")
    return 0


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    raise SystemExit(main())
