"""Median time per optimisation step: the engine's lean step vs a straightforward reference step.

The reference step does it the way the reference library (faccent 1.0.3) does:
  * the seed crops are concatenated into the candidate's batch and run through the full model;
  * crops are cut and resized one by one in a Python loop (antialiased interpolate);
  * a second backward pass computes the attribution (|∂objective/∂image|).

Both run in this one process, interleaved, on the same model, image and boxes; the ratio is what to
read (these machines are noisy).

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
    reference_step(model, param, run.seeds, sample_boxes(cfg.n_crops, run.h, run.w, cfg.crop_range, gen),
                   cfg.input_size, target, run.reg_layer, 1.0, opt, attribution)
    for _ in range(repeats):
        t0 = time.perf_counter()
        run.step()
        lean.append(time.perf_counter() - t0)
        boxes = sample_boxes(cfg.n_crops, run.h, run.w, cfg.crop_range, gen)
        t0 = time.perf_counter()
        reference_step(model, param, run.seeds, boxes, cfg.input_size, target, run.reg_layer, 1.0, opt, attribution)
        ref.append(time.perf_counter() - t0)
    return 1000 * statistics.median(lean), 1000 * statistics.median(ref)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["preview", "paper"])
    parser.add_argument("--models", nargs="+", default=["efficientnet_lite0", "googlenet"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    image = fw.sample_image("chelsea")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu")
    print(f"{'model':<34s} {'preset':<8s} {'lean ms/step':>13s} {'reference ms/step':>18s} {'speed-up':>9s}")
    for name in args.models:
        model = fw.load_model(name, pretrained=(name == "efficientnet_lite0"))
        for preset in args.presets:
            lean, ref = bench(model, image, preset, args.repeats)
            print(f"{model.name:<34s} {preset:<8s} {lean:13.0f} {ref:18.0f} {ref / lean:8.2f}x", flush=True)


if __name__ == "__main__":
    main()
