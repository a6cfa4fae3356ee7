"""Super-natural path similarity (appendix A, figures 8 and 12 of the paper) on images we ship.

The paper accentuates correctly predicted ImageNet validation images toward their class and compares
their hidden activations (Pearson ρ per layer) with the other natural images of the class, against
natural-to-natural. Offline we have no labelled class with many photos, so a "class" here is a class
the default model predicts (top-1) for several *distinct* photos we ship:

* ``faces``: skimage's LFW subset (100 distinct 25 × 25 grayscale face photos, upscaled), which the
  model calls "Windsor tie" or "pickelhaube", and its 100 non-face patches, which it calls "cleaver";
  the most confident photos of each class are its natural images.
* ``views`` (``--tier views``): the stereo pair motorcycle_left/right ("moped"; two photos of one
  scene) with augmented views (crops, flips, colour jitter); views share their photo's source, so
  they are never compared with each other nor with an accentuation of their own photo.

Each class: ``--seeds`` photos accentuated toward the class at every λ (balanced λ), ``--noise``
noise-seeded visualisations, all compared with the class's natural images (an accentuation never
with its own seed's photo). Normalised as figure 12A (difference to natural-to-natural, 0 = natural)
and as a ratio (1 = natural). Writes docs/benchmarks/supernatural_cpu.{json,png}.

    python benchmarks/supernatural.py                         # CPU-sized: 3 classes, 20 steps
    python benchmarks/supernatural.py --tier faces views --steps 40 --n-crops 4 --input-size 160
"""

from __future__ import annotations

import argparse
import json
import pickle
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import skimage.data  # noqa: E402
import torch  # noqa: E402

import faccent_widget as fw  # noqa: E402
from faccent_widget.validation import SuperNatural, supernatural  # noqa: E402
from faccent_widget.validation.supernatural import NOISE, lambda_name  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "supernatural_cpu"
MODERATE = (0.1, 1.0)


def lfw_classes(model: fw.Model, labels: list[str], per_class: int) -> dict[str, list[torch.Tensor]]:
    """The ``per_class`` LFW-subset photos the model calls each label most confidently (top-1 only)."""
    raw = torch.tensor(skimage.data.lfw_subset()).float()  # (200, 25, 25): 100 faces, 100 non-faces
    photos = [p[None].repeat(3, 1, 1) for p in raw]
    with torch.no_grad():
        probs = model.logits(model.to_input(photos)).float().softmax(-1)
    out = {}
    for label in labels:
        k = model.class_index(label)
        top = [int(i) for i in probs[:, k].argsort(descending=True) if int(probs[i].argmax()) == k]
        out[label] = [photos[i] for i in top[:per_class]]
    return out


def verdict(res: SuperNatural) -> list[str]:
    """Plain sentences with numbers: super-natural at moderate λ? λ = 0 toward the noise curve?"""
    mean = res.mean
    lines = []
    diff = {name: mean.normalised(name) for name in mean.curves}
    moderate = [lambda_name(lam) for lam in MODERATE if lambda_name(lam) in diff]
    best = np.max([diff[n] for n in moderate], axis=0) if moderate else np.full(len(mean.layers), np.nan)
    share = float(np.mean(best >= 0))
    late = mean.depths() >= 0.5
    lines.append(
        f"moderate λ ({', '.join(moderate)}): the better of them is ≥ natural-to-natural at "
        f"{int((best >= 0).sum())}/{len(best)} layers ({share:.0%}); mean difference over layers "
        + ", ".join(f"{n} {float(np.mean(diff[n])):+.3f}" for n in moderate)
        + "; in the later half (depth ≥ 0.5) "
        + ", ".join(f"{n} {float(np.mean(diff[n][late])):+.3f}" for n in moderate)
    )
    super_natural = share >= 0.5 and all(float(np.mean(diff[n])) >= 0 for n in moderate[:1])
    lines.append(
        "super-natural (accentuation ≥ natural-to-natural at moderate λ): "
        + ("REPRODUCES" if super_natural else "does NOT reproduce")
        + " on this model and these images"
    )
    if lambda_name(0.0) in diff and NOISE in diff and moderate:
        ref = max(moderate, key=lambda n: float(np.mean(diff[n])))  # the most natural moderate λ
        zero, noise, mod = (float(np.mean(diff[n])) for n in (lambda_name(0.0), NOISE, ref))
        toward = noise < zero < mod
        lines.append(
            f"λ = 0 {zero:+.3f} vs {ref} {mod:+.3f} and noise-seeded {noise:+.3f}: λ = 0 "
            + ("falls toward the noise-seeded curve" if toward else "does NOT fall toward the noise-seeded curve")
            + f" ({0 if noise == mod else (mod - zero) / (mod - noise):.0%} of the way from {ref} to noise-seeded)"
        )
    return lines


