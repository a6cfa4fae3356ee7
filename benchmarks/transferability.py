"""Transferability of accentuations to models that were never optimised (issue 24; MACO's test).

Every sample image is accentuated with the default model (EfficientNet-Lite0) toward its 2nd most
likely class, per preset; EfficientNet-Lite1 (240 px) and Lite2 (260 px), from their wheels, judge the
result. For each preset the table gives the optimised model's full-image log-probability gain of the
target, the RMSE to the seed, and per judge the gain, its ratio to the optimised gain and the judge's
top-1 hits on the target; below it the same for a plain gradient attack on Lite0 stopped at the same
Lite0 gain (the floor to read the ratio against).

    python benchmarks/transferability.py                       # preview (CPU-sized)
    python benchmarks/transferability.py --presets preview gpu paper --json transfer.json

Targets (issue 24): ratio ≥ 1.0 and held-out top-1 ≥ 80 % for preview and gpu at RMSE ≤ 0.06.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import faccent_widget as fw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["preview"])
    parser.add_argument("--images", nargs="*", default=None, help="sample image names (default: all 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    model = fw.load_model()
    judges = [fw.load_model("efficientnet_lite1"), fw.load_model("efficientnet_lite2")]
    images = fw.sample_images()
    names = args.images or list(images)
    targets = {k: model.predict(images[k], k=2)[1] for k in names}
    out: dict[str, dict[str, object]] = {}
    for preset in args.presets:
        start = time.perf_counter()
        results = [fw.accentuate(model, images[k], targets[k][0], preset=preset, seed=args.seed) for k in names]
        seconds = time.perf_counter() - start
        t = fw.transferability(model, results, judges)
        print(f"\n### preset {preset} ({len(names)} images, {seconds:.0f} s of accentuation)\n")
        print(t.table())
        for k, g, r, *js in zip(names, t.gain, t.rmse, *(t.judge_gain[j.name] for j in judges)):
            print(
                f"  {k:14s} → {targets[k][1]:22s} gain {g:+.2f}  rmse {r:.3f}  judges "
                + " ".join(f"{v:+.2f}" for v in js)
            )
        out[preset] = {
            "ratio": t.ratio(),
            "top1": t.top1(),
            "attack_ratio": t.ratio(attack=True),
            "attack_top1": t.top1(attack=True),
            "gain": float(t.gain.mean()),
            "rmse": float(t.rmse.mean()),
            "attack_rmse": float(t.attack_rmse.mean()),
            "per_judge": {j: {"ratio": t.ratio(j), "top1": t.top1(j)} for j in t.judges},
            "seconds": seconds,
        }
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
