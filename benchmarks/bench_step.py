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
``accentuate(steps=2)``, per step).

    python benchmarks/bench_step.py                  # both presets, default model + GoogLeNet
    python benchmarks/bench_step.py --presets preview --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

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


def bench(model, image, preset: str, repeats: int) -> tuple[float, float]:
    target = model.predict(image, k=2)[1].index
    run = fw.start_run(model, image, target, preset=preset, steps=10_000, seed=0)
    cfg = run.config
    param = Fourier(run.seeds.clone())
    opt = torch.optim.Adam(param.params, lr=cfg.lr)
    attribution = torch.zeros(1, run.h, run.w)
    gen = torch.Generator().manual_seed(0)
    lean, ref = [], []
    run.step()  # warm-up both
    reference_step(
        model,
        param,
        run.seeds,
        sample_boxes(cfg.n_crops, run.h, run.w, cfg.crop_range, gen),
        cfg.input_size,
        target,
        run.reg_layer,
        1.0,
        opt,
        attribution,
    )
    for _ in range(repeats):
        t0 = time.perf_counter()
        run.step()
        lean.append(time.perf_counter() - t0)
        boxes = sample_boxes(cfg.n_crops, run.h, run.w, cfg.crop_range, gen)
        t0 = time.perf_counter()
        reference_step(model, param, run.seeds, boxes, cfg.input_size, target, run.reg_layer, 1.0, opt, attribution)
        ref.append(time.perf_counter() - t0)
    return 1000 * statistics.median(lean), 1000 * statistics.median(ref)


def floor_ms(model, preset: str, repeats: int) -> float:
    """Median ms of the model's own work for one step (see the module docstring)."""
    cfg = fw.PRESETS[preset]
    n, size = cfg.n_crops, model.crop_size(cfg.input_size, cfg.input_scale)
    reg = model.default_reg_layer
    best = float("inf")
    for low in (False, True):
        times = []
        for _ in range(repeats + 1):
            crops = torch.rand(n, 3, size, size)
            seeds = torch.rand(n, 3, size, size)
            if low:
                crops = crops.contiguous(memory_format=torch.channels_last)
                seeds = seeds.contiguous(memory_format=torch.channels_last)
            crops.requires_grad_(True)
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=low):
                logits = model.features(crops, logits=True)["logits"]
                with torch.no_grad():
                    model.features(seeds, [reg])
            logits.float()[:, 0].sum().backward()
            times.append(time.perf_counter() - t0)
        best = min(best, statistics.median(times[1:]))
    return 1000 * best


def api_ms(model, image, preset: str) -> float:
    """Per-step ms through the public API: accentuate(steps=8) minus accentuate(steps=2), over 6 steps."""
    target = model.predict(image, k=2)[1].index
    t = {}
    for steps in (2, 8, 2, 8):
        t0 = time.perf_counter()
        fw.accentuate(model, image, target, preset=preset, steps=steps, seed=0)
        t.setdefault(steps, []).append(time.perf_counter() - t0)
    return 1000 * (min(t[8]) - min(t[2])) / 6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["preview", "paper"])
    parser.add_argument("--models", nargs="+", default=["efficientnet_lite0", "googlenet"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-api", action="store_true", help="skip the public-API timing (8 vs 2 steps)")
    args = parser.parse_args()
    image = fw.sample_image("chelsea")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu")
    print(
        f"{'model':<34s} {'preset':<8s} {'lean ms/step':>13s} {'reference ms/step':>18s} {'speed-up':>9s} "
        f"{'floor ms':>9s} {'step/floor':>11s} {'API ms/step':>12s} {'API/floor':>10s}"
    )
    for name in args.models:
        model = fw.load_model(name, pretrained=(name == "efficientnet_lite0"))
        for preset in args.presets:
            lean, ref = bench(model, image, preset, args.repeats)
            floor = floor_ms(model, preset, args.repeats)
            api = api_ms(model, image, preset) if not args.no_api else float("nan")
            print(
                f"{model.name:<34s} {preset:<8s} {lean:13.0f} {ref:18.0f} {ref / lean:8.2f}x "
                f"{floor:9.0f} {lean / floor:10.2f}x {api:12.0f} {api / floor:9.2f}x",
                flush=True,
            )


if __name__ == "__main__":
    main()
