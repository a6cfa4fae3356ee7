"""Quality of presets and candidate settings on the sample images: gain, closeness, flip retention, time.

For every sample image (``fw.sample_images()``) the target is its 2nd most likely class under the
default model (as ``python -m faccent_widget`` does). Each candidate accentuates every image toward its
target (images with nearly the same canvas shape run as one batch), then:

* **gain** — log-softmax of the target on the full image at the model's input size, final minus seed;
* **rmse** — RMSE of the final image to the seed, in [0, 1] pixel units at the canvas size;
* **flip retention** — the gain measured on the horizontally mirrored final image and mirrored seed,
  divided by the unmirrored gain (an edit that only works in one orientation is adversarial texture;
  a semantic edit survives the mirror). Mean of the per-image ratios, and the ratio of the sums;
* **seconds** — wall time of the accentuations (synchronised), total and per image.

Issue 14's targets for a GPU preset: mean gain ≥ the preview's, mean RMSE ≤ 0.06, flip retention ≥ 0.9.

    python benchmarks/preset_quality.py                                      # presets preview and paper
    python benchmarks/preset_quality.py --presets preview paper \\
        --candidate fast:steps=60,n_crops=16,canvas=320,input_size=224,noise=0.02 \\
        --candidate appendixA:preset=paper,noise=0.02 --figure quality.png --json quality.json

A candidate is ``name:key=value,...`` with any ``fw.accentuate`` setting (``steps``, ``n_crops``,
``input_size``, ``canvas``, ``noise``, ``lr``, ``lam``, ``param``, ``crop_range=lo/hi``, ``reg_layer``,
``autocast`` …) on top of ``preset=`` (default: paper).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import faccent_widget as fw

#: Images whose canvas height and width are within this fraction of a group's first image run in its
#: batch (resized to its shape: chelsea 512×770 joins china 512×767 with a 0.4 % stretch).
SHAPE_TOLERANCE = 0.02
TARGETS = {"rmse_max": 0.06, "flip_retention_min": 0.9}


# ---------------------------------------------------------------------------------------------- candidates
def parse_value(key: str, text: str) -> Any:
    text = text.strip()
    if key == "crop_range":
        lo, hi = (float(v) for v in text.replace("-", "/").split("/"))
        return (lo, hi)
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "auto"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_candidate(spec: str) -> tuple[str, dict[str, Any]]:
    """``name:key=value,key=value`` → (name, settings). A bare preset name is that preset."""
    name, _, rest = spec.partition(":")
    name = name.strip()
    if not name:
        raise ValueError(f"candidate {spec!r} has no name (write name:key=value,...)")
    settings: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"candidate {name!r}: {item!r} is not key=value")
        settings[key.strip()] = parse_value(key.strip(), value)
    if not rest and name in fw.PRESETS:
        settings["preset"] = name
    settings.setdefault("preset", "paper")
    if settings["preset"] not in fw.PRESETS:
        raise ValueError(f"candidate {name!r}: unknown preset {settings['preset']!r}; known: {', '.join(fw.PRESETS)}")
    return name, settings


def resolved(settings: dict[str, Any]) -> dict[str, Any]:
    """The preset's values with the candidate's overrides (for the table and the JSON)."""
    return {**fw.PRESETS[settings["preset"]].as_dict(), **settings}


# ---------------------------------------------------------------------------------------------- measuring
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


@torch.no_grad()
def target_log_probs(model: fw.Model, images: torch.Tensor, targets: list[int]) -> torch.Tensor:
    """(B,) log-softmax of each target on the full (B, 3, H, W) images resized to the model's input size."""
    size = model.input_size
    x = F.interpolate(
        images.to(model.device), size=(size, size), mode="bilinear", antialias=True, align_corners=False
    ).clamp(0, 1)
    logp = model.logits(x).float().log_softmax(-1)
    return logp[torch.arange(len(targets)), torch.as_tensor(targets, device=logp.device)].cpu()


def groups_by_shape(shapes: list[tuple[int, int]]) -> list[list[int]]:
    """Indices grouped so that every shape is within SHAPE_TOLERANCE of its group's first."""
    groups: list[list[int]] = []
    for i, (h, w) in enumerate(shapes):
        for g in groups:
            h0, w0 = shapes[g[0]]
            if abs(h - h0) <= SHAPE_TOLERANCE * h0 and abs(w - w0) <= SHAPE_TOLERANCE * w0:
                g.append(i)
                break
        else:
            groups.append([i])
    return groups


