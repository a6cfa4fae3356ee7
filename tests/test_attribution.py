"""Attribution (Grad-CAM, activation maps, gradient maps), collective normalisation and compositing."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import faccent_widget as fw
from faccent_widget.core.attribution import (
    activation_attribution,
    as_image_batch,
    attribution_maps,
    default_gradcam_layer,
    gradcam,
    gradient_attribution,
)
from faccent_widget.core.compositing import (
    difference_image,
    heatmap_overlay,
    labelled_strip,
    masked_accentuation,
)
from faccent_widget.core.masks import (
    DEFAULT_P1,
    DEFAULT_P2,
    CollectiveNormalizer,
    load_normalizers,
    per_image_normalize,
    piecewise_normalize,
    save_normalizers,
)
from faccent_widget.core.objectives import Objective, channel
from faccent_widget.images import to_jpeg_bytes, to_pil, to_png_bytes

# --------------------------------------------------------------------------- helpers


class QuadrantGate(nn.Module):
    """Zero everything outside the top-left quadrant of a feature map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        mask = torch.zeros(h, w, dtype=x.dtype, device=x.device)
        mask[: h // 2, : w // 2] = 1
        return x * mask


class QuadrantNet(nn.Module):
    """A classifier whose logits depend only on the top-left quadrant of the image."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.gate = QuadrantGate()
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(8, 3)
        with torch.no_grad():
            self.fc.weight.abs_()  # positive evidence everywhere the gate lets through

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flat(self.pool(self.act(self.gate(self.conv(x))))))


@pytest.fixture()
def quad() -> fw.Model:
    torch.manual_seed(0)
    return fw.Model(QuadrantNet(), input_size=32, name="quad")


def _relu_minmax(maps: torch.Tensor) -> torch.Tensor:
    m = maps.clamp(min=0)
    m = m - m.amin((-2, -1), keepdim=True)
    return m / (m.amax((-2, -1), keepdim=True) + 1e-7)


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.flatten().double().numpy(), b.flatten().double().numpy())[0, 1])


def _reference_gradcam(
    model: fw.Model, x: torch.Tensor, layer: str, classes: list[int], reshape_transform=None
) -> torch.Tensor:
    """pytorch-grad-cam on a private, frozen copy (it calls .eval() and adds hooks)."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    net = copy.deepcopy(model.module).requires_grad_(False)
    inp = model.normalize(x).detach().requires_grad_(True)
    with GradCAM(model=net, target_layers=[net.get_submodule(layer)], reshape_transform=reshape_transform) as cam:
        out = cam(input_tensor=inp, targets=[ClassifierOutputTarget(c) for c in classes])
    return torch.from_numpy(out)


@pytest.fixture(scope="module")
def sample_batch(model: fw.Model) -> tuple[list[str], torch.Tensor]:
    images = fw.sample_images()
    return list(images), torch.stack([model.prepare(im)[0] for im in images.values()])


@pytest.fixture(scope="module")
def espresso_maps(model: fw.Model, sample_batch) -> torch.Tensor:
    return gradcam(model, sample_batch[1], "espresso")


# --------------------------------------------------------------------------- (a) known answer


def test_gradcam_known_answer_top_left_quadrant(quad: fw.Model) -> None:
    assert default_gradcam_layer(quad, 0) == "act"  # the 1×1 pooling output is skipped
    x = torch.rand(4, 3, 32, 32)
    for cls in range(3):
        maps = gradcam(quad, x, cls)
        assert maps.shape == (4, 32, 32)
        mass = maps.clamp(min=0)
        share = mass[:, :16, :16].sum((1, 2)) / mass.sum((1, 2))
        assert (share > 0.8).all(), share


def test_gradcam_layer_resolution_and_raw_values(quad: fw.Model) -> None:
    x = torch.rand(2, 3, 32, 32)
    low = gradcam(quad, x, 1, upsample=False)
    assert low.shape == (2, 16, 16)
    # raw Grad-CAM by hand: Σ_c mean(∂logit/∂A_c) · A_c at the 'act' layer
    net = copy.deepcopy(quad.module)
    a = net.act(net.gate(net.conv(quad.normalize(x)))).detach().requires_grad_(True)
    logits = net.fc(net.flat(net.pool(a)))
    (g,) = torch.autograd.grad(logits[:, 1].sum(), a)
    expected = (g.mean((2, 3), keepdim=True) * a).sum(1).detach()
    torch.testing.assert_close(low, expected)
    full = gradcam(quad, x, 1)
    torch.testing.assert_close(full, F.interpolate(expected[:, None], size=(32, 32), mode="bilinear")[:, 0])


def test_activation_attribution_matches_gradcam_at_the_same_layer(quad: fw.Model) -> None:
    x = torch.rand(2, 3, 32, 32)
    act = activation_attribution(quad, x, "act:2")
    assert act.shape == (2, 32, 32)
    cam = gradcam(quad, x, channel("act", 2))  # default layer: the channel's own layer
    # Grad-CAM of a channel mean at its own layer is the channel's map divided by h·w
    torch.testing.assert_close(cam * 16 * 16, act, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(attribution_maps(quad, x, "act:2", source="activation"), act)


def test_gradient_attribution_shapes_and_smoothing() -> None:
    g = torch.zeros(2, 3, 20, 20)
    g[:, 0, 10, 10] = -2.0
    g[:, 1, 10, 10] = 1.0
    m = gradient_attribution(g)
    assert m.shape == (2, 20, 20) and float(m[0, 10, 10]) == 3.0  # Σ_c |g_c|
    assert gradient_attribution(torch.ones(20, 20)).shape == (1, 20, 20)
    blurred = gradient_attribution(g, sigma=1.5)
    assert blurred.shape == (2, 20, 20)
    assert float(blurred[0, 10, 10]) < 3.0 and float(blurred[0, 10, 12]) > 0
    torch.testing.assert_close(blurred.sum((1, 2)), m.sum((1, 2)), rtol=1e-4, atol=1e-4)
    assert gradient_attribution(g, size=40).shape == (2, 40, 40)
    with pytest.raises(ValueError):
        gradient_attribution(torch.zeros(5))


def test_list_inputs_are_resized_to_the_model_input(quad: fw.Model) -> None:
    pil = Image.new("RGB", (50, 30), (255, 0, 0))
    arr = np.zeros((40, 20, 3), dtype=np.uint8)
    batch = as_image_batch(quad, [pil, arr, torch.rand(3, 10, 12)])
    assert batch.shape == (3, 3, 32, 32)
    assert gradcam(quad, [pil, arr], 0).shape == (2, 32, 32)


# --------------------------------------------------------------------------- (b) equation 1


def test_equation_1_exact_values() -> None:
    maps = torch.arange(100, dtype=torch.float32).reshape(1, 10, 10)
    norm = CollectiveNormalizer(p1=10, p2=90).fit(maps)
    # P(v, p) with linear interpolation: rank p/100·(n−1) = 9.9 and 89.1
    assert norm.lo == pytest.approx(9.9, abs=1e-12)
    assert norm.hi == pytest.approx(89.1, abs=1e-12)
    out = norm(maps).flatten()
    u = np.arange(100, dtype=np.float64)
    expected = np.where(u <= 9.9, 0.0, np.where(u >= 89.1, 1.0, (u - 9.9) / (89.1 - 9.9)))
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-6)
    assert out[:10].eq(0).all() and out[90:].eq(1).all()
    assert float(out[10]) == pytest.approx(0.1 / 79.2, abs=1e-6)
    assert float(out[50]) == pytest.approx(40.1 / 79.2, abs=1e-6)
    assert float(out[89]) == pytest.approx(79.1 / 79.2, abs=1e-6)
    # collective: two maps pooled give the thresholds of the union …
    halves = [maps.flatten()[:50].reshape(5, 10), maps.flatten()[50:].reshape(5, 10)]
    pooled = CollectiveNormalizer(p1=10, p2=90).fit(halves)
    assert (pooled.lo, pooled.hi) == pytest.approx((9.9, 89.1))
    assert pooled.n_maps == 2 and pooled.n_values == 100
    # … while per-image normalisation uses each map's own: P(0..49, 10) = 4.9, P(0..49, 90) = 44.1
    first = per_image_normalize(halves[0], 10, 90).flatten()
    u = np.arange(50, dtype=np.float64)
    np.testing.assert_allclose(first.numpy(), np.clip((u - 4.9) / (44.1 - 4.9), 0, 1), atol=1e-6)
    assert float(pooled(halves[0]).max()) < 0.6  # the lower half never reaches full opacity collectively


def test_piecewise_edge_cases_and_structures() -> None:
    step = piecewise_normalize(torch.tensor([0.0, 1.0, 2.0]), 1.0, 1.0)
    assert step.tolist() == [0.0, 0.0, 1.0]
    arr = piecewise_normalize(np.array([[0.0, 0.5, 1.0]]), 0.0, 1.0)
    assert isinstance(arr, np.ndarray) and arr.tolist() == [[0.0, 0.5, 1.0]]
    lst = piecewise_normalize([torch.zeros(2, 2), torch.ones(3, 3)], 0.0, 1.0)
    assert isinstance(lst, list) and lst[1].shape == (3, 3)
    for p1, p2 in [(50, 50), (-1, 50), (10, 101), (90, 10)]:
        with pytest.raises(ValueError, match="percentiles"):
            CollectiveNormalizer(p1, p2)
    assert (DEFAULT_P1, DEFAULT_P2) == (50.0, 98.0)


def test_normalizer_json_round_trip(tmp_path) -> None:
    norm = CollectiveNormalizer(20, 95, target="logit 967 (espresso)", source="gradcam", layer="bn2")
    norm.fit(torch.randn(3, 8, 8))
    data = norm.to_dict()
    text = json.dumps(data)  # plain JSON numbers and strings only
    assert json.loads(text) == data and data["target"] == "logit 967 (espresso)"
    path = tmp_path / "norm.json"
    norm.save(path)
    back = CollectiveNormalizer.load(path)
    assert (back.lo, back.hi, back.p1, back.p2, back.target, back.layer) == (
        norm.lo,
        norm.hi,
        20.0,
        95.0,
        norm.target,
        "bn2",
    )
    maps = torch.randn(2, 8, 8)
    torch.testing.assert_close(back(maps), norm(maps))
    other = CollectiveNormalizer(target="act:2").fit(torch.rand(1, 4, 4))
    save_normalizers(tmp_path / "all.json", [norm, other])
    loaded = load_normalizers(tmp_path / "all.json")
    assert set(loaded) == {"logit 967 (espresso)", "act:2"}
    assert loaded["act:2"].hi == other.hi
    assert set(load_normalizers(path)) == {"logit 967 (espresso)"}
    with pytest.raises(ValueError, match="missing"):
        CollectiveNormalizer.from_dict({"p1": 1, "p2": 2})


# --------------------------------------------------------------------------- (c) collective vs per image


def test_collective_vs_per_image_synthetic() -> None:
    torch.manual_seed(0)
    with_feature = 0.01 * torch.rand(16, 16)
    with_feature[4:12, 4:12] += 1.0
    without = 0.01 * torch.rand(16, 16)
    maps = torch.stack([with_feature, without])
    collective = CollectiveNormalizer(50, 98).fit(maps)(maps)
    single = per_image_normalize(maps, 50, 98)
    assert float(collective[0].mean()) > 0.2
    assert float(collective[1].mean()) < 0.01  # the image without the feature stays masked
    assert float(single[1].mean()) > 0.2  # per image, its noise is blown up to a full heatmap


def test_collective_vs_per_image_on_sample_images(model: fw.Model, sample_batch, espresso_maps) -> None:
    names, _ = sample_batch
    norm = CollectiveNormalizer().fit(espresso_maps)
    collective = norm(espresso_maps).mean((1, 2))
    single = per_image_normalize(espresso_maps).mean((1, 2))
    coffee = names.index("coffee")
    others = [i for i in range(len(names)) if i != coffee]
    assert float(collective[coffee]) > 0.3
    assert float(collective[others].max()) < 0.1
    assert float(single[others].min()) > 0.1  # per image every picture "has" espresso
    assert float(collective[coffee] / collective[others].mean()) > 5 * float(single[coffee] / single[others].mean())


def test_fit_images_records_the_target(quad: fw.Model) -> None:
    x = torch.rand(3, 3, 32, 32)
    norm = CollectiveNormalizer().fit_images(quad, x, 1)
    assert norm.target == "logit 1 (class 1)" and norm.source == "gradcam" and norm.layer == "act"
    assert norm.n_maps == 3 and norm.n_values == 3 * 32 * 32
    act = CollectiveNormalizer().fit_images(quad, x, "act:2", source="activation")
    assert act.target == "act:2" and act.layer is None
    assert act(activation_attribution(quad, x, "act:2")).shape == (3, 32, 32)


# --------------------------------------------------------------------------- (d) pytorch-grad-cam


def test_agreement_with_pytorch_grad_cam_default_model(model: fw.Model, sample_batch) -> None:
    names, batch = sample_batch
    idx = [names.index("coffee"), names.index("chelsea")]
    x = batch[idx]
    classes = [model.class_index("espresso"), model.class_index("Egyptian cat")]
    layer = default_gradcam_layer(model, classes[0])
    assert layer == "bn2"
    ours = torch.cat([gradcam(model, x[i : i + 1], c, layer) for i, c in enumerate(classes)])
    ref = _reference_gradcam(model, x, layer, classes)
    for i in range(len(classes)):
        assert _pearson(_relu_minmax(ours[i]), ref[i]) >= 0.99


def test_agreement_with_pytorch_grad_cam_resnet18_random() -> None:
    torch.manual_seed(0)
    net = fw.load_model("resnet18", pretrained=False)
    x = torch.stack([net.prepare(fw.sample_image(n))[0] for n in ("coffee", "chelsea")])
    with torch.no_grad():
        top = net.logits(x).argmax(1).tolist()
    layer = default_gradcam_layer(net, top[0])
    assert layer == "layer4"
    ours = torch.cat([gradcam(net, x[i : i + 1], c) for i, c in enumerate(top)])
    ref = _reference_gradcam(net, x, layer, top)
    for i in range(2):
        assert _pearson(_relu_minmax(ours[i]), ref[i]) >= 0.99
    # a mixed-sign map (arbitrary class): at the layer's resolution, with pytorch-grad-cam's order of
    # operations (ReLU, min-max, then resize), the two agree exactly
    other = [(c + 500) % 1000 for c in top]
    low = torch.cat([gradcam(net, x[i : i + 1], c, upsample=False) for i, c in enumerate(other)])
    ref = _reference_gradcam(net, x, layer, other)
    up = F.interpolate(_relu_minmax(low)[:, None], size=(224, 224), mode="bilinear", align_corners=False)[:, 0]
    for i in range(2):
        assert _pearson(up[i], ref[i]) >= 0.999


def test_agreement_with_pytorch_grad_cam_vit_random() -> None:
    """A small random timm ViT: Grad-CAM at the last block's pre-attention norm, tokens reshaped to the
    patch grid without the class token — pytorch-grad-cam's ViT recipe (its ``reshape_transform``)."""
    import timm

    torch.manual_seed(0)
    net = fw.Model(timm.create_model("vit_tiny_patch16_224", img_size=96, depth=3), name="vit")
    x = torch.stack([net.prepare(fw.sample_image(n))[0] for n in ("coffee", "chelsea")])
    with torch.no_grad():
        top = net.logits(x).argmax(1).tolist()
    layer = default_gradcam_layer(net, top[0])
    assert layer == "blocks.2.norm1"

    def reshape_transform(t: torch.Tensor) -> torch.Tensor:  # from pytorch-grad-cam's ViT tutorial
        return t[:, 1:, :].reshape(t.size(0), 6, 6, t.size(2)).permute(0, 3, 1, 2)

    # random-weight maps are of mixed sign, so compare with pytorch-grad-cam's order of operations:
    # at the 6×6 patch grid, ReLU, min-max, then resize
    low = torch.cat([gradcam(net, x[i : i + 1], c, upsample=False) for i, c in enumerate(top)])
    assert low.shape == (2, 6, 6) and (low.abs().amax((1, 2)) > 0).all()
    ref = _reference_gradcam(net, x, layer, top, reshape_transform)
    up = F.interpolate(_relu_minmax(low)[:, None], size=(96, 96), mode="bilinear", align_corners=False)[:, 0]
    for i in range(2):
        assert _pearson(up[i], ref[i]) >= 0.99


# --------------------------------------------------------------------------- (e) bad input


def test_layer_without_spatial_output_is_a_clear_error(model: fw.Model, sample_batch) -> None:
    x = sample_batch[1][:1]
    with pytest.raises(ValueError, match=r"spatial output.*'classifier'.*'bn2'"):
        gradcam(model, x, "espresso", layer="classifier")
    with pytest.raises(ValueError, match="1×1"):
        gradcam(model, x, "espresso", layer="global_pool.pool")


def test_bad_layers_and_targets(quad: fw.Model) -> None:
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(ValueError, match="spatial output"):
        gradcam(quad, x, 0, layer="fc")
    with pytest.raises(ValueError, match="must come before the target layer"):
        gradcam(quad, x, "conv:1", layer="act")
    with pytest.raises(fw.LayerNotFoundError):
        gradcam(quad, x, 0, layer="nope")
    with pytest.raises(ValueError, match="no activation map"):
        activation_attribution(quad, x, 0)
    with pytest.raises(ValueError, match="unknown attribution source"):
        attribution_maps(quad, x, 0, source="lime")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        gradcam(quad, x * 5, 0)
    with pytest.raises(ValueError, match="no images"):
        gradcam(quad, [], 0)


def test_empty_reference_set_is_a_clear_error(quad: fw.Model) -> None:
    for empty in ([], torch.empty(0, 4, 4), np.zeros((0,))):
        with pytest.raises(ValueError, match="reference set is empty"):
            CollectiveNormalizer().fit(empty)
    with pytest.raises(ValueError, match="reference set is empty"):
        CollectiveNormalizer().fit_images(quad, [], 0)
    with pytest.raises(RuntimeError, match="not fitted"):
        CollectiveNormalizer()(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="NaN"):
        CollectiveNormalizer().fit(torch.tensor([[1.0, float("nan")]]))


# --------------------------------------------------------------------------- (f) the user's model


def _state(module: nn.Module):
    return (
        [(n, m.training) for n, m in module.named_modules()],
        [(n, p.requires_grad) for n, p in module.named_parameters()],
        [
            (
                n,
                len(m._forward_hooks),
                len(m._forward_pre_hooks),
                len(m._backward_hooks),
                len(getattr(m, "_backward_pre_hooks", {})),
            )
            for n, m in module.named_modules()
        ],
    )


def test_users_model_is_untouched(quad: fw.Model) -> None:
    net = quad.user_module
    net.train()
    net.conv.eval()
    net.fc.bias.requires_grad_(False)
    calls = []
    net.act.register_forward_hook(lambda *_: calls.append(1))
    before = _state(net)

    x = torch.rand(2, 3, 32, 32)
    gradcam(quad, x, 0)
    activation_attribution(quad, x, "act:1")
    CollectiveNormalizer().fit_images(quad, x, 2)
    assert _state(net) == before
    assert all(p.grad is None for p in net.parameters())

    class Broken(Objective):
        layers = ("act",)
        description = "broken"

        def __call__(self, feats):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        gradcam(quad, x, Broken())
    assert _state(net) == before
    n = len(calls)
    net(x)
    assert len(calls) == n + 1  # the user's own hook still fires


# --------------------------------------------------------------------------- (g) compositing


def test_masked_accentuation() -> None:
    seed, accent = torch.rand(3, 16, 16), torch.rand(3, 16, 16)
    torch.testing.assert_close(masked_accentuation(seed, accent, torch.zeros(16, 16)), seed)
    torch.testing.assert_close(masked_accentuation(seed, accent, torch.ones(16, 16)), accent)
    half = masked_accentuation(seed, accent, torch.full((16, 16), 0.5))
    torch.testing.assert_close(half, (seed + accent) / 2)
    small = masked_accentuation(seed, accent, torch.ones(4, 4))  # resized to the image
    torch.testing.assert_close(small, accent)
    left = torch.zeros(16, 16)
    left[:, :8] = 1
    out = masked_accentuation(seed, accent, left)
    torch.testing.assert_close(out[:, :, :8], accent[:, :, :8])
    torch.testing.assert_close(out[:, :, 8:], seed[:, :, 8:])
    batch = masked_accentuation(
        seed, accent[None].repeat(2, 1, 1, 1), torch.stack([torch.zeros(16, 16), torch.ones(16, 16)])
    )
    assert batch.shape == (2, 3, 16, 16)
    torch.testing.assert_close(batch[0], seed)
    torch.testing.assert_close(batch[1], accent)
    bigger_seed = torch.rand(3, 32, 32)  # the seed is resized to the accentuation
    assert masked_accentuation(bigger_seed, accent, torch.zeros(16, 16)).shape == (3, 16, 16)


def test_heatmap_overlay_and_difference() -> None:
    import matplotlib

    img = torch.rand(3, 10, 12)
    heat = torch.zeros(10, 12)
    over = heatmap_overlay(img, heat, cmap="jet", alpha=0.0)
    torch.testing.assert_close(over, img)
    full = heatmap_overlay(img, heat, cmap="inferno", alpha=1.0)
    expected = torch.tensor(matplotlib.colormaps["inferno"](0.0)[:3], dtype=torch.float32)
    torch.testing.assert_close(full[:, 3, 4], expected)
    assert heatmap_overlay(img, torch.rand(5, 6), normalize=True).shape == (3, 10, 12)
    assert heatmap_overlay(img[None].repeat(2, 1, 1, 1), torch.rand(2, 10, 12)).shape == (2, 3, 10, 12)
    with pytest.raises(ValueError, match="colormap"):
        heatmap_overlay(img, heat, cmap="no-such-map")
    diff = difference_image(img, img)
    torch.testing.assert_close(diff, torch.full_like(img, 0.5))
    brighter = difference_image(img * 0.5, img * 0.5 + 0.1, gain=2.0)
    torch.testing.assert_close(brighter, torch.full_like(img, 0.7))


def test_encoders_and_panel() -> None:
    img = torch.rand(3, 10, 12)
    pil = to_pil(img)
    assert pil.size == (12, 10) and pil.mode == "RGB"
    assert to_pil(img[None]).size == (12, 10)
    assert to_pil(torch.rand(10, 12)).mode == "L"
    np.testing.assert_array_equal(np.asarray(pil), (img.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy())
    png = to_png_bytes(img)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert Image.open(__import__("io").BytesIO(png)).size == (12, 10)
    assert to_jpeg_bytes(img, quality=70)[:2] == b"\xff\xd8"
    strip = labelled_strip([img, torch.rand(3, 20, 20)], ["seed", "accent"], pad=2)
    assert strip.height == 10 + 4 + 14 and strip.width == 12 + 10 + 3 * 2
    with pytest.raises(ValueError):
        labelled_strip([])
