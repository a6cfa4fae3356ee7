"""Transferability of accentuations to models that were never optimised (issue 24; MACO's test).

Every sample image is accentuated with the default model (EfficientNet-Lite0) toward its 2nd most
likely class, per preset; EfficientNet-Lite1 (240 px) and Lite2 (260 px), from their wheels, judge the
result. For each preset the table gives the optimised model's full-image log-probability gain of the
target, the RMSE to the seed, and per judge the gain, its ratio to the optimised gain and the judge's
top-1 hits on the target; below it the same for a plain gradient attack on Lite0 stopped at the same
Lite0 gain (the floor to read the ratio against). Per image it prints (and ``--json`` keeps) every
model's probability of the target on the seed and on the result, and each judge's top-1 class.

    python benchmarks/transferability.py                       # preview (CPU-sized)
    python benchmarks/transferability.py --presets preview gpu paper --json transfer.json
    python benchmarks/transferability_figure.py transfer.json --out transfer.png

Targets (issue 24): ratio ≥ 1.0 and held-out top-1 ≥ 80 % for preview and gpu at RMSE ≤ 0.06.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

import faccent_widget as fw


def _probe(model: fw.Model, image: torch.Tensor, cls: int) -> tuple[float, str]:
    """(p(cls), top-1 label) of the full image on ``model``."""
    probs = model.probabilities(image)
    return float(probs[cls]), model.labels[int(probs.argmax())]


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["preview"])
    parser.add_argument("--images", nargs="*", default=None, help="sample image names (default: all 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write here (other presets in the file are kept)")
    args = parser.parse_args()

    model = fw.load_model()
    judges = [fw.load_model("efficientnet_lite1"), fw.load_model("efficientnet_lite2")]
    images = fw.sample_images()
    names = args.images or list(images)
    targets = {k: model.predict(images[k], k=2)[1] for k in names}
    device = f"{_cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    if torch.cuda.is_available():
        device = torch.cuda.get_device_name()
    out: dict[str, dict[str, object]] = {}
    if args.json and args.json.exists():  # one file can collect presets measured in separate runs
        out = json.loads(args.json.read_text())
    for preset in args.presets:
        print(f"preset {preset}: accentuating {len(names)} images …", flush=True)
        load_before = os.getloadavg()[0]
        start = time.perf_counter()
        results = []
        for k in names:
            results.append(fw.accentuate(model, images[k], targets[k][0], preset=preset, seed=args.seed))
            print(f"  {k}: {time.perf_counter() - start:.0f} s", flush=True)
        seconds = time.perf_counter() - start
        start = time.perf_counter()
        t = fw.transferability(model, results, judges)
        scoring = time.perf_counter() - start
        print(
            f"\n### preset {preset} ({len(names)} images, {seconds:.0f} s of accentuation, "
            f"{scoring:.0f} s of scoring + attack; {device})\n"
        )
        print(t.table())
        per_image = []
        for i, (k, r) in enumerate(zip(names, results)):
            cls, label = targets[k][0], targets[k][1]
            row: dict[str, object] = {
                "image": k,
                "target": label,
                "gain": float(t.gain[i]),
                "rmse": float(t.rmse[i]),
                "attack_gain": float(t.attack_gain[i]),
                "attack_rmse": float(t.attack_rmse[i]),
                "p_seed": _probe(model, r.seed, cls)[0],
                "p_final": _probe(model, r.image, cls)[0],
                "judges": {},
            }
            line = f"  {k:13s} → {label:20s} Lite0 p {row['p_seed']:.2f}→{row['p_final']:.2f} gain {t.gain[i]:+.2f}"
            line += f"  rmse {t.rmse[i]:.3f} |"
            for j in judges:
                p_seed, _ = _probe(j, r.seed, cls)
                p_final, top = _probe(j, r.image, cls)
                row["judges"][j.name] = {  # type: ignore[index]
                    "gain": float(t.judge_gain[j.name][i]),
                    "top1": bool(t.judge_top1[j.name][i]),
                    "p_seed": p_seed,
                    "p_final": p_final,
                    "top1_label": top,
                    "attack_gain": float(t.attack_judge_gain[j.name][i]),
                    "attack_top1": bool(t.attack_judge_top1[j.name][i]),
                }
                line += f" {j.name[-5:]} p {p_seed:.2f}→{p_final:.2f} ({t.judge_gain[j.name][i]:+.2f}, top-1 {top})"
            per_image.append(row)
            print(line)
        out[preset] = {
            "ratio": t.ratio(),
            "top1": t.top1(),
            "attack_ratio": t.ratio(attack=True),
            "attack_top1": t.top1(attack=True),
            "gain": float(t.gain.mean()),
            "rmse": float(t.rmse.mean()),
            "attack_gain": float(t.attack_gain.mean()),
            "attack_rmse": float(t.attack_rmse.mean()),
            "per_judge": {
                j: {
                    "gain": float(t.judge_gain[j].mean()),
                    "ratio": t.ratio(j),
                    "top1": t.top1(j),
                    "attack_gain": float(t.attack_judge_gain[j].mean()),
                    "attack_ratio": t.ratio(j, attack=True),
                    "attack_top1": t.top1(j, attack=True),
                }
                for j in t.judges
            },
            "images": per_image,
            "n_images": len(names),
            "seconds": seconds,
            "scoring_seconds": scoring,
            "device": device,
            "load_average": [load_before, os.getloadavg()[0]],
        }
        if args.json:  # written after every preset, so a long run keeps what it finished
            args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
