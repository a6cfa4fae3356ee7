"""The device check's sections for issue 21 (CUDA graphs): graphs, floor, triage.

* graphs — a graphed run (``cuda_graphs=True``) against the eager run from the same seed, for the
  default model, a ViT, the default model forced to the plain (not channels-last) layout, the batched
  top-5 and the forced-fp16 route; the replays run under ``torch.cuda.set_sync_debug_mode("error")``.
  On a CPU the emulating backend stands in (``step_graphs.emulated``): the bookkeeping is exercised,
  and the two runs must agree bit for bit.
* floor — the step's floor, measured as ``bench_step.py`` does on the CPU: the model's forward+backward
  of the step's crops (to the logits) plus the seed's forward to the regularisation layer, under the
  run's autocast and layout; on CUDA that pass is itself captured as a graph, so launches do not hide
  it. Prints ms/step eager and graphed, the floor, and step/floor, per preset and model.
* triage — ``fw.triage`` of a labelled folder (the demo's images with augmentations: 64 images on a
  GPU, 7 with ``--quick``) with the GPU preset: mistakes/s, peak memory, and that the report is whole.

Agreement tolerance (graphed vs eager): the same as the device check's CPU-vs-device correctness — a
replay runs the kernels the eager step launches, but on CUDA two *eager* runs already differ at
round-off (``roi_align``'s backward accumulates with atomics), and Adam compounds round-off about 3× a
step (see ``device_check.py``). So step 0 (eager in both) must agree to 1e-4 relative and later steps
to 1e-2; the eager-vs-eager difference is printed beside it as the floor. On the CPU (emulated) the
runs execute the same operations in the same order: they must be equal.
"""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

import faccent_widget as fw
from faccent_widget.core import step_graphs

if TYPE_CHECKING:
    from device_check import DeviceCheck

EARLY_TOL, LATE_TOL = 1e-4, 1e-2


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _graphs_possible(device: torch.device) -> Iterator[str]:
    """Real graphs on CUDA; the emulating backend elsewhere. Yields the mode's name."""
    if device.type == "cuda":
        yield "cuda graphs"
    else:
        with step_graphs.emulated():
            yield "emulated (no CUDA device)"


def _compare(a: list[fw.Accentuation], b: list[fw.Accentuation]) -> dict[str, Any]:
    oa = np.stack([r.history["objective"] for r in a], 1)
    ob = np.stack([r.history["objective"] for r in b], 1)
    rel = (np.abs(oa - ob) / np.maximum(np.abs(ob), 1e-6)).max(1)  # per step, worst item
    tol = np.where(np.arange(len(rel)) < 1, EARLY_TOL, LATE_TOL)
    image = max(float((x.image - y.image).abs().max()) for x, y in zip(a, b))
    dist = max(float(np.abs(x.history["distance"] - y.history["distance"]).max()) for x, y in zip(a, b))
    return {
        "max_rel_diff": float(rel.max()),
        "per_step": [float(v) for v in rel],
        "image_max_abs_diff": image,
        "distance_max_abs_diff": dist,
        "within_tolerance": bool((rel <= tol).all()),
        "equal": bool((oa == ob).all()) and image == 0.0,
    }


def _case_run(
    check: DeviceCheck,
    model: fw.Model,
    image: torch.Tensor,
    targets: Any,
    settings: dict[str, Any],
    channels_last: bool | None,
    *,
    graphed: bool,
    guard: int | None,
) -> fw.AccentuationRun:
    """A run to the end; with ``guard``, the steps from that one on (but the last) under the no-sync guard."""
    run = fw.start_run(model, image, targets, cuda_graphs=graphed, **settings)
    if channels_last is not None:
        run.policy = dataclasses.replace(run.policy, channels_last=channels_last)
    while not run.done:
        # the last step releases the graphs (their memory pools): replays only, under the guard
        if guard is not None and guard <= run.step_count < run.config.steps - 1:
            with check._no_sync():
                run.step()
        else:
            run.step()
    return run


