"""The λ 'sensitive region' (appendix E, figure 16 of the paper) for the default model and a
randomly initialised torchvision model, over all sample images.

Each image is accentuated toward its second most likely class at every λ of the grid (one batch
per image); the final regularisation-layer distance from the seed is min-max normalised per image
(smallest λ → 1, largest → 0) and averaged. Prints the table and the recommended λ (where the mean
crosses 0.5) and writes docs/figures/lambda_curve.png.

    python benchmarks/lambda_curve.py                       # CPU setting: preview preset, 25 steps, 4 crops
    python benchmarks/lambda_curve.py --steps 100 --n-crops 16 --preset paper   # the paper's recipe (GPU)
    python benchmarks/lambda_curve.py --models efficientnet_lite0 --images chelsea coffee

Offline: the default model ships its weights; the torchvision model uses random weights.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from _settings import add_engine_arguments, engine_settings

import faccent_widget as fw  # noqa: E402
from faccent_widget.validation import calibrate_lambda  # noqa: E402
from faccent_widget.validation.calibration import DEFAULT_LAMBDA_GRID  # noqa: E402

FIGURE = Path(__file__).resolve().parents[1] / "docs" / "figures" / "lambda_curve.png"


def load(name: str, seed: int) -> fw.Model:
    if name in ("default", "efficientnet_lite0"):
        return fw.load_model()
    torch.manual_seed(seed)  # the random weights, reproducibly
    return fw.load_model(name, pretrained=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--models",
        nargs="+",
        default=["efficientnet_lite0", "resnet18"],
        help="model names; anything but the default model gets random weights",
    )
    parser.add_argument("--images", nargs="+", default=None, help="sample image names (default: all)")
    parser.add_argument("--lambdas", nargs="+", type=float, default=list(DEFAULT_LAMBDA_GRID))
    add_engine_arguments(parser)  # --preset --steps --n-crops --input-size --canvas --seed --fp32
    parser.add_argument("--batch-images", action="store_true", help="all images × λ in one batch (GPU)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", type=Path, default=FIGURE)
    args = parser.parse_args()

    samples = fw.sample_images()
    names = args.images or list(samples)
    images = [samples[n] for n in names]
    settings = engine_settings(args)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS', 'unset')}; images: {', '.join(names)}"
    )
    print("settings: " + ", ".join(f"{k}={v}" for k, v in settings.items() if v is not None))

    fig, ax = plt.subplots(figsize=(6, 3.8), dpi=100)
    for name, colour in zip(args.models, plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        model = load(name, args.seed)
        t0 = time.perf_counter()
        cal = calibrate_lambda(
            model, images, lambdas=args.lambdas, batch_images=args.batch_images, device=args.device, **settings
        )
        wall = time.perf_counter() - t0
        print(
            f"\n== {model.name}: reg layer {cal.reg_layer}; {cal.config.steps} steps × {cal.config.n_crops} "
            f"crops of {cal.config.input_size} px, canvas {cal.config.canvas}; wall {wall:.0f} s"
        )
        print("targets: " + "; ".join(f"{n} → {t}" for n, t in zip(names, cal.targets)))
        print(cal.table())
        cal.plot(ax, label=f"{model.name}: λ* = {cal.recommended:.2g}", color=colour)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_title(f"λ sensitive region ({len(images)} images, mean ± std)", fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    print(f"\nwrote {args.out} ({args.out.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
