"""Grad-CAM through Captum's ``LayerGradCam`` and a layout probe, on every layout.

The library's Grad-CAM points ``LayerGradCam`` at an identity probe that a temporary hook on the
user's layer calls with the layer's output re-laid to (N, C, h, w). Checked here against two
oracles on a CNN (spatial), a ViT (tokens with a class token), a Swin (channels-last stages) and a
torchvision ConvNeXt (channels-last LayerNorm blocks), all with random weights except the default
model:

* the hand-written Grad-CAM the library used before Captum came back (:func:`_handwritten_gradcam`,
  kept here only as an oracle): equal up to float round-off;
* pytorch-grad-cam (``GradCAM`` with a ``reshape_transform`` for tokens and channels-last maps):
  Pearson r ≥ 0.999 in pytorch-grad-cam's order of operations (ReLU and min-max at the layer's
  resolution, then a bilinear resize).

And the user's model keeps no hook, mode or ``requires_grad`` change, after a call and after an error.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import faccent_widget as fw
from faccent_widget.core.attribution import default_gradcam_layer, gradcam
from faccent_widget.core.objectives import Features, Objective, resolve_objective

# --------------------------------------------------------------------------- oracles


def _handwritten_gradcam(model: fw.Model, x: torch.Tensor, target: Any, layer: str) -> torch.Tensor:
    """The pre-Captum Grad-CAM of the library, (N, h, w) at the layer's resolution: a temporary hook
    replaces the layer's last output by a leaf tensor; activations and gradients are brought to
    (N, C, h, w) by the layer's layout, then ``Σ_c mean_hw(∂target/∂A_c) · A_c``."""
    objective = resolve_objective(model, target)
    module = model.module.get_submodule(layer)
    layout = model.layout(layer)
    captured: list[torch.Tensor] = []

    def hook(_m: nn.Module, _args: Any, output: torch.Tensor) -> torch.Tensor:
        leaf = output.detach().requires_grad_(True)
        captured.append(leaf)
        return leaf.clone()

    with model.preserved(), torch.enable_grad():
        handle = module.register_forward_hook(hook)
        try:
            feats = model.features(x, objective.layers, logits=objective.needs_logits)
            value = objective(feats)
        finally:
            handle.remove()
        (grad,) = torch.autograd.grad(value.sum(), captured[-1])
    acts = layout.to_map(captured[-1].detach()).float()
    weights = layout.to_map(grad).float().mean(dim=(2, 3), keepdim=True)
    return (weights * acts).sum(1)


def _pytorch_grad_cam(
    model: fw.Model,
    x: torch.Tensor,
    layer: str,
    classes: list[int],
    reshape_transform: Callable[[torch.Tensor], torch.Tensor] | None,
) -> torch.Tensor:
    """pytorch-grad-cam's ReLU'd, min-max scaled, resized map, on a private frozen copy of the model
    (it calls .eval() and adds hooks)."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    net = copy.deepcopy(model.module).requires_grad_(False)
    inp = model.normalize(x).detach().requires_grad_(True)
    with GradCAM(model=net, target_layers=[net.get_submodule(layer)], reshape_transform=reshape_transform) as cam:
        out = cam(input_tensor=inp, targets=[ClassifierOutputTarget(c) for c in classes])
    return torch.from_numpy(out)


def _grad_cam_order(low: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """pytorch-grad-cam's order of operations on raw (N, h, w) maps: ReLU, min-max, bilinear resize."""
    m = low.clamp(min=0)
    m = m - m.amin((-2, -1), keepdim=True)
    m = m / (m.amax((-2, -1), keepdim=True) + 1e-7)
    return F.interpolate(m[:, None], size=hw, mode="bilinear", align_corners=False)[:, 0]


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.flatten().double().numpy(), b.flatten().double().numpy())[0, 1])


def _hook_state(module: nn.Module) -> list[tuple[Any, ...]]:
    """Everything a call could leave behind on the user's module: hooks, modes, requires_grad."""
    return [
        (
            n,
            m.training,
            len(m._forward_hooks),
            len(m._forward_pre_hooks),
            len(m._backward_hooks),
            len(m._backward_pre_hooks),
            tuple(p.requires_grad for p in m.parameters(recurse=False)),
        )
        for n, m in module.named_modules()
    ]


# --------------------------------------------------------------------------- the four families


def _tokens_to_map(prefix: int, side: int) -> Callable[[torch.Tensor], torch.Tensor]:
    def reshape(t: torch.Tensor) -> torch.Tensor:  # pytorch-grad-cam's ViT tutorial
        return t[:, prefix:, :].reshape(t.size(0), side, side, t.size(2)).permute(0, 3, 1, 2)

    return reshape


def _channels_last_to_map(t: torch.Tensor) -> torch.Tensor:  # pytorch-grad-cam's Swin tutorial
    return t.permute(0, 3, 1, 2)


def _cnn(default_model: fw.Model) -> tuple[fw.Model, str | None, Any, str]:
    return default_model, None, None, "spatial"


def _vit(_: fw.Model) -> tuple[fw.Model, str | None, Any, str]:
    import timm

    net = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=96, depth=3)
    return fw.load_model(net, name="vit"), None, _tokens_to_map(1, 6), "tokens"


def _swin(_: fw.Model) -> tuple[fw.Model, str | None, Any, str]:
    import timm

    net = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, depths=(1, 1, 1, 1))
    # the third stage (14×14) rather than the default last one (7×7): more positions to correlate
    return fw.load_model(net, name="swin"), "layers.2", _channels_last_to_map, "channels_last"


