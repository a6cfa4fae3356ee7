"""Median time per optimisation step: the engine's lean step vs a straightforward reference step.

The reference step does it the way the reference library (faccent 1.0.3) does:
  * the seed crops are concatenated into the candidate's batch and run through the full model;
  * crops are cut and resized one by one in a Python loop (antialiased interpolate);
  * a second backward pass computes the attribution (|∂objective/∂image|).

Both run in this one process, interleaved, on the same model, image and boxes; the ratio is what to
read (these machines are noisy).

It also prints the *floor* of a step: the model's own work for it, which no recipe can avoid — a
forward+backward of the n candidate crops to the logits plus a no-grad forward of the n seed crops
to the regularisation layer (best of fp32 and bf16+channels_last) — and the step/floor ratio, both for
``AccentuationRun.step()`` alone and through the public API (``accentuate(steps=8)`` minus
``accentuate(steps=2)``, per step). The floor is measured round by round in between the timings it
divides, and each ratio is the median of the rounds' ratios (the speed of these machines drifts by
±30 % within minutes). Milliseconds are medians.

GoogLeNet has random weights with BatchNorm statistics re-estimated on the sample images (see
``benchmarks/_models.py``: torchvision's own random init drives the optimiser into denormal floats).

    python benchmarks/bench_step.py                  # both presets, default model + GoogLeNet
    python benchmarks/bench_step.py --presets preview --repeats 5
    python benchmarks/bench_step.py --precision      # the step in fp32 vs bf16 autocast
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from _models import load_benchmark_model  # benchmarks/_models.py: GoogLeNet with trained-scale activations

import faccent_widget as fw
from faccent_widget.core.engine import channel_distance
from faccent_widget.core.parameterizations import Fourier
from faccent_widget.core.transforms import sample_boxes


def reference_step(model, param, seed, boxes, size, target, reg_layer, lam, optimizer, attribution):
    x = param.image()
    crops, seed_crops = [], []
    for x1, y1, x2, y2 in boxes.round().int().tolist():
        crops.append(F.interpolate(x[:, :, y1:y2, x1:x2], size=(size, size), mode="bilinear", antialias=True))
        seed_crops.append(F.interpolate(seed[:, :, y1:y2, x1:x2], size=(size, size), mode="bilinear", antialias=True))
    n = len(crops)
    batch = torch.cat(crops + seed_crops)
    feats = model.features(batch, [reg_layer], logits=True)
    objective = feats["logits"][:n, target].mean()
    distance = channel_distance(feats[reg_layer][:n], feats[reg_layer][n:], model.layout(reg_layer)).mean()
    (g,) = torch.autograd.grad(objective, x, retain_graph=True)  # second backward, for the attribution
    attribution += g.abs().sum(1)
    loss = -objective + lam * distance
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def floor_iteration(model, n: int, size: int, reg: str, low: bool) -> float:
    """Seconds of the model's own work for one step: forward+backward of ``n`` candidate crops to the
    logits and a no-grad forward of ``n`` seed crops to ``reg`` (fp32, or bf16 autocast + channels_last)."""
    fmt = torch.channels_last if low else torch.contiguous_format
    crops = torch.rand(n, 3, size, size).contiguous(memory_format=fmt).requires_grad_(True)
    seeds = torch.rand(n, 3, size, size).contiguous(memory_format=fmt)
    t0 = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=low):
        logits = model.features(crops, logits=True)["logits"]
        with torch.no_grad():
            model.features(seeds, [reg])
    logits.float()[:, 0].sum().backward()
    return time.perf_counter() - t0


class Floor:
    """The floor, measured in between the timings it is compared with (these machines drift by
    ±30 % within minutes). The faster of fp32 and bf16 + channels_last is picked once (medians of a few
    iterations each); ratios are then taken round by round against floor iterations run right next to
    the timing they divide, and their median is reported."""

    def __init__(self, model, n: int, size: int, tries: int = 3) -> None:
        self.args = (model, n, size, model.default_reg_layer)
        medians = {}
        for low in (False, True):
            floor_iteration(*self.args, low)  # warm-up
            medians[low] = statistics.median(floor_iteration(*self.args, low) for _ in range(tries))
        self.low = min(medians, key=medians.__getitem__)
        self.times: list[float] = []

    def sample(self) -> float:
        """One floor iteration (seconds)."""
        self.times.append(floor_iteration(*self.args, self.low))
        return self.times[-1]

    def ms(self) -> float:
        return 1000 * statistics.median(self.times)


def bench(model, image, preset: str, repeats: int, reference: bool) -> dict[str, float]:
    """Lean step, reference step and floor, interleaved round by round (ms, medians)."""
    target = model.predict(image, k=2)[1].index
    run = fw.start_run(model, image, target, preset=preset, steps=10_000, seed=0)
    cfg = run.config
    floor = Floor(model, cfg.n_crops, run.crop_size)
    param = Fourier(run.seeds.clone())
    opt = torch.optim.Adam(param.params, lr=cfg.lr)
    attribution = torch.zeros(1, run.h, run.w)
    gen = torch.Generator().manual_seed(0)

    def ref_step() -> None:
        boxes = sample_boxes(cfg.n_crops, run.h, run.w, cfg.crop_range, gen)
        reference_step(model, param, run.seeds, boxes, run.crop_size, target, run.reg_layer, 1.0, opt, attribution)

    lean, ref, ratios = [], [], []
    for _ in range(3):  # warm-up, past the balance step
        run.step()
    if reference:
        ref_step()
    for _ in range(repeats):
        # step, floor, floor, step: a drift of the machine's speed within the round cancels
        pair = []
        for _ in range(2):
            t0 = time.perf_counter()
            run.step()
            pair.append(time.perf_counter() - t0)
            if len(pair) == 1:
                floors = [floor.sample(), floor.sample()]
        lean += pair
        ratios.append(sum(pair) / sum(floors))
        if reference:
            t0 = time.perf_counter()
            ref_step()
            ref.append(time.perf_counter() - t0)
    return {
        "lean": 1000 * statistics.median(lean),
        "reference": 1000 * statistics.median(ref) if ref else float("nan"),
        "floor": floor.ms(),
        "ratio": statistics.median(ratios),
        "precision": run.policy.precision,
    }


def api(model, image, preset: str, repeats: int, lo: int = 2, hi: int = 8) -> dict[str, float]:
    """Per-step ms through the public API, ``accentuate(steps=hi)`` minus ``accentuate(steps=lo)``
    over ``hi − lo`` steps, round by round with the floor measured in between (medians)."""
    target = model.predict(image, k=2)[1].index
    cfg = fw.PRESETS[preset]
    floor = Floor(model, cfg.n_crops, model.crop_size(cfg.input_size, cfg.input_scale))
    fw.accentuate(model, image, target, preset=preset, steps=lo, seed=0)  # warm-up
    per_step, ratios = [], []
    for i in range(repeats):
        t = {}
        floors = []
        for steps in (lo, hi) if i % 2 == 0 else (hi, lo):  # alternating order: drift cancels
            t0 = time.perf_counter()
            fw.accentuate(model, image, target, preset=preset, steps=steps, seed=0)
            t[steps] = time.perf_counter() - t0
            floors.append(floor.sample())
        per_step.append((t[hi] - t[lo]) / (hi - lo))
        ratios.append(per_step[-1] / statistics.mean(floors))
    return {"api": 1000 * statistics.median(per_step), "floor": floor.ms(), "ratio": statistics.median(ratios)}


def precision(model, image, preset: str, repeats: int) -> dict[str, float]:
    """The engine step with fp32 vs bf16 autocast (+ channels_last), interleaved (ms, medians)."""
    target = model.predict(image, k=2)[1].index
    runs = {
        ac: fw.start_run(model, image, target, preset=preset, steps=10_000, seed=0, autocast=ac) for ac in (False, True)
    }
    times: dict[bool, list[float]] = {False: [], True: []}
    for r in runs.values():
        for _ in range(3):
            r.step()
    for _ in range(repeats):
        for ac, r in runs.items():
            t0 = time.perf_counter()
            r.step()
            times[ac].append(time.perf_counter() - t0)
    return {"fp32": 1000 * statistics.median(times[False]), "bf16": 1000 * statistics.median(times[True])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["preview", "paper"])
    parser.add_argument("--models", nargs="+", default=["efficientnet_lite0", "googlenet"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-api", action="store_true", help="skip the public-API timing (8 vs 2 steps)")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference step (slow)")
    parser.add_argument("--precision", action="store_true", help="only compare the step in fp32 and bf16")
    args = parser.parse_args()
    image = fw.sample_image("chelsea")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu")
    if args.precision:
        print(f"{'model':<30s} {'preset':<8s} {'fp32 ms/step':>13s} {'bf16 ms/step':>13s} {'fp32/bf16':>10s}")
        for name in args.models:
            model = load_benchmark_model(name)
            for preset in args.presets:
                r = precision(model, image, preset, args.repeats)
                ratio = r["fp32"] / r["bf16"]
                print(f"{model.name:<30s} {preset:<8s} {r['fp32']:13.0f} {r['bf16']:13.0f} {ratio:9.2f}x")
        return
    print(
        f"{'model':<30s} {'preset':<8s} {'prec':<5s} {'lean ms':>8s} {'reference ms':>13s} {'speed-up':>9s} "
        f"{'floor ms':>9s} {'step/floor':>11s} {'API ms':>7s} {'floor ms':>9s} {'API/floor':>10s}"
    )
    for name in args.models:
        model = load_benchmark_model(name)
        for preset in args.presets:
            r = bench(model, image, preset, args.repeats, reference=not args.no_reference)
            a = api(model, image, preset, args.repeats) if not args.no_api else None
            api_cols = f"{a['api']:7.0f} {a['floor']:9.0f} {a['ratio']:9.2f}x" if a else ""
            print(
                f"{model.name:<30s} {preset:<8s} {r['precision']:<5s} {r['lean']:8.0f} {r['reference']:13.0f} "
                f"{r['reference'] / r['lean']:8.2f}x {r['floor']:9.0f} {r['ratio']:10.2f}x {api_cols}",
                flush=True,
            )


if __name__ == "__main__":
    main()
