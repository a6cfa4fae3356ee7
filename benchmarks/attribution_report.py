"""Attribution report: Grad-CAM agreement with pytorch-grad-cam, the choice of the default
percentiles of collective normalisation, and collective vs per-image masks on the sample images.

Run:  python benchmarks/attribution_report.py  [--skip-agreement] [--skip-sweep]

Everything is offline (default model EfficientNet-Lite0 with shipped weights, a randomly initialised
torchvision ResNet18, the bundled sample images); about a minute on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch
import torch.nn.functional as F

import faccent_widget as fw
from faccent_widget.core.attribution import default_gradcam_layer, gradcam
from faccent_widget.core.masks import DEFAULT_P1, DEFAULT_P2, CollectiveNormalizer, per_image_normalize

#: The class each sample image is about (its top-1 class under the default model).
OWN_CLASS = {
    "coffee": "espresso",
    "chelsea": "Egyptian cat",
    "camera": "tripod",
    "flower": "daisy",
    "rocket": "drilling platform",
    "grace_hopper": "military uniform",
}


def _relu_minmax(maps: torch.Tensor) -> torch.Tensor:
    m = maps.clamp(min=0)
    m = m - m.amin((-2, -1), keepdim=True)
    return m / (m.amax((-2, -1), keepdim=True) + 1e-7)


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.flatten().double().numpy(), b.flatten().double().numpy())[0, 1])


def reference_gradcam(model: fw.Model, x: torch.Tensor, layer: str, classes: list[int]) -> torch.Tensor:
    """pytorch-grad-cam's GradCAM (ReLU, min-max, resize) on a private copy of the module."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    net = copy.deepcopy(model.module)
    inp = model.normalize(x).detach().requires_grad_(True)
    with GradCAM(model=net, target_layers=[net.get_submodule(layer)]) as cam:
        out = cam(input_tensor=inp, targets=[ClassifierOutputTarget(c) for c in classes])
    return torch.from_numpy(out)


def agreement(model: fw.Model, names: list[str], classes: list[int], title: str) -> None:
    images = fw.sample_images()
    x = torch.stack([model.prepare(images[n])[0] for n in names])
    layer = default_gradcam_layer(model, classes[0])
    ours = torch.cat([gradcam(model, x[i : i + 1], c) for i, c in enumerate(classes)])
    low = torch.cat([gradcam(model, x[i : i + 1], c, upsample=False) for i, c in enumerate(classes)])
    ref = reference_gradcam(model, x, layer, classes)
    low_up = F.interpolate(_relu_minmax(low)[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    print(f"\n{title} — layer {layer!r}")
    print(f"  {'image':<14}{'target':<22}{'r (ReLU after upsampling)':>27}{'r (pgc order)':>15}{'share > 0':>11}")
    for i, (n, c) in enumerate(zip(names, classes)):
        r_full = _pearson(_relu_minmax(ours[i]), ref[i])
        r_same = _pearson(low_up[i], ref[i])
        pos = float((low[i] > 0).float().mean())
        print(f"  {n:<14}{model.labels[c][:20]:<22}{r_full:>27.5f}{r_same:>15.5f}{pos:>11.2f}")


def sweep(model: fw.Model) -> None:
    images = fw.sample_images()
    names = list(images)
    x = torch.stack([model.prepare(images[n])[0] for n in names])
    maps = {t: gradcam(model, x, t) for t in OWN_CLASS.values()}
    print(
        f"\nPercentile sweep: raw Grad-CAM of {len(OWN_CLASS)} class targets over the {len(names)} sample images "
        f"(layer {default_gradcam_layer(model, 'espresso')!r}); 'pos' = the image of that class, 'neg' = the others"
    )
    print("  p1    p2  | pos mean  neg mean  neg max | pos saturated  pos graded | pos − neg mean")
    for p1 in (0, 25, 50, 60, 75, 90):
        for p2 in (95, 97, 98, 99, 99.5, 100):
            pos, neg, negmax, sat, graded = [], [], [], [], []
            for img, target in OWN_CLASS.items():
                mask = CollectiveNormalizer(p1, p2).fit(maps[target])(maps[target])
                i = names.index(img)
                others = [float(mask[j].mean()) for j in range(len(names)) if j != i]
                pos.append(float(mask[i].mean()))
                neg.append(float(np.mean(others)))
                negmax.append(max(others))
                sat.append(float((mask[i] >= 1).float().mean()))
                graded.append(float(((mask[i] > 0) & (mask[i] < 1)).float().mean()))
            ok = np.mean(negmax) <= 0.10 and np.mean(sat) <= 1 / 6
            print(
                f"  {p1:<4} {p2:>5}  |   {np.mean(pos):.3f}     {np.mean(neg):.3f}    {np.mean(negmax):.3f} |"
                f"     {np.mean(sat):.3f}        {np.mean(graded):.3f}  |   {np.mean(pos) - np.mean(neg):.3f}"
                f"{'  *' if ok else ''}"
            )
    print(
        "  (* = unrelated images stay masked: mean over targets of the largest 'neg' mean mask ≤ 0.10, and the\n"
        "   class image keeps its localisation: ≤ 1/6 of it saturated. The default is the * row with the\n"
        "   largest pos − neg separation.)"
    )


def collective_vs_per_image(model: fw.Model, target: str = "espresso") -> None:
    images = fw.sample_images()
    names = list(images)
    maps = gradcam(model, list(images.values()), target)
    norm = CollectiveNormalizer().fit_images(model, list(images.values()), target)
    collective = norm(maps)
    single = per_image_normalize(maps, norm.p1, norm.p2)
    print(
        f"\nCollective vs per-image masks, target {norm.target!r}, p1={norm.p1:g}, p2={norm.p2:g} "
        f"(lo={norm.lo:.4f}, hi={norm.hi:.4f}, layer {norm.layer!r})"
    )
    print(f"  {'image':<14}{'collective mean':>16}{'per-image mean':>16}{'raw max':>10}")
    for n, c, s, m in zip(names, collective, single, maps):
        print(f"  {n:<14}{float(c.mean()):>16.3f}{float(s.mean()):>16.3f}{float(m.max()):>10.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-agreement", action="store_true")
    parser.add_argument("--skip-sweep", action="store_true")
    args = parser.parse_args()
    start = time.perf_counter()
    model = fw.load_model()
    print(f"default model: {model}; defaults p1={DEFAULT_P1:g}, p2={DEFAULT_P2:g}")
    if not args.skip_agreement:
        names = ["coffee", "chelsea", "camera", "flower"]
        agreement(
            model,
            names,
            [model.class_index(OWN_CLASS[n]) for n in names],
            "Agreement with pytorch-grad-cam: default model, each image's own class",
        )
        agreement(
            model,
            names,
            [model.class_index("espresso")] * len(names),
            "Agreement with pytorch-grad-cam: default model, target 'espresso' on every image",
        )
        torch.manual_seed(0)
        resnet = fw.load_model("resnet18", pretrained=False)
        x = torch.stack([resnet.prepare(fw.sample_image(n))[0] for n in names])
        with torch.no_grad():
            top = resnet.logits(x).argmax(1).tolist()
        agreement(resnet, names, top, "Agreement with pytorch-grad-cam: ResNet18, random weights (seed 0), top class")
        agreement(
            resnet,
            names,
            [(t + 500) % 1000 for t in top],
            "Agreement with pytorch-grad-cam: ResNet18, random weights (seed 0), an arbitrary class",
        )
    if not args.skip_sweep:
        sweep(model)
    collective_vs_per_image(model)
    print(f"\n({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