def graphs(check: DeviceCheck) -> dict[str, Any]:
    dev, image = check.device, check.image
    model = check.model()
    top = [p.index for p in model.predict(image, k=2 if check.quick else 5)]
    steps = 7 if check.quick else 24
    base = {**check.settings(check.gpu_preset_name), "steps": steps, "attribution_every": 3 if check.quick else 5}
    # from this step on every step is a replay (both kinds captured): the sync guard covers those
    guard_from = 5 if check.quick else 7
    cases: list[tuple[str, fw.Model, Any, dict[str, Any]]] = [
        ("default model", model, top[1], {}),
        ("batched top-k", model, top, {}),
        ("forced fp16", model, top[1], {"autocast": "fp16"}),
        ("plain layout", model, top[1], {"_channels_last": False}),
    ]
    if not check.quick:
        vit = fw.load_model("vit_b_16", pretrained=False, device=dev)
        cases.append(("ViT (random weights)", vit, 1, {}))
    out: dict[str, Any] = {"steps": steps, "cases": {}}
    ok, cuda = True, dev.type == "cuda"
    with _graphs_possible(dev) as mode:
        out["mode"] = mode
        for label, m, targets, extra in cases:
            extra = dict(extra)
            channels_last = extra.pop("_channels_last", None)
            settings = {**base, **extra}

            case = (check, m, image, targets, settings, channels_last)
            eager = _case_run(*case, graphed=False, guard=None)
            again = _case_run(*case, graphed=False, guard=None) if cuda else eager
            graphed = _case_run(*case, graphed=True, guard=guard_from)
            g = graphed.graphs
            rec = _compare(graphed.result(), eager.result())
            rec["eager_vs_eager"] = _compare(again.result(), eager.result())["max_rel_diff"]
            rec["replays"] = g.replays if g is not None else 0
            rec["fell_back"] = graphed.graphs_off_reason
            rec["kinds"] = sorted(str(k) for k in (g.kinds if g is not None else set()))
            rec["ok"] = (
                rec["fell_back"] is None and rec["replays"] > 0 and (rec["within_tolerance"] if cuda else rec["equal"])
            )
            ok &= rec["ok"]
            out["cases"][label] = rec
    out["ok"] = ok
    return out


def _floor_ms(check: DeviceCheck, model: fw.Model, preset: str) -> float:
    """Forward+backward of the step's crops to the logits plus the seed's forward to the regularisation
    layer, under the run's autocast and layout; on CUDA replayed as one graph."""
    dev = check.device
    run = fw.start_run(model, check.image, 0, **check.settings(preset, steps=2))
    n, (h, w) = run.config.n_crops, run.crop_hw
    fmt = torch.channels_last if run.policy.channels_last else torch.contiguous_format
    dtype = run.policy.autocast_dtype
    crops = torch.rand(n, 3, h, w, device=dev).contiguous(memory_format=fmt).requires_grad_(True)
    seed = torch.rand(n, 3, h, w, device=dev).contiguous(memory_format=fmt)
    reg = run.reg_layer

    def floor_pass() -> None:
        with torch.autocast(dev.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None, cache_enabled=False):
            logits = model.features(crops, logits=True, normalize=False, freeze=False)["logits"]
            with torch.no_grad():
                model.features(seed, [reg], normalize=False, freeze=False)
        (g,) = torch.autograd.grad(logits.float().sum(), crops)
        g.sum()

    if dev.type == "cuda":
        side = torch.cuda.Stream(dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side):
            for _ in range(3):
                floor_pass()
        torch.cuda.current_stream(dev).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            floor_pass()
        call = graph.replay
    else:
        call = floor_pass
    for _ in range(2):
        call()
    times = []
    for _ in range(3 if check.quick else 20):
        _sync(dev)
        t = time.perf_counter()
        call()
        _sync(dev)
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def _step_ms(check: DeviceCheck, model: fw.Model, preset: str, graphed: bool) -> float:
    """Pipelined ms/step after the warm-up and captures (steps 0–12 untimed)."""
    dev = check.device
    repeats = 2 if check.quick else 20
    with _graphs_possible(dev) if graphed else contextlib.nullcontext():
        run = fw.start_run(model, check.image, 0, cuda_graphs=graphed, **check.settings(preset, steps=10_000))
        for _ in range(3 if check.quick else 13):
            run.step()
        _sync(dev)
        t = time.perf_counter()
        for _ in range(repeats):
            run.step()
        _sync(dev)
    return 1000 * (time.perf_counter() - t) / repeats


