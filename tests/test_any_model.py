"""Any model a user brings: a matrix of small random-weight models from every family (timm ViT, also a
non-square one, DeiT and Swin, a timm CNN, torchvision ConvNeXt and ViT, a Hugging Face ViT built from a
config, fp16 and bf16 CNNs), each run through predict, accentuate with default settings, Grad-CAM and the
widget; plus the layout, input-size, half-precision and registry facts they rely on.

The models are tiny (64 px inputs, 2–4 blocks) and runs are 2 steps of 2 crops, so the whole file
stays fast on a 2-core CPU. torchvision initialises classifier heads to zero (constant logits); the
head of its ViT is re-initialised with random weights so that Grad-CAM has something to show.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

import faccent_widget as fw
from faccent_widget import FaccentWidget
from faccent_widget.accentuate import run_to_end
from faccent_widget.core.attribution import default_gradcam_layer, gradcam
from faccent_widget.core.engine import channel_distance
from faccent_widget.core.layouts import LayerLayout
from faccent_widget.core.model import Model
from faccent_widget.core.objectives import Channel, neuron, resolve_objective

RUN = dict(steps=2, n_crops=2, canvas=64, seed=0)


def _timm_vit() -> Model:
    import timm

    return Model(timm.create_model("vit_tiny_patch16_224", img_size=64, depth=4))


def _timm_deit() -> Model:
    import timm

    return Model(timm.create_model("deit_tiny_distilled_patch16_224", img_size=64, depth=2))


def _timm_vit_non_square() -> Model:
    import timm

    return Model(timm.create_model("vit_tiny_patch16_224", img_size=(64, 96), depth=3))


def _timm_swin() -> Model:
    import timm

    return Model(
        timm.create_model(
            "swin_tiny_patch4_window7_224",
            img_size=64,
            window_size=4,
            depths=(1, 1, 2, 1),
            embed_dim=24,
            num_heads=(1, 1, 2, 2),
        )
    )


def _timm_cnn(dtype: torch.dtype = torch.float32) -> Callable[[], Model]:
    def build() -> Model:
        import timm

        return Model(timm.create_model("resnet10t").to(dtype), input_size=64)

    return build


def _tv_convnext() -> Model:
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    net = ConvNeXt([CNBlockConfig(16, 32, 2), CNBlockConfig(32, 64, 2), CNBlockConfig(64, None, 2)])
    return Model(net, input_size=64)


def _tv_vit() -> Model:
    from torchvision.models import VisionTransformer

    net = VisionTransformer(image_size=64, patch_size=16, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64)
    nn.init.normal_(net.heads.head.weight, std=0.5)  # torchvision's zero head gives constant logits
    return Model(net)


def _hf_vit() -> Model:
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(
        image_size=64,
        patch_size=16,
        num_hidden_layers=2,
        hidden_size=32,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=10,
    )
    return Model(transformers.ViTForImageClassification(config).eval())


#: family → (builder, expected layout of the default reg layer, fixed input size?)
MATRIX: dict[str, tuple[Callable[[], Model], str, bool]] = {
    "timm-vit": (_timm_vit, "tokens", True),
    "timm-vit-non-square": (_timm_vit_non_square, "tokens", True),
    "timm-deit-distilled": (_timm_deit, "tokens", True),
    "timm-swin": (_timm_swin, "channels_last", True),
    "timm-resnet": (_timm_cnn(), "spatial", False),
    "torchvision-convnext": (_tv_convnext, "channels_last", False),
    "torchvision-vit": (_tv_vit, "tokens", True),
    "hf-vit": (_hf_vit, "tokens", True),
    "fp16-resnet": (_timm_cnn(torch.float16), "spatial", False),
    "bf16-resnet": (_timm_cnn(torch.bfloat16), "spatial", False),
}


@pytest.fixture(scope="module", params=list(MATRIX))
def case(request) -> tuple[str, Model]:
    torch.manual_seed(0)
    return request.param, MATRIX[request.param][0]()


def _module_state(module: nn.Module) -> tuple:
    return (
        [m.training for m in module.modules()],
        [p.requires_grad for p in module.parameters()],
        {p.dtype for p in module.parameters()},
        sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules()),
    )


# --------------------------------------------------------------------------- the matrix


def test_predict(case, chelsea):
    name, model = case
    preds = model.predict(chelsea, k=3)
    assert len(preds) == 3 and all(a.prob >= b.prob for a, b in zip(preds, preds[1:]))
    assert all(math.isfinite(p.prob) for p in preds) and 0.0 < sum(p.prob for p in preds) <= 1.0 + 1e-5


def test_default_reg_layer_layout(case):
    name, model = case
    layer = model.default_reg_layer
    layout = model.layout(layer)
    assert layout.kind == MATRIX[name][1], (layer, layout)
    assert layout.is_map and layer in model.reg_layer_candidates
    assert layer not in model.stem_layers
    assert all(model.layout(n).is_activation and model.layout(n).kind != "pooled" for n in model.reg_layer_candidates)
    if model.transformer_blocks:
        assert layer in model.transformer_blocks  # a block output, never an attention internal
    assert model.layer_depth(layer) <= 0.5  # near 1/4 (2-block models: after the first block)


def test_accentuate_with_default_settings(case, chelsea):
    name, model = case
    before = _module_state(model.module)
    target = model.predict(chelsea, k=2)[1].index
    result = fw.accentuate(model, chelsea, target, **RUN)
    fixed = MATRIX[name][2]
    assert model.accepts_any_size is not fixed
    expected = model.input_size if fixed else model.crop_size(None, 0.7)  # the CPU preset: preview
    assert result.config.input_size == expected
    assert result.config.reg_layer == model.default_reg_layer
    assert np.isfinite(result.history["objective"]).all() and np.isfinite(result.history["distance"]).all()
    assert result.image.shape == result.seed.shape and result.image.dtype == torch.float32
    assert _module_state(model.module) == before


def test_gradcam_is_not_degenerate(case, chelsea, coffee):
    name, model = case
    x = model.to_input([chelsea, coffee])
    top = model.predict(chelsea, k=2)
    layer = default_gradcam_layer(model, top[0].index)
    assert model.layout(layer).is_map
    a = gradcam(model, x, top[0].index)
    b = gradcam(model, x, top[1].index)
    assert a.shape == (2, *model.input_hw) and torch.isfinite(a).all()
    assert a.abs().amax() > 0 and b.abs().amax() > 0
    assert (a - b).abs().amax() > 1e-3 * a.abs().amax()


def test_distance_is_per_position(case, chelsea):
    """Definition 2.1 at every layout: one position's channel vector moved by r costs r / P."""
    name, model = case
    layer = model.default_reg_layer
    layout = model.layout(layer)
    with torch.no_grad():
        a = model.features(model.to_input(chelsea), [layer])[layer].float()
    b = a.clone()
    delta = torch.randn(layout.channels, generator=torch.Generator().manual_seed(0))
    delta = 3.0 * delta / delta.norm()
    if layout.kind == "spatial":
        b[0, :, 1, 2] += delta
    elif layout.kind == "channels_last":
        b[0, 1, 2, :] += delta
    else:
        b[0, layout.prefix_tokens + 1, :] += delta
    d = channel_distance(b, a, layout)
    assert d.shape == (1, layout.positions)
    assert float(d.mean()) == pytest.approx(3.0 / layout.positions, rel=1e-3)
    assert int((d > 1e-3).sum()) == 1