def _convnext(_: fw.Model) -> tuple[fw.Model, str | None, Any, str]:
    import torchvision

    # torchvision's CNBlock: Conv2d, Permute to (N, h, w, C), LayerNorm, Linear, GELU, Linear, Permute
    # back, times a layer scale; that scale starts at 1e-6, which leaves a random model's maps at ~1e-9
    net = torchvision.models.convnext_tiny(layer_scale=0.5)
    model = fw.load_model(net, name="convnext_tiny", input_size=128)
    return model, "features.5.8.block.2", _channels_last_to_map, "channels_last"


FAMILIES = {"cnn": _cnn, "vit": _vit, "swin": _swin, "convnext": _convnext}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_probe_gradcam_matches_handwritten_and_pytorch_grad_cam(family: str, model: fw.Model) -> None:
    torch.manual_seed(0)
    net, layer, reshape, kind = FAMILIES[family](model)
    x = net.to_input([fw.sample_image("coffee"), fw.sample_image("chelsea")])
    hw = (int(x.shape[-2]), int(x.shape[-1]))
    with torch.no_grad():
        classes = net.logits(x).argmax(1).tolist()
    layer = layer or default_gradcam_layer(net, classes[0])
    assert net.layout(layer).kind == kind
    before = _hook_state(net.user_module)

    low = torch.cat([gradcam(net, x[i : i + 1], c, layer, upsample=False) for i, c in enumerate(classes)])
    assert low.dtype == torch.float32 and low.shape[0] == 2 and (low.abs().amax((1, 2)) > 0).all()
    assert _hook_state(net.user_module) == before
    assert all(p.grad is None for p in net.user_module.parameters())

    # the hand-written oracle: the same numbers up to float round-off
    oracle = torch.cat([_handwritten_gradcam(net, x[i : i + 1], c, layer) for i, c in enumerate(classes)])
    scale = float(oracle.abs().max())
    torch.testing.assert_close(low, oracle, rtol=1e-5, atol=1e-6 * scale)
    # upsampling is bilinear, align_corners=False, as before
    up = gradcam(net, x[:1], classes[0], layer)
    expected = F.interpolate(oracle[:1, None], size=hw, mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(up, expected, rtol=1e-5, atol=1e-6 * scale)

    # pytorch-grad-cam, in its order of operations
    ref = _pytorch_grad_cam(net, x, layer, classes, reshape)
    ours = _grad_cam_order(low, hw)
    for i in range(2):
        assert _pearson(ours[i], ref[i]) >= 0.999, (family, i)


# --------------------------------------------------------------------------- the user's model


class _TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.act = nn.ReLU()
        self.side = nn.Conv2d(3, 4, 3, stride=2, padding=1)  # runs, but the logits do not use it
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.side(x)
        return self.fc(self.pool(self.act(self.conv(x))).flatten(1))


@pytest.fixture()
def tiny() -> fw.Model:
    torch.manual_seed(0)
    return fw.Model(_TinyNet(), input_size=32, name="tiny")


def test_only_the_gradcam_layer_is_hooked_and_only_during_the_call(tiny: fw.Model) -> None:
    """Captum's hooks go on the probe, never on the user's modules; the one temporary hook sits on the
    Grad-CAM layer while the forward pass runs and is gone afterwards."""
    net = tiny.user_module
    seen: list[list[tuple[str, int, int]]] = []
    logit = resolve_objective(tiny, 1)

    class Spy(Objective):
        needs_logits = True
        description = "spy"

        def __call__(self, feats: Features) -> torch.Tensor:
            seen.append(
                [
                    (n, len(m._forward_hooks), len(m._backward_hooks) + len(m._backward_pre_hooks))
                    for n, m in net.named_modules()
                    if m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
                ]
            )
            return logit(feats)

    before = _hook_state(net)
    x = torch.rand(2, 3, 32, 32)
    maps = gradcam(tiny, x, Spy(), layer="act")
    assert seen == [[("act", 1, 0)]]
    torch.testing.assert_close(maps, gradcam(tiny, x, 1, layer="act"))
    assert _hook_state(net) == before


def test_errors_leave_the_users_model_as_it_was(tiny: fw.Model) -> None:
    net = tiny.user_module
    assert isinstance(net, _TinyNet)
    net.train()
    net.conv.eval()
    net.fc.bias.requires_grad_(False)
    before = _hook_state(net)
    x = torch.rand(2, 3, 32, 32)

    class Broken(Objective):
        layers = ("act",)
        description = "broken"

        def __call__(self, feats: Features) -> torch.Tensor:
            raise RuntimeError("boom")

    class TwoValues(Objective):
        needs_logits = True
        description = "two values"

        def __call__(self, feats: Features) -> torch.Tensor:
            return feats["logits"][:, :2]

    with pytest.raises(RuntimeError, match="boom"):
        gradcam(tiny, x, Broken(), layer="act")
    assert _hook_state(net) == before
    with pytest.raises(ValueError, match="one value per image"):
        gradcam(tiny, x, TwoValues(), layer="act")
    assert _hook_state(net) == before
    with pytest.raises(ValueError, match=r"does not depend on layer 'side'"):
        gradcam(tiny, x, 0, layer="side")
    assert _hook_state(net) == before
    assert all(p.grad is None for p in net.parameters())