def floor(check: DeviceCheck) -> dict[str, Any]:
    rows = []
    for name in check.models:
        model = check.model(name)
        for preset in check.presets:
            floor_ms = _floor_ms(check, model, preset)
            eager = _step_ms(check, model, preset, graphed=False)
            graphed = _step_ms(check, model, preset, graphed=True) if check.device.type == "cuda" else None
            best = graphed if graphed is not None else eager
            rows.append(
                {
                    "model": model.name,
                    "preset": preset,
                    "floor_ms": floor_ms,
                    "eager_ms_per_step": eager,
                    "graphed_ms_per_step": graphed,
                    "step_over_floor": best / floor_ms,
                    "eager_over_floor": eager / floor_ms,
                }
            )
    return {"rows": rows, "floor_graphed": check.device.type == "cuda"}


def triage(check: DeviceCheck) -> dict[str, Any]:
    from faccent_widget.triage import build_demo_folder

    dev = check.device
    n = 7 if check.quick else 64
    with tempfile.TemporaryDirectory() as tmp:
        root = build_demo_folder(Path(tmp) / "data", variants=1 if check.quick else 8)
        if not check.quick:  # 56 images; 8 more from a second size to reach 64
            extra = build_demo_folder(Path(tmp) / "more", variants=2, size=300)
            for f in sorted(extra.rglob("*.jpg")):
                (root / f.parent.name / f"b_{f.name}").write_bytes(f.read_bytes())
        settings = {k: v for k, v in check.settings(check.gpu_preset_name).items() if k not in ("seed", "preset")}
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        _sync(dev)
        t = time.perf_counter()
        report = fw.triage(check.model(), root, out=Path(tmp) / "store", limit=n, preset=check.gpu_preset_name,
                           device=dev, **settings)  # fmt: skip
        _sync(dev)
        seconds = time.perf_counter() - t
        s = report.summary
        whole = all(len(item.accentuations) == len(item.targets) >= 2 for item in report)
        html = report.html(max_items=5)
    return {
        "ok": s["items"] == n and s["accentuated"] == s["mistakes"] and whole and len(html) > 1000,
        "images": s["items"],
        "mistakes": s["mistakes"],
        "accentuated": s["accentuated"],
        "seconds": seconds,
        "mistakes_per_s": s["accentuated"] / seconds,
        "peak_mb": torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None,
        "report_whole": whole,
    }


def print_graphs(r: dict[str, Any]) -> None:
    print(f"   {r['mode']}, {r['steps']} steps; max relative objective difference, graphed vs eager (eager vs eager)")
    for label, c in r["cases"].items():
        print(
            f"   {label:<22s} {'pass' if c['ok'] else 'FAIL'}  {c['max_rel_diff']:.1e} ({c['eager_vs_eager']:.1e})  "
            f"image {c['image_max_abs_diff']:.1e}  replays {c['replays']}  kinds {' '.join(c['kinds'])}"
            + (f"  fell back: {c['fell_back']}" if c["fell_back"] else "")
        )


def print_floor(r: dict[str, Any]) -> None:
    print(f"   {'model':<34s} {'preset':<8s} {'floor':>7s} {'eager':>7s} {'graphed':>8s} {'step/floor':>10s}")
    for row in r["rows"]:
        graphed = f"{row['graphed_ms_per_step']:8.2f}" if row["graphed_ms_per_step"] is not None else f"{'-':>8s}"
        print(
            f"   {row['model']:<34s} {row['preset']:<8s} {row['floor_ms']:7.2f} {row['eager_ms_per_step']:7.2f} "
            f"{graphed} {row['step_over_floor']:10.2f}"
        )


def print_triage(r: dict[str, Any]) -> None:
    peak = f"{r['peak_mb']:.0f} MB" if r["peak_mb"] is not None else "-"
    print(
        f"   {r['images']} images, {r['mistakes']} mistakes, {r['accentuated']} accentuated in {r['seconds']:.1f} s: "
        f"{r['mistakes_per_s']:.2f} mistakes/s; peak {peak}; report whole: {r['report_whole']}"
    )
