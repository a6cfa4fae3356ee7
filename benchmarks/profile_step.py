"""Where the time of one engine step goes: ``torch.profiler`` over a few ``AccentuationRun.step()`` calls,
grouped into the parts of the recipe (model forward, model backward, crops, parameterization, optimiser,
other), for the preview and paper presets on the default model and GoogLeNet.

    python benchmarks/profile_step.py                       # both presets, both models
    python benchmarks/profile_step.py --presets preview --steps 3

Run it at two commits to compare before/after; read shares, not absolute times (noisy machines).
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

import faccent_widget as fw

#: op-name fragments → part of the step (first match wins; backward ops are named "...Backward...")
PARTS = [
    ("crops", ("roi_align", "RoiAlign")),
    ("fft (parameterization)", ("fft", "Fft")),
    ("optimiser", ("adam", "Adam", "_fused")),
    ("model backward", ("Backward", "backward")),
    (
        "model forward",
        (
            "conv",
            "batch_norm",
            "linear",
            "addmm",
            "relu",
            "silu",
            "hardtanh",
            "max_pool",
            "avg_pool",
            "mean",
            "cat",
            "mm",
        ),
    ),
]


def classify(name: str) -> str:
    for part, keys in PARTS:
        if any(k in name for k in keys):
            return part
    return "other"


def profile_one(model: fw.Model, image: torch.Tensor, preset: str, steps: int) -> tuple[float, dict[str, float]]:
    target = model.predict(image, k=2)[1].index
    run = fw.start_run(model, image, target, preset=preset, steps=steps + 3, seed=0)
    run.step()
    run.step()  # warm-up, and past the balance step
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            run.step()
    parts: dict[str, float] = defaultdict(float)
    total = 0.0
    for evt in prof.key_averages():
        t = evt.self_cpu_time_total / 1000.0 / steps  # ms per step
        parts[classify(evt.key)] += t
        total += t
    return total, dict(parts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["preview", "paper"])
    p.add_argument("--models", nargs="+", default=["efficientnet_lite0", "googlenet"])
    p.add_argument("--steps", type=int, default=2)
    args = p.parse_args()
    image = fw.sample_image("chelsea")
    names = [part for part, _ in PARTS] + ["other"]
    print(f"{'model':<30s} {'preset':<8s} {'ms/step':>8s}  " + "  ".join(f"{n[:14]:>14s}" for n in names))
    for name in args.models:
        model = fw.load_model(name, pretrained=(name == "efficientnet_lite0"))
        for preset in args.presets:
            total, parts = profile_one(model, image, preset, args.steps)
            shares = "  ".join(f"{100 * parts.get(n, 0.0) / total:13.0f}%" for n in names)
            print(f"{model.name:<30s} {preset:<8s} {total:8.0f}  {shares}", flush=True)


if __name__ == "__main__":
    main()