def test_local_edit_costs_less_than_a_spread_out_one(case, chelsea):
    """The issue's property: with the per-position distance, a local edit costs clearly less than a
    spread-out edit of the same pixel energy (ViT-S: 0.15; the dim-1 distance gave 0.64 on tokens)."""
    name, model = case
    x0 = model.to_input(chelsea)
    s, k = x0.shape[-1], x0.shape[-1] // 4
    g = torch.Generator().manual_seed(0)
    local = torch.zeros_like(x0)
    local[..., s // 2 - k // 2 : s // 2 - k // 2 + k, s // 2 - k // 2 : s // 2 - k // 2 + k] = 0.1 * torch.randn(
        1, 3, k, k, generator=g
    )
    spread = torch.randn(x0.shape, generator=g)
    spread = spread * local.norm() / spread.norm()
    layer = model.default_reg_layer
    with torch.no_grad():
        f = model.features(torch.cat([x0, x0 + local, x0 + spread]), [layer])[layer]
    d = channel_distance(f[1:], f[:1].expand_as(f[1:]), model.layout(layer)).mean(1)
    assert float(d[0] / d[1]) < 0.75


def test_widget_runs(case, chelsea, coffee):
    name, model = case
    w = FaccentWidget(model, chelsea, reference=[chelsea, coffee], n_crops=2, canvas=64)
    assert w.reg_layer == model.default_reg_layer
    assert all(model.layout(n).is_activation for n in w.reg_layers)
    assert all(model.layout(n).is_map for n in w.latent_layers)
    result = w.run(steps=2)
    assert result.config.steps == 2 and np.isfinite(result.history["distance"]).all()
    assert w.panel_png().startswith(b"\x89PNG")


# --------------------------------------------------------------------------- layouts in detail


@pytest.fixture(scope="module")
def vit() -> Model:
    torch.manual_seed(0)
    return _timm_vit()


