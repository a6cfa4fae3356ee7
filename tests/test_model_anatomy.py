"""The model's metadata (``ModelMeta``), its anatomy (``Anatomy``), fixed-size models known from
metadata or a wrap-time probe (Hugging Face Swin, non-square timm ViT), 1-/4-channel models, and the
one hook runner leaving no hooks behind."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import faccent_widget as fw
from faccent_widget.core.anatomy import Anatomy, runs_at
from faccent_widget.core.model import Model, as_model
from faccent_widget.core.model_meta import IMAGENET_MEAN, ModelMeta


def _hook_count(module: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


def _hf_swin() -> nn.Module:
    transformers = pytest.importorskip("transformers")
    config = transformers.SwinConfig(
        image_size=224,
        patch_size=4,
        window_size=7,
        embed_dim=16,
        depths=[1, 1, 2, 1],
        num_heads=[1, 1, 2, 2],
        num_labels=10,
    )
    torch.manual_seed(0)
    return transformers.SwinForImageClassification(config).eval()


def _window_sizes(net: nn.Module) -> list[tuple[int, int]]:
    return [(b.window_size, b.shift_size) for stage in net.swin.encoder.layers for b in stage.blocks]


# --------------------------------------------------------------------------- ModelMeta


def test_meta_from_timm():
    import timm

    vit = ModelMeta.of(timm.create_model("vit_tiny_patch16_224", img_size=64, depth=1))
    assert vit.input_size == (64, 64) and vit.fixed_size is True and vit.size_source == "timm patch_embed.img_size"
    assert vit.patch_grid == (4, 4) and vit.prefix_tokens == 1 and vit.mean == (0.5, 0.5, 0.5)
    cnn = ModelMeta.of(timm.create_model("resnet10t"))
    # resnet10t.c3_in1k was trained at 176 px; a CNN's pretrained_cfg says it is not fixed-size
    assert cnn.input_size == (176, 176) and cnn.fixed_size is False and cnn.mean == pytest.approx(IMAGENET_MEAN)


def test_meta_from_torchvision():
    from torchvision.models import Inception3, ResNet18_Weights, VisionTransformer, resnet18

    vit = VisionTransformer(image_size=64, patch_size=16, num_layers=1, num_heads=2, hidden_dim=32, mlp_dim=64)
    meta = ModelMeta.of(vit)
    assert meta.input_size == (64, 64) and meta.fixed_size is True and meta.patch_grid == (4, 4)
    assert meta.prefix_tokens == 1
    inception = ModelMeta.from_torchvision(Inception3(aux_logits=False, init_weights=False))
    assert inception.input_size == (299, 299) and inception.fixed_size is None
    weighted = ModelMeta.of(resnet18(weights=None), ResNet18_Weights.IMAGENET1K_V1)
    assert weighted.input_size == (224, 224) and weighted.size_source == "torchvision weights"
    assert weighted.labels is not None and weighted.labels[0] == "tench" and len(weighted.labels) == 1000
    assert ModelMeta.of(nn.Linear(2, 2)) == ModelMeta()  # a bare module: nothing known


def test_meta_from_huggingface():
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(
        image_size=64, patch_size=16, num_hidden_layers=1, hidden_size=32, num_attention_heads=2, intermediate_size=64
    )
    config.id2label = {0: "cat", 1: "dog"}
    config.label2id = {"cat": 0, "dog": 1}
    vit = ModelMeta.of(transformers.ViTForImageClassification(config))
    assert vit.input_size == (64, 64) and vit.fixed_size is True and vit.patch_grid == (4, 4)
    assert vit.labels == ("cat", "dog") and vit.size_source == "Hugging Face config.image_size"
    swin = ModelMeta.of(_hf_swin())  # windows pad at some sizes and fail at others: the metadata cannot tell
    assert swin.input_size == (224, 224) and swin.fixed_size is None and swin.labels is None  # LABEL_i names dropped


def test_meta_merge_takes_what_the_other_knows():
    a = ModelMeta(mean=(0.1,) * 3, input_size=(32, 32), size_source="a", fixed_size=False)
    b = ModelMeta(std=(0.2,) * 3, fixed_size=True)
    merged = a.merged(b)
    assert merged.mean == (0.1,) * 3 and merged.std == (0.2,) * 3 and merged.fixed_size is True
    assert merged.input_size == (32, 32) and merged.size_source == "a"  # b knows no size: a's source stays
    assert a.merged(ModelMeta(input_size=(48, 48), size_source="b")).size_source == "b"


# --------------------------------------------------------------------------- fixed sizes


def test_hf_swin_is_fixed_size_and_its_first_call_works(chelsea):
    net = _hf_swin()
    windows = _window_sizes(net)
    model = Model(net)
    # the wrap-time probe at 160 px raised (and changed window sizes inside the HF model): put back
    assert _window_sizes(net) == windows
    assert model.input_size == 224 and not model.accepts_any_size and model.crop_size(scale=0.7) == 224
    result = fw.accentuate(model, chelsea, 3, steps=2, n_crops=2, canvas=64, seed=0)
    assert torch.isfinite(result.image).all() and len(result.history) == 2
    assert _window_sizes(net) == windows and _hook_count(net) == 0


def test_hf_swin_reg_layer_is_a_tensor_on_the_main_path():
    model = Model(_hf_swin())
    layer = model.default_reg_layer
    # SwinLayer returns a tuple: the stand-in is the block's post-attention norm, not an attention branch
    assert layer.endswith("layernorm_after") and "drop_path" not in layer and "attention" not in layer
    layout = model.layout(layer)
    assert layout.kind == "tokens" and layout.is_map
    block = layer.rpartition(".")[0]
    assert model.layout(block).kind == "internal"  # the block itself: a tuple
    feats = model.features(torch.rand(1, 3, 224, 224), [layer])
    assert isinstance(feats[layer], torch.Tensor) and feats[layer].shape == (1, *layout.shape[1:])
    assert all(n.endswith("layernorm_after") for n in model.reg_layer_candidates)


def test_forcing_another_size_on_a_fixed_size_model_names_its_size():
    with pytest.raises(ValueError, match=r"fixed input size of 224×224 .*fails at 160×160"):
        Model(_hf_swin(), input_size=160)
    import timm

    vit = timm.create_model("vit_tiny_patch16_224", img_size=64, depth=1)
    with pytest.raises(ValueError, match=r"fixed input size of 64×64 \(timm patch_embed.img_size\)"):
        Model(vit, input_size=96)
    assert Model(vit, input_size=96, accepts_any_size=True).input_size == 96  # the user's word wins


def test_a_non_square_fixed_size_is_known_from_the_metadata_or_the_probe():
    import timm

    vit = Model(timm.create_model("vit_tiny_patch16_224", img_size=(160, 256), depth=1))
    assert vit.input_hw == (160, 256) and vit.anatomy.input_hw == (160, 256) and not vit.accepts_any_size
    with pytest.raises(ValueError, match=r"fixed input size of 160×256 .*input_size=\(160, 256\)"):
        Model(vit.module, input_size=160)
    # no "fixed" in the metadata: the square probe fails, the native (h, w) runs → fixed at (h, w)
    net = nn.Sequential(nn.Conv2d(3, 2, 3, stride=4), nn.Flatten(), nn.Linear(2 * 8 * 12, 5))  # 32×48 only
    tried: list[tuple[int, int]] = []

    def probe(hw: tuple[int, int]) -> bool:
        tried.append(hw)
        return runs_at(net, hw, lambda x: x)

    meta = ModelMeta(input_size=(32, 48), size_source="a test")
    assert meta.resolve_size(None, None, "net", probe) == ((32, 48), True) and tried == [(32, 32), (32, 48)]
    with pytest.raises(ValueError, match=r"fixed input size of 32×48 \(a test; it fails at 40×40\)"):
        meta.resolve_size(40, None, "net", probe)
    # a model that runs at any size keeps a square input (at the metadata's width), as before
    free = nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 5))
    assert meta.resolve_size(None, None, "free", lambda hw: runs_at(free, hw, lambda x: x)) == ((48, 48), False)


def test_a_model_that_runs_only_at_its_size_is_found_by_the_probe():
    net = nn.Sequential(nn.Conv2d(3, 2, 3, stride=4), nn.Flatten(), nn.Linear(2 * 8 * 8, 5))  # 32 px only
    model = Model(net, input_size=32)
    assert not model.accepts_any_size and model.crop_size(scale=0.7) == 32
    free = Model(nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 5)))
    assert free.accepts_any_size and free.crop_size(scale=0.7) == 160


@pytest.mark.parametrize("channels", [1, 4])
def test_non_rgb_models_name_the_expected_input(channels, chelsea):
    net = nn.Sequential(nn.Conv2d(channels, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    with pytest.raises(ValueError, match=rf"{channels}-channel input .*in_channels={channels}.*\(N, 3, H, W\)"):
        Model(net)  # no metadata: found by the wrap-time probe
    import timm

    known = Model(timm.create_model("resnet10t", in_chans=channels), input_size=64)  # metadata: no probe
    with pytest.raises(ValueError, match=rf"{channels}-channel input .*conv1"):
        known.predict(chelsea)


# --------------------------------------------------------------------------- anatomy and hooks


def test_anatomy_is_the_models_facts(model):
    anatomy = model.anatomy
    assert isinstance(anatomy, Anatomy) and model.anatomy is anatomy  # traced once
    assert model.default_reg_layer == anatomy.default_reg_layer() and model.map_layers == anatomy.map_layers
    with pytest.raises(AttributeError):
        anatomy.input_size = 64  # type: ignore[misc]  # frozen
    standalone = Anatomy.of(model.module, 96, model.normalize)  # typed on nn.Module: no Model needed
    small, native = standalone.layout(model.default_reg_layer), model.layout(model.default_reg_layer)
    assert standalone.trace.num_classes == 1000 and small.kind == native.kind == "spatial"
    assert small.shape[1] == native.shape[1] and small.shape[2] < native.shape[2]
    assert _hook_count(model.module) == 0


def test_features_leaves_no_hooks_after_an_early_stop(model):
    layers = model.block_layers
    out = model.features(torch.rand(1, 3, 64, 64), [layers[1]])
    assert list(out) == [layers[1]] and _hook_count(model.module) == 0


class _FailsAfterConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.head = nn.Linear(4, 2)
        self.fail = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x).mean((2, 3))
        if self.fail:
            raise RuntimeError("boom after conv")
        return self.head(h)


def test_features_leaves_no_hooks_and_no_state_after_an_error():
    net = _FailsAfterConv().train()
    model = Model(net, input_size=32)
    assert model.num_classes == 2
    net.fail = True
    with pytest.raises(RuntimeError, match="boom after conv"):
        model.features(torch.rand(1, 3, 32, 32), ["conv"], logits=True)
    assert _hook_count(net) == 0 and net.training and all(p.requires_grad for p in net.parameters())


def test_with_module_and_as_model_keep_every_setting():
    net = _FailsAfterConv()
    base = Model(net, input_size=32, labels=["a", "b"], mean=(0.1,) * 3, std=(0.2,) * 3, reg_layer="conv")
    for copy in (base.with_module(_FailsAfterConv(), name="copy"), as_model(base, labels=["a", "b"])):
        assert (copy.input_size, copy.accepts_any_size, copy.mean, copy.std) == (32, True, base.mean, base.std)
        assert copy.labels == ["a", "b"] and copy.default_reg_layer == "conv"
