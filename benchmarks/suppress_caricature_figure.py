"""What suppress and caricature show on two sample images (issue 24): the README's figure.

Per image: the photo, ``suppress(<its top class>)`` (what the accentuation dims is what argued for the
class) and ``caricature(<layer>)`` (the image's own activation pattern at a layer, amplified), each with
the model's top class and p before → after on the full image, and for the caricature how far the layer's
channel vector (mean over positions, full image) goes along the seed's own: its projection on the seed's
vector over the seed's length² (1 = the seed), with the cosine beside it (preview preset, seed 0).

    python benchmarks/suppress_caricature_figure.py --out docs/figures/suppress_caricature.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import faccent_widget as fw  # noqa: E402


def _channel_vector(model: fw.Model, image: torch.Tensor, layer: str) -> torch.Tensor:
    feats = model.features(model.to_input(image[None]), [layer])[layer]
    return feats.float().flatten(2).mean(2)[0] if feats.dim() == 4 else feats.float().flatten(1)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", nargs="+", default=["coffee", "chelsea"])
    parser.add_argument("--layer", default="blocks.3.0", help="caricature layer (default blocks.3.0)")
    parser.add_argument("--out", type=Path, default=Path("suppress_caricature.png"))
    args = parser.parse_args()

    model = fw.load_model()
    rows, numbers = [], {}
    for name in args.images:
        image = fw.sample_image(name)
        top = model.predict(image, k=1)[0]
        sup = fw.accentuate(model, image, fw.suppress(top.index), preset="preview", seed=0)
        car = fw.accentuate(model, image, fw.caricature(args.layer), preset="preview", seed=0)
        # on the full image: how far the caricature's channel vector goes along the seed's own (1 = as the seed)
        seed_vec = _channel_vector(model, car.seed, args.layer)
        after_vec = _channel_vector(model, car.image, args.layer)
        along = float(after_vec @ seed_vec / (seed_vec @ seed_vec))
        cos_car = float(torch.nn.functional.cosine_similarity(seed_vec, after_vec, 0))
        p_before = float(model.probabilities(image)[top.index])
        p_sup = float(model.probabilities(sup.image)[top.index])
        top_sup = model.predict(sup.image, k=1)[0]
        top_car = model.predict(car.image, k=1)[0]
        numbers[name] = {
            "top_class": top.label,
            "suppress": {"p_before": p_before, "p_after": p_sup, "top_after": top_sup.label, "rmse": _rmse(sup)},
            "caricature": {
                "layer": args.layer,
                "along_seed_pattern": along,
                "cosine_to_seed_pattern": cos_car,
                "top_after": f"{top_car.label} ({top_car.prob:.2f})",
                "objective_gain": float(car.history["objective"][-1] - car.history["objective"][0]),
                "rmse": _rmse(car),
            },
        }
        rows.append((name, top, sup, car, numbers[name]))
        print(name, json.dumps(numbers[name]))

    fig, axes = plt.subplots(len(rows), 3, figsize=(10.5, 3.7 * len(rows)))
    for r, (name, top, sup, car, n) in enumerate(rows):
        panels = [
            (sup.seed, f"{name}: {top.label} p {n['suppress']['p_before']:.2f}"),
            (sup.image, f"suppress({top.label}): p {n['suppress']['p_after']:.2f}\nnow: {n['suppress']['top_after']}"),
            (car.image, f"caricature({args.layer}): its own pattern ×{n['caricature']['along_seed_pattern']:.2f}\n"
             f"top: {n['caricature']['top_after']}"),
        ]  # fmt: skip
        for c, (img, title) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy())
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    fig.suptitle("Suppress (drive away from the top class) and caricature (amplify the layer's own pattern)")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    args.out.with_suffix(".json").write_text(json.dumps(numbers, indent=2))
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}")


def _rmse(result: fw.Accentuation) -> float:
    return float(((result.image - result.seed.clamp(0, 1)) ** 2).mean().sqrt())


if __name__ == "__main__":
    main()