def test_vit_layouts_from_metadata(vit):
    q = vit.layout("blocks.0.attn.q_norm")
    assert q.kind == "internal" and "attention" in q.note
    tokens = vit.layout("blocks.1")
    assert (tokens.kind, tokens.prefix_tokens, tokens.grid, tokens.channels) == ("tokens", 1, (4, 4), 192)
    assert tokens.positions == 17 and tokens.channel_dim == -1
    assert vit.layout("fc_norm").kind == "pooled" and vit.layout("head").kind == "pooled"
    assert vit.transformer_blocks == ["blocks.0", "blocks.1", "blocks.2", "blocks.3"]
    assert "patch_embed" in vit.stem_layers and "patch_embed" not in vit.reg_layer_candidates
    assert not any(".attn." in n for n in vit.reg_layer_candidates + vit.map_layers)
    assert default_gradcam_layer(vit, 3) == "blocks.3.norm1"  # pytorch-grad-cam's ViT recipe


def test_internal_layers_are_refused_with_the_valid_ones(vit, chelsea):
    x = vit.to_input(chelsea)
    with pytest.raises(ValueError, match=r"internal.*blocks\.3\.norm1"):
        gradcam(vit, x, 0, layer="blocks.3.attn.k_norm")
    with pytest.raises(ValueError, match=r"not an activation of the image.*'blocks\.0'"):
        fw.start_run(vit, chelsea, 0, reg_layer="blocks.0.attn.q_norm", **RUN)
    with pytest.raises(ValueError, match="not an activation of the image"):
        resolve_objective(vit, "blocks.0.attn.q_norm:1")
    assert gradcam(vit, x, 0, layer="blocks.2.norm1").abs().amax() > 0  # a real block is accepted


def test_channel_objectives_use_the_layout_channel_axis(vit, chelsea):
    x = vit.to_input(chelsea)
    with torch.no_grad():
        a = vit.features(x, ["blocks.1"])["blocks.1"]
        value = resolve_objective(vit, "blocks.1:5")({"blocks.1": a})
        pooled = resolve_objective(vit, "fc_norm:7")
    torch.testing.assert_close(value, a[:, :, 5].mean(1))  # the mean over all tokens of channel 5
    assert pooled.spatial_layer is None  # supported, but it has no map
    with pytest.raises(ValueError, match="pooled"):
        resolve_objective(vit, neuron("fc_norm", 7))
    with pytest.raises(IndexError, match="0…191"):
        resolve_objective(vit, "blocks.1:192")
    cam = gradcam(vit, x, "blocks.2:5")  # channel targets at token layers get a map too
    assert cam.shape == (1, 64, 64) and cam.abs().amax() > 0
    run = fw.start_run(vit, chelsea, "fc_norm:7", **RUN)
    assert np.isfinite(run_to_end(run)[0].history["objective"]).all()


def test_an_unbound_channel_keeps_dim_1():
    a = torch.arange(24.0).view(1, 2, 3, 4)
    torch.testing.assert_close(Channel("x", 1)({"x": a}), a[:, 1].mean((1, 2)))


def test_layout_conversions():
    tokens = LayerLayout("tokens", (1, 5, 3), grid=(2, 2), prefix_tokens=1)
    t = torch.arange(15.0).view(1, 5, 3)
    m = tokens.to_map(t)
    assert m.shape == (1, 3, 2, 2)
    torch.testing.assert_close(m[0, :, 0, 1], t[0, 2])  # patch 1 (after the class token) at row 0, col 1
    assert tokens.channels_first(t).shape == (1, 3, 5)
    cl = LayerLayout("channels_last", (1, 2, 2, 3), grid=(2, 2))
    torch.testing.assert_close(cl.to_map(t[:, 1:].reshape(1, 2, 2, 3)), m)
    with pytest.raises(TypeError, match="internal"):
        LayerLayout("internal").channels_first(t)
    with pytest.raises(ValueError, match="unknown layout kind"):
        LayerLayout("columns")


def test_squeeze_excitation_activations_are_pooled():
    from torchvision.models import regnet_y_400mf

    model = Model(regnet_y_400mf(), input_size=64)
    se = [n for n in model.activation_layers if ".se." in n]
    assert se and all(model.layout(n).kind == "pooled" for n in se)
    assert ".se." not in model.default_reg_layer and model.layout(model.default_reg_layer).kind == "spatial"


# --------------------------------------------------------------------------- input size


def test_input_size_follows_the_model(vit, chelsea):
    from torchvision.models import inception_v3

    with pytest.raises(ValueError, match=r"only accepts 64×64.*input_size=48"):
        fw.start_run(vit, chelsea, 0, input_size=48, **RUN)
    assert fw.start_run(vit, chelsea, 0, preset="preview", **RUN).config.input_size == 64
    cnn = _timm_cnn()()
    assert cnn.accepts_any_size
    assert fw.start_run(cnn, chelsea, 0, preset="preview", **RUN).config.input_size == 48  # 0.7 × 64, to 8 px
    assert fw.start_run(cnn, chelsea, 0, preset="paper", **RUN).config.input_size == 64
    assert fw.start_run(cnn, chelsea, 0, input_size=40, **RUN).config.input_size == 40
    with pytest.raises(ValueError, match="fixed input size of 64"):
        Model(vit.module, input_size=224)
    raw = Model(inception_v3(weights=None, aux_logits=False, init_weights=False))
    assert raw.input_size == 299 and raw.accepts_any_size