def evaluate_candidate(
    model: fw.Model,
    names: list[str],
    images: list[torch.Tensor],
    targets: list[int],
    settings: dict[str, Any],
    batch: str,
    seed: int,
) -> dict[str, Any]:
    canvas = int(resolved(settings)["canvas"])
    shapes = [tuple(fw.load_image(img, size=canvas).shape[-2:]) for img in images]
    if batch == "none":
        groups = [[i] for i in range(len(images))]
    elif batch == "all":
        groups = [list(range(len(images)))]
    else:
        groups = groups_by_shape(shapes)  # type: ignore[arg-type]
    results: list[Any] = [None] * len(images)
    seconds = 0.0
    for group in groups:
        synchronize(model.device)
        t = time.perf_counter()
        out = fw.accentuate(model, [images[i] for i in group], [targets[i] for i in group], seed=seed, **settings)
        synchronize(model.device)
        seconds += time.perf_counter() - t
        for i, r in zip(group, out):
            results[i] = r
    per_image = []
    for group in groups:
        finals = torch.stack([results[i].image for i in group])
        seeds = torch.stack([results[i].seed for i in group])
        tg = [targets[i] for i in group]
        gain = target_log_probs(model, finals, tg) - target_log_probs(model, seeds, tg)
        flip_gain = target_log_probs(model, finals.flip(-1), tg) - target_log_probs(model, seeds.flip(-1), tg)
        rmse = (finals - seeds).pow(2).flatten(1).mean(1).sqrt()
        for j, i in enumerate(group):
            per_image.append(
                {
                    "image": names[i],
                    "target": targets[i],
                    "label": model.labels[targets[i]],
                    "canvas": list(results[i].image.shape[-2:]),
                    "gain": float(gain[j]),
                    "flip_gain": float(flip_gain[j]),
                    "flip_retention": float(flip_gain[j] / gain[j]) if abs(float(gain[j])) > 1e-6 else math.nan,
                    "rmse": float(rmse[j]),
                }
            )
    per_image.sort(key=lambda r: names.index(r["image"]))
    gains = [r["gain"] for r in per_image]
    flips = [r["flip_gain"] for r in per_image]
    ratios = [r["flip_retention"] for r in per_image if math.isfinite(r["flip_retention"])]
    return {
        "settings": resolved(settings),
        "images": per_image,
        "finals": [results[i].image for i in range(len(images))],
        "seeds": [results[i].seed for i in range(len(images))],
        "mean_gain": statistics.mean(gains),
        "mean_rmse": statistics.mean(r["rmse"] for r in per_image),
        "flip_retention": statistics.mean(ratios) if ratios else math.nan,
        "flip_retention_of_sums": sum(flips) / sum(gains) if abs(sum(gains)) > 1e-6 else math.nan,
        "seconds": seconds,
        "seconds_per_image": seconds / len(images),
        "batches": len(groups),
    }


