"""Which models work, and with which default layers: a table over random-weight models.

For every model: the default regularisation layer and its layout, the default Grad-CAM layer, the crop
size a default run uses, whether ``accentuate`` (2 steps, 2 crops), Grad-CAM (not all zero, different
for two targets) and the widget (``FaccentWidget(...).run(steps=2)`` and its panel) work, and the
local-vs-global edit ratio of the latent distance (a local edit of 1/16 of the image against a
spread-out one of the same pixel energy; per-position distance, and in brackets the old distance with
channels at dim 1 — the two agree for spatial layers).

The models are the test matrix of ``tests/test_any_model.py`` plus full-size torchvision ``vit_b_16``,
``swin_t``, ``convnext_tiny``, ``regnet_y_400mf`` and timm ``vit_small_patch16_224``, all with random
weights (no downloads). torchvision initialises some classifier heads to zero, which makes the logits
constant and every Grad-CAM zero; such heads are re-initialised with random weights (``--keep-heads``
keeps them).

    python benchmarks/model_matrix.py            # everything (a few minutes on a laptop CPU)
    python benchmarks/model_matrix.py --small    # the tiny test-matrix models only
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import faccent_widget as fw  # noqa: E402
from faccent_widget import FaccentWidget  # noqa: E402
from faccent_widget.core.attribution import default_gradcam_layer, gradcam  # noqa: E402
from faccent_widget.core.engine import channel_distance  # noqa: E402
from faccent_widget.core.model import Model  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_any_model import MATRIX  # noqa: E402


def _full_size() -> dict[str, Callable[[], Model]]:
    import timm

    def tv(name: str) -> Callable[[], Model]:
        return lambda: fw.load_model(name, pretrained=False)

    return {
        "torchvision vit_b_16": tv("vit_b_16"),
        "torchvision swin_t": tv("swin_t"),
        "torchvision convnext_tiny": tv("convnext_tiny"),
        "torchvision regnet_y_400mf": tv("regnet_y_400mf"),
        "timm vit_small_patch16_224": lambda: Model(timm.create_model("vit_small_patch16_224"), name="vit_small"),
    }


def _reinit_zero_heads(model: Model) -> bool:
    """Give all-zero final Linear layers random weights (on the adapter's module); True if any."""
    changed = False
    for m in model.module.modules():
        if isinstance(m, nn.Linear) and m.out_features == model.num_classes and not m.weight.any():
            with torch.no_grad():
                m.weight.normal_(0, 0.02)
            changed = True
    return changed


def _edit_ratio(model: Model, image: torch.Tensor) -> tuple[float, float]:
    x0 = model.to_input(image)
    s, k = x0.shape[-1], x0.shape[-1] // 4
    g = torch.Generator().manual_seed(0)
    local = torch.zeros_like(x0)
    lo = s // 2 - k // 2
    local[..., lo : lo + k, lo : lo + k] = 0.1 * torch.randn(1, 3, k, k, generator=g)
    spread = torch.randn(x0.shape, generator=g)
    spread = spread * local.norm() / spread.norm()
    layer = model.default_reg_layer
    with torch.no_grad():
        f = model.features(torch.cat([x0, x0 + local, x0 + spread]), [layer])[layer]
    ratios = []
    for layout in (model.layout(layer), None):
        d = channel_distance(f[1:], f[:1].expand_as(f[1:]), layout).mean(1)
        ratios.append(float(d[0] / d[1]))
    return ratios[0], ratios[1]


def _check(label: str, build: Callable[[], Model], keep_heads: bool) -> dict[str, str]:
    images = fw.sample_images()
    chelsea, coffee = images["chelsea"], images["coffee"]
    row = {"model": label}
    t0 = time.perf_counter()
    torch.manual_seed(0)
    model = build()
    if not keep_heads and _reinit_zero_heads(model):
        row["model"] += " *"
    reg = model.default_reg_layer
    row["reg"] = f"{reg} ({model.layout(reg).kind})"
    top = model.predict(chelsea, k=2)
    row["gradcam layer"] = default_gradcam_layer(model, top[0].index)
    row["crop"] = str(model.crop_size(None, 0.7)) + ("" if model.accepts_any_size else " fixed")
    for key, fn in (
        ("accentuate", lambda: _accentuate(model, chelsea, top[1].index)),
        ("gradcam", lambda: _gradcam(model, chelsea, coffee, top)),
        ("widget", lambda: _widget(model, chelsea, coffee)),
    ):
        try:
            row[key] = fn()
        except Exception as exc:  # noqa: BLE001 - the table reports failures
            row[key] = f"FAILS: {type(exc).__name__}: {str(exc)[:60]}"
            traceback.print_exc(file=sys.stderr)
    per_position, dim1 = _edit_ratio(model, chelsea)
    row["local/global"] = f"{per_position:.2f} ({dim1:.2f})"
    row["s"] = f"{time.perf_counter() - t0:.0f}"
    return row


def _accentuate(model: Model, image: torch.Tensor, target: int) -> str:
    result = fw.accentuate(model, image, target, steps=2, n_crops=2, canvas=128, seed=0)
    ok = bool(torch.isfinite(torch.as_tensor(result.history["objective"])).all())
    return "yes" if ok else "non-finite"


def _gradcam(model: Model, a: torch.Tensor, b: torch.Tensor, top: list) -> str:
    x = model.to_input([a, b])
    m0, m1 = gradcam(model, x, top[0].index), gradcam(model, x, top[1].index)
    if not m0.abs().amax() > 0:
        return "all zero"
    if not (m0 - m1).abs().amax() > 1e-3 * m0.abs().amax():
        return "same for two targets"
    return "yes"


def _widget(model: Model, image: torch.Tensor, other: torch.Tensor) -> str:
    w = FaccentWidget(model, image, reference=[image, other], n_crops=2, canvas=128)
    w.run(steps=2)
    w.panel_png()
    return "yes"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="only the tiny test-matrix models")
    parser.add_argument("--keep-heads", action="store_true", help="keep torchvision's all-zero classifier heads")
    args = parser.parse_args()
    models: dict[str, Callable[[], Model]] = {f"{k} (test)": v[0] for k, v in MATRIX.items()}
    if not args.small:
        models.update(_full_size())
    rows = []
    for label, build in models.items():
        rows.append(_check(label, build, args.keep_heads))
        print(f"  {label}: {rows[-1]['s']} s", file=sys.stderr, flush=True)
    cols = ["model", "reg", "gradcam layer", "crop", "accentuate", "gradcam", "widget", "local/global"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "|".join("---" for _ in cols) + "|")
    for row in rows:
        print("| " + " | ".join(row.get(c, "") for c in cols) + " |")
    if any(r["model"].endswith("*") for r in rows):
        print("\n* all-zero classifier head re-initialised with random weights (constant logits otherwise)")


if __name__ == "__main__":
    main()
