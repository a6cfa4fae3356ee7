"""Model adapter and registry, on the real default model and torchvision models with random weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import faccent_widget as fw
from faccent_widget.core.model import Model


def _names(preds):
    return [p.label for p in preds]


def test_default_model_predictions(model):
    coffee = model.predict(fw.sample_image("coffee"), k=5)
    assert coffee[0].label == "espresso" and coffee[0].prob > 0.8
    assert len(coffee) == 5 and all(a.prob >= b.prob for a, b in zip(coffee, coffee[1:]))
    chelsea = model.predict(fw.sample_image("chelsea"), k=3)
    assert set(_names(chelsea)) <= {"Egyptian cat", "tiger cat", "tabby", "lynx"}
    assert chelsea[0].label.endswith("cat") or chelsea[0].label == "tabby"
    hopper = model.predict(fw.sample_image("grace_hopper"), k=1)
    assert hopper[0].label == "military uniform"


def test_default_model_metadata(model):
    assert model.mean == (0.5, 0.5, 0.5) and model.std == (0.5, 0.5, 0.5)
    assert model.input_size == 224 and model.num_classes == 1000
    assert model.labels[967] == "espresso"


def test_layer_listing_and_feature_shapes(model):
    names = model.layer_names
    assert "conv_stem" in names and "blocks.3" in names and "" not in names
    x = torch.rand(2, 3, 224, 224)
    feats = model.features(x, ["blocks.1", "blocks.3", "conv_stem"])
    assert set(feats) == {"blocks.1", "blocks.3", "conv_stem"}
    assert feats["conv_stem"].shape == (2, 32, 112, 112)
    assert feats["blocks.3"].shape == (2, 80, 14, 14)
    with_logits = model.features(x, ["blocks.1"], logits=True)
    assert with_logits["logits"].shape == (2, 1000)


def test_features_on_torchvision_model():
    resnet = fw.load_model("resnet18", pretrained=False)
    feats = resnet.features(torch.rand(3, 3, 224, 224), ["layer2", "layer1.0.relu"], logits=True)
    assert feats["layer2"].shape == (3, 128, 28, 28)
    assert feats["layer1.0.relu"].shape == (3, 64, 56, 56)
    assert feats["logits"].shape == (3, 1000)


def test_gradients_reach_the_input(model):
    x = torch.rand(1, 3, 128, 128, requires_grad=True)
    model.features(x, ["blocks.2"])["blocks.2"].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_truncated_forward_never_runs_later_layers(model):
    calls: list[str] = []
    handles = [
        model.module.get_submodule(n).register_forward_hook(lambda m, a, o, n=n: calls.append(n))
        for n in ("blocks.2", "blocks.3", "blocks.6", "classifier")
    ]
    try:
        model.features(torch.rand(1, 3, 224, 224), ["blocks.2"])
        assert calls == ["blocks.2"]
        calls.clear()
        model.features(torch.rand(1, 3, 224, 224), ["blocks.2"], logits=True)
        assert calls == ["blocks.2", "blocks.3", "blocks.6", "classifier"]
    finally:
        for h in handles:
            h.remove()


def test_reused_module_returns_its_last_call():
    """ResNet blocks call one ReLU module twice; the adapter returns the block output (2nd call)."""
    resnet = fw.load_model("resnet18", pretrained=False)
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        relu_out = resnet.features(x, ["layer1.0.relu"])["layer1.0.relu"]
        block_out = resnet.features(x, ["layer1.0"])["layer1.0"]
    torch.testing.assert_close(relu_out, block_out)


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(0.5)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4)
        self.explode = False

    def forward(self, x):
        h = self.drop(self.act(self.conv(x)))
        if self.explode:
            raise RuntimeError("boom inside forward")
        return self.fc(self.pool(h).flatten(1))


def _state(module: nn.Module):
    return (
        [m.training for m in module.modules()],
        [p.requires_grad for p in module.parameters()],
        {p.device for p in module.parameters()},
        {p.dtype for p in module.parameters()},
    )


def test_never_mutates_the_user_model():
    net = _Tiny()
    net.train()
    net.fc.weight.requires_grad_(False)
    seen: list[tuple] = []
    net.act.register_forward_hook(lambda m, a, o: seen.append(o.shape))
    before = _state(net)
    hooks_before = (dict(net.act._forward_hooks), dict(net.conv._forward_hooks))
    model = Model(net, labels=["a", "b", "c", "d"], input_size=32)
    model.features(torch.rand(2, 3, 32, 32), ["conv"])
    model.predict(torch.rand(3, 40, 40), k=2)
    assert _state(net) == before
    assert (dict(net.act._forward_hooks), dict(net.conv._forward_hooks)) == hooks_before
    assert len(seen) >= 2  # the user's hook kept firing during our calls
    net.explode = True
    with pytest.raises(RuntimeError, match="boom"):
        model.features(torch.rand(1, 3, 32, 32), ["fc"], logits=True)
    assert _state(net) == before
    assert (dict(net.act._forward_hooks), dict(net.conv._forward_hooks)) == hooks_before
    net.explode = False
    n_seen = len(seen)
    net(torch.rand(1, 3, 32, 32))
    assert len(seen) == n_seen + 1


def test_default_reg_layer_rule(model):
    layer = model.default_reg_layer
    assert layer in model.activation_layers
    assert abs(model.layer_depth(layer) - 0.25) < 0.05
    googlenet = fw.load_model("googlenet", pretrained=False)
    assert googlenet.default_reg_layer in ("inception3a", "inception3b")  # functional ReLUs → block outputs
    resnet = fw.load_model("resnet18", pretrained=False)
    assert resnet.default_reg_layer in resnet.activation_layers


def test_unknown_layer_names_close_matches(model):
    with pytest.raises(fw.LayerNotFoundError, match=r"blocks\.3"):
        model.features(torch.rand(1, 3, 64, 64), ["block.3"])


def test_class_index_errors(model):
    assert model.class_index("espresso") == 967
    assert model.class_index("Espresso") == 967
    assert model.class_index(967) == 967
    with pytest.raises(IndexError, match="0…999"):
        model.class_index(1000)
    with pytest.raises(ValueError, match="espresso"):
        model.class_index("expresso")


def test_non_logit_output_is_explained():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    with pytest.raises(ValueError, match=r"\(N, C\) class logits"):
        _ = Model(net).num_classes


def test_preprocessing_overrides_and_labels():
    net = _Tiny()
    m = Model(net, input_range=(0, 255), input_size=32)
    assert m.mean == (0.0, 0.0, 0.0) and m.std == pytest.approx((1 / 255,) * 3)
    x = torch.full((1, 3, 2, 2), 0.5)
    assert torch.allclose(m.normalize(x), torch.full_like(x, 127.5))
    assert m.labels == ["class 0", "class 1", "class 2", "class 3"]
    with pytest.raises(ValueError, match="either input_range or mean/std"):
        Model(net, input_range=(0, 1), mean=(0, 0, 0))


def test_timm_and_torchvision_metadata():
    import timm
    from torchvision.models import ResNet18_Weights, resnet18

    vit_like = Model(timm.create_model("resnet10t", pretrained=False))
    assert vit_like.mean == pytest.approx((0.485, 0.456, 0.406))
    tv = Model(resnet18(weights=None), weights=ResNet18_Weights.IMAGENET1K_V1)
    assert tv.input_size == 224 and tv.labels[0] == "tench"


def test_pretrained_torchvision_without_weights_fails_fast(tmp_path, monkeypatch):
    import time

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    t0 = time.perf_counter()
    with pytest.raises(fw.WeightsUnavailableError, match="pretrained=False"):
        fw.load_model("googlenet")
    assert time.perf_counter() - t0 < 10


def test_load_model_wraps_user_modules_and_rejects_unknown_names():
    m = fw.load_model(_Tiny(), mean=(0.5,) * 3, std=(0.5,) * 3, labels=list("abcd"), input_size=32)
    assert m.labels == list("abcd") and m.mean == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="efficientnet_lite0"):
        fw.load_model("efficientnet_b9")


def test_as_model_never_changes_a_given_adapter():
    from faccent_widget.core.model import as_model

    base = Model(_Tiny(), labels=list("abcd"), input_size=32)
    relabelled = as_model(base, labels=list("wxyz"))
    assert base.labels == list("abcd") and relabelled.labels == list("wxyz")
    assert relabelled.user_module is base.user_module and relabelled.input_size == 32
    assert as_model(base) is base and as_model(base, device="cpu") is base