# --------------------------------------------------------------------------- half precision


def test_half_precision_runs_without_autocast(chelsea):
    model = _timm_cnn(torch.float16)()
    run = fw.start_run(model, chelsea, 1, **RUN)
    assert run.autocast is False and model.dtype == torch.float16
    with torch.no_grad():
        feats = model.features(torch.rand(1, 3, 64, 64), [model.default_reg_layer])  # float32 input, cast
    assert feats[model.default_reg_layer].dtype == torch.float16
    assert {p.dtype for p in model.module.parameters()} == {torch.float16}


# --------------------------------------------------------------------------- outputs and registry


class _Wrapped(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        logits = self.fc(self.act(self.conv(x)).mean((2, 3)))
        if self.kind == "tuple":
            return logits, torch.zeros(1)
        return {"logits": logits, "aux": torch.zeros(1)}


@pytest.mark.parametrize("kind", ["tuple", "dict"])
def test_tuple_and_dict_outputs(kind, chelsea):
    model = fw.load_model(_Wrapped(kind), input_size=32, name=f"{kind} model")
    assert model.name == f"{kind} model" and model.num_classes == 5
    assert len(model.predict(chelsea, k=2)) == 2
    assert gradcam(model, model.to_input(chelsea), 1).abs().amax() > 0


def test_registry_knows_common_names():
    assert {
        "resnet50",
        "vit_b_16",
        "convnext_tiny",
        "swin_t",
        "inception_v3",
        "deit_tiny_patch16_224",
        "vit_small_patch16_224",
    } <= set(fw.available_models())
    deit = fw.load_model("deit_tiny_patch16_224", pretrained=False)
    assert deit.name == "deit_tiny_patch16_224 (random weights)"
    assert deit.input_size == 224 and not deit.accepts_any_size
    tv = fw.load_model("torchvision/inception_v3", pretrained=False)
    assert tv.input_size == 299 and tv.labels[0] == "tench"
    with pytest.raises(ValueError, match="not a timm model"):
        fw.load_model("timm/no_such_net", pretrained=False)


def test_timm_weights_come_from_the_cache_only(tmp_path, monkeypatch):
    import timm
    from safetensors.torch import save_file

    from faccent_widget import zoo

    monkeypatch.setattr(zoo, "_hf_cache_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch"))
    with pytest.raises(fw.WeightsUnavailableError, match="pretrained=False"):
        fw.load_model("resnet10t")
    # a Hugging Face hub cache entry, as huggingface_hub lays it out
    repo = tmp_path / "models--timm--resnet10t.c3_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    torch.manual_seed(1)
    reference = timm.create_model("resnet10t")
    save_file(reference.state_dict(), str(repo / "snapshots" / "abc123" / "model.safetensors"))
    loaded = fw.load_model("resnet10t")
    assert loaded.name == "resnet10t" and loaded.input_size == 176
    torch.testing.assert_close(loaded.module.state_dict()["fc.weight"], reference.state_dict()["fc.weight"])


def test_uninitialised_lazy_modules_get_one_clear_line_and_are_left_alone(chelsea):
    """A model with nn.LazyLinear / nn.LazyConv2d that never ran is refused up front, naming the lazy
    modules and what to do (torch's own error came from deep inside the first traced pass); the model is
    not touched, and after the user's own forward pass it works."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.LazyConv2d(8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.LazyLinear(10)
    )
    message = r"^the model has uninitialised lazy modules \('0': LazyConv2d, '4': LazyLinear\); run one forward pass"
    with pytest.raises(ValueError, match=message):
        Model(net, input_size=64)
    for call in (lambda: fw.accentuate(net, chelsea, 3, **RUN), lambda: FaccentWidget(net, chelsea)):
        with pytest.raises(ValueError, match="uninitialised lazy modules"):
            call()
    assert isinstance(net[4], nn.LazyLinear) and net[4].has_uninitialized_params()  # still as the user left it
    assert net.training and not any(m._forward_hooks for m in net.modules())
    net(torch.rand(1, 3, 64, 64))  # the user's first forward materialises the weights
    model = Model(net, input_size=64, labels=[f"class {i}" for i in range(10)])
    assert model.num_classes == 10 and len(model.predict(chelsea, k=3)) == 3
    assert fw.accentuate(model, chelsea, 3, **RUN).image.shape[0] == 3
