"""Path similarity to the seed, layer by layer (figure 8C of the paper), on the sample images.

For each sample image, accentuate toward its second most likely class at several λ (one batch per
image; λ = 0 is the unregularised, still image-seeded accentuation) and run a noise-seeded feature
visualisation toward the same class (classic activation maximisation). Then measure, at every
layer of the default model, the Pearson correlation of each result's activations with those of its
own seed image (paired), averaged over images. Natural images compared with each other (all pairs,
diagonal excluded) give a reference line. Prints early/middle/late layer values and writes
docs/figures/path_similarity.png.

    python benchmarks/path_similarity.py                     # CPU setting: preview preset, 25 steps, 4 crops
    python benchmarks/path_similarity.py --steps 100 --n-crops 16 --preset paper --lambdas 0 0.1 1 10
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from _settings import add_engine_arguments, engine_settings

import faccent_widget as fw  # noqa: E402
from faccent_widget.validation import PathSimilarity, path_similarity  # noqa: E402

FIGURE = Path(__file__).resolve().parents[1] / "docs" / "figures" / "path_similarity.png"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", nargs="+", default=None, help="sample image names (default: all)")
    parser.add_argument("--lambdas", nargs="+", type=float, default=[0.0, 0.1, 1.0, 10.0])
    add_engine_arguments(parser)  # --preset --steps --n-crops --input-size --canvas --seed --fp32
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", type=Path, default=FIGURE)
    args = parser.parse_args()

    model = fw.load_model(device=args.device)
    samples = fw.sample_images()
    names = args.images or list(samples)
    seeds = [samples[n] for n in names]
    settings = engine_settings(args)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS', 'unset')}; model {model.name}; images: {', '.join(names)}"
    )
    print("settings: " + ", ".join(f"{k}={v}" for k, v in settings.items() if v is not None))
    targets = [model.predict(img, k=2)[1].index for img in seeds]

    t0 = time.perf_counter()
    by_lam: dict[float, list[fw.Accentuation]] = {lam: [] for lam in args.lambdas}
    for img, target in zip(seeds, targets):
        results = fw.accentuate(model, img, [target] * len(args.lambdas), lam=list(args.lambdas), **settings)
        for lam, acc in zip(args.lambdas, results):
            by_lam[lam].append(acc)
    t_acc = time.perf_counter() - t0
    t0 = time.perf_counter()
    vis = fw.visualize(model, targets, **settings)
    t_vis = time.perf_counter() - t0
    cfg = vis[0].config
    print(
        f"accentuations: {len(seeds)} images × {len(args.lambdas)} λ in {t_acc:.0f} s; "
        f"noise-seeded visualisations: {len(vis)} in {t_vis:.0f} s "
        f"({cfg['steps']} steps × {cfg['n_crops']} crops of {cfg['input_size']} px, canvas {cfg['canvas']})"
    )

    t0 = time.perf_counter()
    curves: dict[str, PathSimilarity] = {}
    for lam in args.lambdas:
        label = "λ = 0 (image-seeded, unregularised)" if lam == 0 else f"accentuation λ = {lam:g}"
        curves[label] = path_similarity(model, by_lam[lam], seeds, paired=True)
    curves["noise-seeded visualisation"] = path_similarity(model, vis, seeds, paired=True)
    natural = path_similarity(model, seeds, exclude_diagonal=True)
    t_sim = time.perf_counter() - t0
    print(
        f"path similarity over {len(natural.layers)} layers (every module with a tensor output + logits) "
        f"in {t_sim:.0f} s\n"
    )

    blocks = model.block_layers
    picks = {}
    for tag, f in (("early", 0.15), ("middle", 0.5), ("late", 0.85)):
        picks[tag] = min(blocks, key=lambda n: abs(model.layer_depth(n) - f))
    picks["logits"] = "logits"
    header = (
        f"{'similarity to the seed (mean ± std over images)':<40s}"
        + "".join(f"{tag + ' ' + n:>22s}" for tag, n in picks.items())
        + f"{'all-layer mean':>16s}"
    )
    print(header)
    rows = [*curves.items(), ("natural vs other natural images", natural)]
    for label, sim in rows:
        cells = "".join(f"{sim.per_layer[n]:>15.3f} ± {sim.std[n]:<4.2f}" for n in picks.values())
        print(f"{label:<40s}{cells}{sim.mean:>16.3f}")

    # The plot shows the block outputs (and the logits): every module's curve is a sawtooth, because
    # pre-activation outputs (BatchNorm, Identity) carry per-channel offsets shared by all images.
    shown = [*blocks, "logits"]
    fig, ax = plt.subplots(figsize=(7, 3.8), dpi=100)
    colours = plt.cm.viridis(np.linspace(0.1, 0.85, len(args.lambdas)))
    for (label, sim), colour in zip(
        [*curves.items(), ("natural vs other natural images", natural)], [*colours, "tab:red", "grey"]
    ):
        x = [sim.depth[n] for n in shown]
        y = [sim.per_layer[n] for n in shown]
        style = ":" if sim is natural else "-"
        ax.plot(x, y, style, marker="o", ms=3, color=colour, lw=1.4, label=label)
    ax.set_xlabel("relative depth of the block output (0 = input, 1 = logits)")
    ax.set_ylabel("Pearson ρ with the seed's activations")
    ax.set_ylim(-0.05, 1.02)
    ax.set_title(f"{model.name}: path similarity to the seed, block outputs ({len(seeds)} images)", fontsize=10)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    print(f"\nwrote {args.out} ({args.out.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
