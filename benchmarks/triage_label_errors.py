"""Does triage tell label errors from model errors? Flip a known 10 % of labels and measure.

Builds a labelled folder from the bundled sample images and augmentations (flips, crops, rotations,
colour jitter; the *correct* label of every variant is the default model's top-1 on the clean image,
by construction), flips a known fraction of the labels to another class of the folder, runs
``fw.triage`` (prediction stage only: ``accentuate=False``) and prints precision and recall at
n = number flipped of

* the label-issue ranking (``rank_by="label_issue"``; cleanlab when installed, else the fallback),
* the plain margin ranking (p(predicted) − p(given label), largest first),
* the "likely label error" badge (precision and recall of the flagged set),

plus the prediction throughput. Run from the repository root::

    python benchmarks/triage_label_errors.py [--per-image 25] [--flip 0.1] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image, ImageEnhance, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import faccent_widget as fw  # noqa: E402
from faccent_widget.images import sample_images, to_pil  # noqa: E402


def augment(img: Image.Image, rng: random.Random) -> Image.Image:
    """A random flip, crop (70–100 % of each side), small rotation and colour jitter."""
    if rng.random() < 0.5:
        img = ImageOps.mirror(img)
    w, h = img.size
    s = rng.uniform(0.7, 1.0)
    cw, ch = round(w * s), round(h * s)
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    img = img.crop((x, y, x + cw, y + ch))
    img = img.rotate(rng.uniform(-10, 10), resample=Image.Resampling.BILINEAR, fillcolor=(127, 127, 127))
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.7, 1.3))
    img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.7, 1.3))
    return ImageEnhance.Color(img).enhance(rng.uniform(0.5, 1.5))


def build(root: Path, model: fw.Model, per_image: int, flip: float, seed: int) -> tuple[dict[str, int], set[str]]:
    """Write ``root/c<class>/<name>_<k>.jpg``; returns the class map (folder → class index) and the
    keys whose label was flipped."""
    rng = random.Random(seed)
    clean = sample_images(size=256)
    truth: dict[str, int] = {}
    for name, img in clean.items():
        with torch.no_grad():
            truth[name] = int(model.logits(model.to_input(img)).argmax())
    classes = sorted(set(truth.values()))
    files = [(name, k) for name in sorted(clean) for k in range(per_image)]
    flipped_at = set(rng.sample(range(len(files)), round(flip * len(files))))
    flipped: set[str] = set()
    for i, (name, k) in enumerate(files):
        label = truth[name]
        if i in flipped_at:
            label = rng.choice([c for c in classes if c != label])
        folder = root / f"c{label}"
        folder.mkdir(parents=True, exist_ok=True)
        base = to_pil(clean[name]).convert("RGB")
        (base if k == 0 else augment(base, rng)).save(folder / f"{name}_{k}.jpg", quality=90)
        if i in flipped_at:
            flipped.add(f"c{label}/{name}_{k}.jpg")
    return {f"c{c}": c for c in classes}, flipped


def at_n(ranked: list[str], flipped: set[str]) -> tuple[float, float]:
    n = len(flipped)
    hits = len(set(ranked[:n]) & flipped)
    return hits / n, hits / n  # precision@n and recall@n coincide when n = number flipped


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per-image", type=int, default=25, help="variants of each sample image (1 clean + augmented)")
    ap.add_argument("--flip", type=float, default=0.1, help="fraction of labels flipped")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--label-issues", default="auto", choices=["auto", "cleanlab", "self-confidence"])
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    model = fw.load_model()
    with tempfile.TemporaryDirectory(prefix="faccent-label-errors-") as tmp:
        root = Path(tmp) / "images"
        class_map, flipped = build(root, model, args.per_image, args.flip, args.seed)
        t0 = time.perf_counter()
        report = fw.triage(
            model,
            root,
            out=Path(tmp) / "out",
            class_map=class_map,
            accentuate=False,
            label_issues=args.label_issues,
            exemplars=0,
        )
        seconds = time.perf_counter() - t0
        preds = report.predictions
        by_issue = [p["key"] for p in sorted(preds, key=lambda p: (-p["label_issue"], p["index"]))]
        by_margin = [p["key"] for p in sorted(preds, key=lambda p: (-(p["p_predicted"] - p["p_true"]), p["index"]))]
        flagged = {p["key"] for p in preds if p["likely_label_error"]}
        method = report.index["label_issues"]["method"]
    n, total = len(flipped), len(preds)
    model_errors = sum(1 for p in preds if p["predicted"] != p["true"] and p["key"] not in flipped)
    print(
        f"{total} images ({len(class_map)} classes), {n} labels flipped, {model_errors} model errors on "
        f"unflipped images; prediction stage {total / seconds:.1f} images/s on {torch.get_num_threads()} threads"
    )
    rows = [
        (f"label-issue ranking ({method})", *at_n(by_issue, flipped)),
        ("margin ranking", *at_n(by_margin, flipped)),
    ]
    print(f"\n| ranking | precision@{n} | recall@{n} |\n|---|---|---|")
    for name, p, r in rows:
        print(f"| {name} | {p:.2f} | {r:.2f} |")
    hits = len(flagged & flipped)
    prec = hits / len(flagged) if flagged else 0.0
    print(f'| "likely label error" badge ({len(flagged)} flagged) | {prec:.2f} | {hits / n:.2f} |')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