# ---------------------------------------------------------------------------------------------- output
def figure(path: Path, names: list[str], labels: list[str], rows: dict[str, dict[str, Any]], height: int) -> None:
    """Rows = images, columns = seed + each candidate (with its gain and RMSE under each tile)."""
    from PIL import Image

    strips = []
    for i, name in enumerate(names):
        first = next(iter(rows.values()))
        tiles = [first["seeds"][i]]
        captions = [f"{name} -> {labels[i]}"]
        for cand, res in rows.items():
            tiles.append(res["finals"][i])
            m = res["images"][i]
            captions.append(f"{cand}: {m['gain']:+.2f} / {m['rmse']:.3f}")
        strips.append(fw.labelled_strip(tiles, captions, height=height))
    width = max(s.width for s in strips)
    sheet = Image.new("RGB", (width, sum(s.height for s in strips)), (255, 255, 255))
    y = 0
    for s in strips:
        sheet.paste(s, (0, y))
        y += s.height
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def print_table(rows: dict[str, dict[str, Any]], baseline: str | None) -> None:
    print(
        f"\n{'candidate':<16s} {'preset':<8s} {'steps':>5s} {'crops':>5s} {'input':>5s} {'canvas':>6s} {'noise':>6s} "
        f"{'gain':>7s} {'rmse':>6s} {'flip':>6s} {'flipΣ':>6s} {'s':>7s} {'s/img':>6s}  targets"
    )
    base_gain = rows[baseline]["mean_gain"] if baseline in rows else None
    for name, r in rows.items():
        s = r["settings"]
        ok = [r["mean_rmse"] <= TARGETS["rmse_max"], r["flip_retention"] >= TARGETS["flip_retention_min"]]
        if base_gain is not None:
            ok.insert(0, r["mean_gain"] >= base_gain)
        verdict = "all met" if all(ok) else "missed"
        print(
            f"{name:<16s} {s['preset']:<8s} {s['steps']:5d} {s['n_crops']:5d} {s['input_size']:5d} {s['canvas']:6d} "
            f"{s.get('noise', 0.0):6.3f} {r['mean_gain']:+7.3f} {r['mean_rmse']:6.3f} {r['flip_retention']:6.2f} "
            f"{r['flip_retention_of_sums']:6.2f} {r['seconds']:7.2f} {r['seconds_per_image']:6.2f}  {verdict}"
        )
    crit = f"gain ≥ {baseline}'s ({base_gain:+.3f}), " if base_gain is not None else ""
    print(f"targets: {crit}RMSE ≤ {TARGETS['rmse_max']}, flip retention ≥ {TARGETS['flip_retention_min']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--presets",
        nargs="*",
        default=None,
        help="named presets to include (default: preview paper, or none when candidates are given)",
    )
    p.add_argument("--candidate", action="append", default=[], help="name:key=value,... (repeatable)")
    p.add_argument("--images", nargs="+", default=None, help="sample image names (default: all)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--batch",
        choices=["shape", "all", "none"],
        default="shape",
        help="batch images of (nearly) the same canvas shape (default), all of them, or none",
    )
    p.add_argument("--baseline", default="preview", help="candidate whose gain the others must match (default preview)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--figure", default=None, help="comparison figure (PNG): rows = images, columns = seed + candidates")
    p.add_argument("--figure-height", type=int, default=160)
    p.add_argument("--json", default=None, help="write the numbers as JSON")
    args = p.parse_args(argv)

    presets = args.presets if args.presets is not None else ([] if args.candidate else ["preview", "paper"])
    candidates: dict[str, dict[str, Any]] = {}
    try:
        for name in presets:
            candidates[name] = parse_candidate(name)[1]
        for spec in args.candidate:
            name, settings = parse_candidate(spec)
            candidates[name] = settings
    except ValueError as exc:
        p.error(str(exc))
    if not candidates:
        p.error("nothing to measure: give --presets and/or --candidate")

    device = torch.device(args.device)
    model = fw.load_model(device=device)
    samples = fw.sample_images()
    names = args.images or list(samples)
    unknown = [n for n in names if n not in samples]
    if unknown:
        p.error(f"unknown sample image(s) {', '.join(unknown)}; available: {', '.join(samples)}")
    images = [samples[n] for n in names]
    targets = [model.predict(img, k=2)[1].index for img in images]
    labels = [model.labels[t] for t in targets]
    print(
        f"model {model.name} on {device}; {len(images)} images; targets: "
        + ", ".join(f"{n} → {lab}" for n, lab in zip(names, labels)),
        flush=True,
    )

    # warm-up (cuDNN / cuFFT plans, autocast caches) so that the first candidate's time is fair
    fw.accentuate(
        model,
        images[0],
        targets[0],
        seed=args.seed,
        steps=2,
        **{k: v for k, v in next(iter(candidates.values())).items() if k != "steps"},
    )

    rows: dict[str, dict[str, Any]] = {}
    for name, settings in candidates.items():
        try:
            rows[name] = evaluate_candidate(model, names, images, targets, settings, args.batch, args.seed)
        except Exception as exc:  # noqa: BLE001 - a bad candidate is reported, the others still run
            print(f"{name}: FAILED — {type(exc).__name__}: {exc}", flush=True)
            continue
        r = rows[name]
        print(
            f"{name}: gain {r['mean_gain']:+.3f}, rmse {r['mean_rmse']:.3f}, flip retention "
            f"{r['flip_retention']:.2f}, {r['seconds']:.1f} s in {r['batches']} batches",
            flush=True,
        )
    if not rows:
        print("no candidate finished")
        return 1
    print_table(rows, args.baseline if args.baseline in rows else None)

    if args.figure:
        figure(Path(args.figure), names, labels, rows, args.figure_height)
        print(f"figure written to {Path(args.figure).resolve()}")
    if args.json:
        report = {
            "device": str(device),
            "model": model.name,
            "images": names,
            "targets": targets,
            "labels": labels,
            "batch": args.batch,
            "seed": args.seed,
            "targets_issue14": TARGETS,
            "baseline": args.baseline,
            "torch": torch.__version__,
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "candidates": {n: {k: v for k, v in r.items() if k not in ("finals", "seeds")} for n, r in rows.items()},
        }
        Path(args.json).write_text(json.dumps(report, indent=2, default=str, allow_nan=True))
        print(f"JSON written to {Path(args.json).resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
