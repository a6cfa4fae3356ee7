"""The transferability figure: per preset, the optimised model's gain against each judge's gain, per
image, for the accentuations and for the matched gradient attack (the README's figure).

Reads the JSON files ``benchmarks/transferability.py --json`` writes (their per-image rows)::

    python benchmarks/transferability_figure.py docs/benchmarks/transferability_preview_cpu.json \
        docs/benchmarks/transferability_gpu_paper_cpu.json --out docs/benchmarks/transferability_cpu.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

MARKERS = {"efficientnet_lite1": "o", "efficientnet_lite2": "s"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", nargs="+", type=Path, help="benchmark JSON files (per-image rows)")
    parser.add_argument("--out", type=Path, default=Path("transferability.png"))
    args = parser.parse_args()
    presets: dict[str, dict] = {}
    for path in args.json:
        for name, data in json.loads(path.read_text()).items():
            if "images" not in data:
                raise SystemExit(f"{path}: preset {name!r} has no per-image rows; rerun benchmarks/transferability.py")
            presets[name] = data
    fig, axes = plt.subplots(1, len(presets), figsize=(4.2 * len(presets), 4.2), squeeze=False, sharey=True)
    top = max(max(r["gain"], *(j["gain"] for j in r["judges"].values())) for d in presets.values() for r in d["images"])
    for ax, (name, data) in zip(axes[0], presets.items()):
        lim = (-1.0, top + 0.5)
        ax.plot(lim, lim, color="0.6", lw=1, ls="--", label="judge gain = Lite0 gain")
        ax.axhline(0, color="0.85", lw=0.8)
        for judge, marker in MARKERS.items():
            rows = [r for r in data["images"] if judge in r["judges"]]
            short = judge.replace("efficientnet_", "")
            ax.scatter(
                [r["gain"] for r in rows],
                [r["judges"][judge]["gain"] for r in rows],
                marker=marker,
                color="tab:blue",
                label=f"accentuation, {short}",
            )
            ax.scatter(
                [r["attack_gain"] for r in rows],
                [r["judges"][judge]["attack_gain"] for r in rows],
                marker=marker,
                facecolors="none",
                edgecolors="tab:red",
                label=f"gradient attack, {short}",
            )
        ax.set_xlim(*lim)
        ax.set_ylim(*lim)
        ax.set_title(
            f"{name} ({len(data['images'])} images): ratio {data['ratio']:.2f} (attack {data['attack_ratio']:.2f}),\n"
            f"judge top-1 {data['top1']:.0%} (attack {data['attack_top1']:.0%}), RMSE {data['rmse']:.3f}",
            fontsize=9,
        )
        ax.set_xlabel("Lite0 (optimised) gain of log p(target)")
    axes[0][0].set_ylabel("judge gain of log p(target)")
    axes[0][-1].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