def plot(results: dict[str, SuperNatural], path: Path, title: str) -> None:
    """Figure 8 / 12A style: absolute ρ with the class's natural images, and the difference to natural."""
    fig, axes = plt.subplots(len(results), 2, figsize=(11, 3.3 * len(results) + 0.4), dpi=100, squeeze=False)
    for t, (tier, res) in enumerate(results.items()):
        mean = res.mean
        x = mean.depths()
        names = list(mean.curves)
        colours = dict(zip(names, [*plt.cm.viridis(np.linspace(0.1, 0.85, len(names) - 1)), "tab:red"]))
        ax_abs, ax_diff = axes[t, 0], axes[t, 1]
        ax_abs.plot(x, mean.natural, ":", color="black", lw=1.6, label="natural ↔ natural")
        ax_diff.axhline(0, color="black", ls=":", lw=1.6, label="natural ↔ natural")
        for name in names:
            ax_abs.plot(x, mean.curves[name], "-", marker="o", ms=2.5, lw=1.3, color=colours[name], label=name)
            d, s = mean.normalised(name), mean.normalised_spread(name)
            ax_diff.plot(x, d, "-", marker="o", ms=2.5, lw=1.3, color=colours[name], label=name)
            if np.isfinite(s).all():
                ax_diff.fill_between(x, d - s, d + s, color=colours[name], alpha=0.12, lw=0)
        n_cls = len(res.classes)
        ax_abs.set_title(
            f"{tier} ({n_cls} class{'es' if n_cls != 1 else ''}): ρ with the class's natural images", fontsize=9
        )
        ax_diff.set_title(f"{tier}: minus natural ↔ natural (figure 12A; band ±1 sd over classes)", fontsize=9)
        for ax in (ax_abs, ax_diff):
            ax.set_xlabel("relative depth (block outputs; 1 = logits)")
        ax_abs.set_ylabel("mean Pearson ρ")
        ax_diff.legend(fontsize=6.5, loc="lower left")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tier", nargs="+", default=["faces"], choices=["faces", "views"])
    parser.add_argument("--lambdas", nargs="+", type=float, default=[0.0, 0.1, 1.0, 10.0])
    parser.add_argument("--photos", type=int, default=6, help="natural photos per LFW class")
    parser.add_argument("--seeds", type=int, default=2, help="accentuated photos per class")
    parser.add_argument("--noise", type=int, default=2, help="noise-seeded visualisations per class")
    parser.add_argument("--views", type=int, default=4, help="views per photo in the views tier")
    parser.add_argument("--preset", default="preview")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--n-crops", type=int, default=2)
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--canvas", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT, help="path stem of the .json and .png")
    args = parser.parse_args()

    model = fw.load_model()
    settings: dict[str, Any] = dict(
        preset=args.preset, steps=args.steps, n_crops=args.n_crops, input_size=args.input_size, canvas=args.canvas
    )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; model {model.name}; settings {settings}")
    results: dict[str, SuperNatural] = {}
    for tier in args.tier:
        start = time.perf_counter()
        if tier == "faces":
            classes: dict[str, Any] = lfw_classes(model, ["Windsor tie", "pickelhaube", "cleaver"], args.photos)
            res = supernatural(
                model, classes, lambdas=args.lambdas, n_seeds=args.seeds, n_noise=args.noise, seed=args.seed, **settings
            )
        else:
            left, right, _ = skimage.data.stereo_motorcycle()
            res = supernatural(
                model,
                {"moped": [left, right]},
                lambdas=args.lambdas,
                n_seeds=args.seeds,
                n_views=args.views,
                n_noise=args.noise,
                seed=args.seed,
                **settings,
            )
        seconds = time.perf_counter() - start
        results[tier] = res
        with open(args.out.with_name(f"{args.out.name}_{tier}.pkl.tmp"), "wb") as fh:  # re-plot without rerunning
            pickle.dump(res, fh)
        print(f"\n### tier {tier}: {seconds:.0f} s; photos per class {res.photos}, natural images {res.naturals}\n")
        print(res.mean.table(how="difference"))
        print()
        print(res.mean.table(how="ratio"))
        for label, c in res.classes.items():
            print(
                f"  {label:14s} natural ρ {float(np.mean(c.natural)):.3f}; minus natural: "
                + ", ".join(f"{k} {v:+.3f}" for k, v in c.summary().items())
            )
        for label, by_curve in res.probs.items():
            print(
                f"  {label:14s} target p, seed → result: "
                + ", ".join(f"{k} {a:.2f}→{b:.2f}" for k, (a, b) in by_curve.items())
            )
        for line in verdict(res):
            print("  " + line)
    write(results, {**settings, "seed": args.seed, "torch": torch.__version__, "model": model.name}, args.out)


def write(results: dict[str, SuperNatural], settings: dict[str, Any], out: Path) -> None:
    """The numbers (JSON, with the verdicts) and the figure (PNG) at ``out``.{json,png}."""
    numbers: dict[str, Any] = {tier: {**res.to_dict(), "verdict": verdict(res)} for tier, res in results.items()}
    numbers["settings"] = settings
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(numbers, indent=1), encoding="utf-8")
    cfg = next(iter(results.values())).config
    plot(
        results,
        out.with_suffix(".png"),
        f"{settings.get('model', '')}: class path similarity, {cfg.steps} steps × {cfg.n_crops} crops of "
        f"{cfg.input_size} px, canvas {cfg.canvas}, reg layer {cfg.reg_layer}",
    )
    print(f"\nwrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
