"""Reliability: bad input through the public API and the widget handlers, odd models, and the fixes of
the hardening issue (saturated pixels, non-finite and wrong-typed settings, small or mislabelled
models, thin images, widget state after errors, bounded caches, the smaller ones).

The table ``BAD_INPUTS`` runs each bad input once and checks the error type, the message, and that
the user's model is exactly as it was (hooks, ``training`` flags, ``requires_grad``, parameter and
buffer values, global hooks). Widget cases drive the widget without a kernel, as tests/test_widget.py
does: ``w._on_msg`` for custom messages, ``w._handle_msg`` for state updates from the browser.

Everything runs on the real default model and a real sample image with tiny settings.
"""

from __future__ import annotations

import io
import random
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import faccent_widget as fw
from faccent_widget.core import parameterizations as params_mod
from faccent_widget.core.config import SETTING_LIMITS, resolve_config
from faccent_widget.core.objectives import Logit, resolve_objective
from faccent_widget.widget import session as session_mod

FAST = dict(steps=2, n_crops=2, input_size=64, canvas=64, seed=0)
WIDGET_FAST = dict(steps=2, n_crops=2, input_size=64, canvas=64)


# ------------------------------------------------------------------------------------- fixtures


class Recorder:
    """Stands in for ``widget.send`` (custom messages) and ``widget.comm.send`` (state updates)."""

    def __init__(self) -> None:
        self.sent: list[tuple[dict[str, Any], list[bytes]]] = []

    def __call__(self, content: dict[str, Any], buffers: Any = None) -> None:
        self.sent.append((content, [bytes(b) for b in (buffers or [])]))


def _state(module: nn.Module) -> list[Any]:
    """Everything of a user's model that we promise not to change."""
    return [
        [(n, m.training) for n, m in module.named_modules()],
        [(n, p.requires_grad, p.grad is None) for n, p in module.named_parameters()],
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
        [
            len(h)
            for h in (
                nn.modules.module._global_forward_hooks,
                nn.modules.module._global_forward_pre_hooks,
                nn.modules.module._global_backward_hooks,
            )
        ],
    ]


def _values(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


@pytest.fixture(scope="module")
def user_model() -> fw.Model:
    """The default model as a user might hold it: in training mode, with one frozen parameter."""
    m = fw.load_model()
    m.user_module.train()
    next(m.user_module.parameters()).requires_grad_(False)
    return m


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return fw.sample_image("chelsea")


@pytest.fixture(scope="module")
def widget(user_model: fw.Model, image: torch.Tensor) -> tuple[fw.FaccentWidget, Recorder]:
    w = fw.FaccentWidget(user_model, image, reference=[image], **WIDGET_FAST)
    rec = Recorder()
    w.send = rec  # type: ignore[method-assign]
    w._on_msg(w, {"type": "ready"}, [])
    return w, rec


def _tiny_net(classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, classes),
    ).eval()


def _quantized_net() -> fw.Model:
    """A small CNN + Linear head with its Linear layers int8-quantised (``quantize_dynamic``)."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(128, 32),
        nn.ReLU(),
        nn.Linear(32, 5),
    ).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated, not gone
        quantized = torch.ao.quantization.quantize_dynamic(net, {nn.Linear}, dtype=torch.qint8)
    return fw.Model(quantized, labels=list("abcde"))


def _non_square_vit() -> nn.Module:
    """A timm ViT built for 160 × 256 inputs (random weights, one block)."""
    import timm

    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=(160, 256), depth=1).eval()


# ------------------------------------------------------------------------------------- the table

Ctx = dict[str, Any]


def api(target: Any = "tabby", image: Any = None, **settings: Any) -> Callable[[Ctx], Any]:
    """A call of ``fw.accentuate`` on the user's model with tiny settings and one bad piece."""

    def call(ctx: Ctx) -> Any:
        return fw.accentuate(ctx["model"], ctx["image"] if image is None else image, target, **{**FAST, **settings})

    return call


def msg(**content: Any) -> Callable[[Ctx], Any]:
    """A custom message from the browser; the widget must answer with an error message."""

    def call(ctx: Ctx) -> Any:
        w, rec = ctx["widget"]
        before = len(rec.sent)
        w._on_msg(w, content, [])
        replies = [c for c, _ in rec.sent[before:]]
        errors = [c["message"] for c in replies if c.get("type") == "error"]
        assert errors and w.error == errors[-1], replies
        raise WidgetError(w.error)

    return call


def trait(name: str, value: Any) -> Callable[[Ctx], Any]:
    """A trait set from Python; refused values are reverted and reported in ``error``."""

    def call(ctx: Ctx) -> Any:
        w, _ = ctx["widget"]
        old = getattr(w, name)
        setattr(w, name, value)
        assert getattr(w, name) == old, f"{name} kept the refused value {value!r}"
        raise WidgetError(w.error)

    return call


def browser(**state: Any) -> Callable[[Ctx], Any]:
    """A state update from the browser (through the comm); refused values come back to the browser."""

    def call(ctx: Ctx) -> Any:
        w, _ = ctx["widget"]
        old = {k: getattr(w, k) for k in state}
        out: list[dict[str, Any]] = []
        w.comm.send = lambda *a, **k: out.append(k["data"])
        w._handle_msg({"content": {"data": {"method": "update", "state": state, "buffer_paths": []}}, "buffers": []})
        assert {k: getattr(w, k) for k in state} == old
        sent_back = {k: v for d in out if d.get("method") == "update" for k, v in d["state"].items()}
        for k in state:
            assert k in sent_back and sent_back[k] == w.get_state(k)[k], (k, out)  # the kernel's value, back
        raise WidgetError(w.error)

    return call


def make_widget(**kwargs: Any) -> Callable[[Ctx], Any]:
    def call(ctx: Ctx) -> Any:
        return fw.FaccentWidget(ctx["model"], ctx["image"], **{**WIDGET_FAST, **kwargs})

    return call


class WidgetError(Exception):
    """The error a widget showed (in ``error`` and/or as an error message), raised to compare it."""


def _pil_mode_i() -> Image.Image:
    return Image.fromarray(np.full((8, 8), 70_000, np.int32))


def _script(ctx: Ctx) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated, not gone
        scripted = torch.jit.script(_tiny_net())
    return fw.accentuate(scripted, ctx["image"], 0, **FAST)


BAD_INPUTS: list[tuple[str, Callable[[Ctx], Any], type[BaseException], str]] = [
    # ---- λ and the float settings: non-finite, negative, wrong type
    ("lam=nan", api(lam=float("nan")), ValueError, r"λ must be a finite number .* got nan"),
    ("lam=inf", api(lam=float("inf")), ValueError, r"λ must be a finite number .* got inf"),
    ("lam=-1", api(lam=-1.0), ValueError, r"λ must be .*\[0, 1e\+06\], got -1"),
    ("lam='1'", api(lam="1"), ValueError, r"λ must be a finite number .* got '1'"),
    ("lam=True", api(lam=True), ValueError, r"got True"),
    ("lam list with nan", api(lam=[1.0, float("nan")]), ValueError, r"got nan"),
    ("lr=inf", api(lr=float("inf")), ValueError, r"lr must be a finite number in \(0, 100\], got inf"),
    ("lr=0", api(lr=0.0), ValueError, r"lr must be a finite number in \(0, 100\], got 0"),
    ("lr='fast'", api(lr="fast"), TypeError, r"lr must be a finite number .* got str 'fast'"),
    ("noise=nan", api(noise=float("nan")), ValueError, r"noise must be a finite number in \[0, 10\], got nan"),
    ("noise=inf", api(noise=float("inf")), ValueError, r"noise must be a finite number .* got inf"),
    ("noise=-0.1", api(noise=-0.1), ValueError, r"noise must be .* got -0.1"),
    ("crop_range nan", api(crop_range=(0.1, float("nan"))), ValueError, r"crop_range\[1\] must be a finite number"),
    ("crop_range=0.5", api(crop_range=0.5), TypeError, r"crop_range must be a \(min, max\) pair"),
    ("crop_range=(0, .5)", api(crop_range=(0.0, 0.5)), ValueError, r"crop_range\[0\] must be .* \(0, 1\], got 0"),
    ("crop_range reversed", api(crop_range=(0.9, 0.5)), ValueError, r"0 < min <= max <= 1"),
    # ---- the integer settings: floats, bools, strings, out of range
    ("steps=0", api(steps=0), ValueError, r"steps must be an int in \[1, 10000\], got 0"),
    ("steps=2.0", api(steps=2.0), TypeError, r"steps must be an int .* got float 2.0"),
    ("steps=True", api(steps=True), TypeError, r"steps must be an int .* got the bool True"),
    ("steps=10**6", api(steps=10**6), ValueError, r"steps must be an int in \[1, 10000\], got 1000000"),
    ("n_crops=2.0", api(n_crops=2.0), TypeError, r"n_crops must be an int .* got float 2.0"),
    ("input_size=96.5", api(input_size=96.5), TypeError, r"input_size must be an int .* got float 96.5"),
    ("input_size='96'", api(input_size="96"), TypeError, r"input_size must be an int .* got str '96'"),
    ("canvas=96.0", api(canvas=96.0), TypeError, r"canvas must be an int .* got float 96.0"),
    ("canvas=8", api(canvas=8), ValueError, r"canvas must be an int in \[16, 4096\], got 8"),
    ("snapshot_every=0", api(snapshot_every=0), ValueError, r"snapshot_every must be an int .* got 0"),
    ("seed='abc'", api(seed="abc"), TypeError, r"seed must be an int in \[0, 2\*\*63 - 1\], got str 'abc'"),
    (
        "seed=2**70",
        api(seed=2**70),
        ValueError,
        r"seed must be an int in \[0, 2\*\*63 - 1\], got 1180591620717411303424",
    ),
    ("seed=1.2", api(seed=1.2), TypeError, r"seed must be an int .* got float 1.2"),
    ("seed=-1", api(seed=-1), ValueError, r"seed must be an int .* got -1"),
    # ---- the other settings
    ("balance='false'", api(balance="false"), TypeError, r"balance must be True or False, got str 'false'"),
    (
        "autocast='yes'",
        api(autocast="yes"),
        ValueError,
        r"autocast must be True, False, 'fp16' or 'bf16' \(or None\), got str 'yes'",
    ),
    ("param='wavelet'", api(param="wavelet"), ValueError, r"unknown parameterization 'wavelet'; choose one of fourier"),
    ("param=1", api(param=1), TypeError, r"param must be a string"),
    ("preset='turbo'", api(preset="turbo"), ValueError, r"unknown preset 'turbo'; choose one of preview, gpu, paper"),
    ("reg_layer typo", api(reg_layer="block.2"), fw.LayerNotFoundError, r"unknown layer 'block.2'.*blocks"),
    ("reg_layer=3", api(reg_layer=3), TypeError, r"reg_layer must be a layer name"),
    ("unknown setting", api(fast=True), TypeError, r"unknown engine setting\(s\) 'fast'; known: steps"),
    ("config='paper'", api(config="paper"), TypeError, r"config must be an EngineConfig"),
    # ---- targets
    ("class 1000", api(target=1000), IndexError, r"class index 1000 is out of range .* 0…999"),
    ("class -1", api(target=-1), IndexError, r"class index -1 is out of range"),
    ("label typo", api(target="tabbby"), ValueError, r"no class labelled 'tabbby'.*close matches: 'tabby'"),
    ("target=True", api(target=True), TypeError, r"a target cannot be a bool"),
    ("target=3.0", api(target=3.0), TypeError, r"a target must be a class index, a class label, 'layer:unit'"),
    ("float tensor target", api(target=torch.tensor(3.5)), TypeError, r"a tensor target must be one integer"),
    ("2-element tensor", api(target=torch.tensor([1, 2])), TypeError, r"must be one integer .* shape \(2,\)"),
    ("target=None", api(target=None), TypeError, r"a target must be .* got NoneType"),
    ("no targets", api(target=[]), ValueError, r"target list is empty"),
    ("channel -1", api(target="blocks.4:-1"), IndexError, r"channel -1 .* negative"),
    ("channel 10**6", api(target="blocks.4:1000000"), IndexError, r"channel 1000000 is out of range .* 0…111"),
    ("channel() 10**6", api(target=fw.channel("blocks.4", 10**6)), IndexError, r"channel 1000000 is out of range"),
    ("unknown layer", api(target="nolayer:3"), fw.LayerNotFoundError, r"unknown layer 'nolayer'"),
    ("direction length", api(target=fw.direction("blocks.4", torch.ones(5))), ValueError, r"5 values .* 112 channels"),
    ("batch mismatch", api(target=["tabby", "lynx"], lam=[0.0, 1.0, 2.0]), ValueError, r"cannot batch 2 targets"),
    # ---- images
    ("URL", api(image="https://example.com/cat.jpg"), ValueError, r"looks like a URL; URLs are not fetched"),
    ("HWC tensor", api(image=torch.rand(40, 50, 3)), ValueError, r"channels-first .* t.permute\(2, 0, 1\)"),
    ("missing file", api(image="no/such/file.png"), FileNotFoundError, r"image file not found"),
    ("0..255 floats", api(image=np.full((20, 20, 3), 200.0)), ValueError, r"\[0, 1\].*divide by 255"),
    ("NaN pixels", api(image=np.full((20, 20, 3), np.nan, np.float32)), ValueError, r"NaN or infinite"),
    ("no images", api(image=[]), ValueError, r"image list is empty"),
    ("PIL 'I' beyond 16 bit", api(image=_pil_mode_i()), ValueError, r"mode 'I' .* 16-bit .* \[70000, 70000\]"),
    ("size=32.0", lambda ctx: fw.load_image(ctx["image"], size=32.0), TypeError, r"size must be a positive int"),
    ("size=0", lambda ctx: fw.load_image(ctx["image"], size=0), ValueError, r"size must be a positive int"),
    ("size=True", lambda ctx: fw.load_image(ctx["image"], size=True), TypeError, r"size must be a positive int"),
    # ---- models
    ("TorchScript", _script, TypeError, r"TorchScript module; .* Pass the original \(eager\) nn.Module"),
    (
        "labels too short",
        lambda ctx: fw.accentuate(fw.Model(ctx["model"].user_module, labels=["a", "b"]), ctx["image"], 0, **FAST),
        ValueError,
        r"2 labels were given but .* outputs 1000 logits",
    ),
    (
        "labels='abc'",
        lambda ctx: fw.Model(ctx["model"].user_module, labels="abc"),
        TypeError,
        r"labels must be a list of strings",
    ),
    (
        "not a model",
        lambda ctx: fw.accentuate("resnet", ctx["image"], 0, **FAST),
        TypeError,
        r"expected an nn.Module or faccent_widget.Model, got str",
    ),
    ("channel(unit=2.5)", lambda ctx: fw.channel("blocks.4", 2.5), TypeError, r"a channel \(unit\) must be an int"),
    # ---- widget: messages from the browser
    ("msg class 5000", msg(type="set_target", index=5000), WidgetError, r"class index 5000 is out of range"),
    ("msg index '7'", msg(type="set_target", index="7"), WidgetError, r"index must be an int .* got str '7'"),
    ("msg index 3.5", msg(type="set_target", index=3.5), WidgetError, r"index must be an int .* got float 3.5"),
    ("msg no index", msg(type="set_target"), WidgetError, r"index must be an int .* got NoneType None"),
    (
        "msg channel -1",
        msg(type="set_latent", layer="blocks.4", channel=-1),
        WidgetError,
        r"channel must be an int >= 0, got -1",
    ),
    (
        "msg channel 10**6",
        msg(type="set_latent", layer="blocks.4", channel=10**6),
        WidgetError,
        r"channel 1000000 is out of range for blocks.4",
    ),
    ("msg layer None", msg(type="set_latent", layer=None, channel=0), WidgetError, r"layer must be a layer name"),
    ("msg unknown layer", msg(type="set_latent", layer="no.such", channel=0), WidgetError, r"unknown layer 'no.such'"),
    ("msg budget 'fast'", msg(type="chunk", budget_ms="fast"), WidgetError, r"budget_ms must be a finite number"),
    ("msg query 5", msg(type="search", query=5), WidgetError, r"query must be a string, got 5"),
    ("msg gallery mode", msg(type="gallery", mode="bogus"), WidgetError, r"unknown gallery mode 'bogus'"),
    ("msg gallery mode 3", msg(type="gallery", mode=3), WidgetError, r"mode must be 'topk'"),
    ("msg unknown type", msg(type="bogus"), WidgetError, r"unknown message type 'bogus'"),
    # ---- widget: traits set from Python
    ("trait lam=nan", trait("lam", float("nan")), WidgetError, r"λ must be a finite number .* got nan"),
    ("trait lam=inf", trait("lam", float("inf")), WidgetError, r"got inf"),
    ("trait steps=0", trait("steps", 0), WidgetError, r"steps must be an int in \[1, 10000\], got 0"),
    ("trait steps=True", trait("steps", True), WidgetError, r"steps must be an int .* bool True"),
    ("trait p1=99", trait("p1", 99.0), WidgetError, r"p1 < p2"),
    ("trait p2=nan", trait("p2", float("nan")), WidgetError, r"p2 must be a finite number in \[0, 100\]"),
    ("trait lam_min=0", trait("lam_min", 0.0), WidgetError, r"lam_min must be a finite number in \(0, 1e\+06\]"),
    ("trait lam_max=-1", trait("lam_max", -1.0), WidgetError, r"lam_max must be a finite number"),
    ("trait lam_max<lam_min", trait("lam_max", 1e-3), WidgetError, r"lam_min < lam_max"),
    ("trait lam_recommended=nan", trait("lam_recommended", float("nan")), WidgetError, r"λ must be a finite number"),
    ("trait reg_layer", trait("reg_layer", "no.such"), WidgetError, r"unknown regularisation layer 'no.such'"),
    ("trait view", trait("view", "sideways"), WidgetError, r"view must be one of masked"),
    (
        "trait target 5000",
        trait("target", {"kind": "class", "index": 5000}),
        WidgetError,
        r"refused target .* out of range",
    ),
    # ---- widget: state from the browser
    ("browser lam=null", browser(lam=None), WidgetError, r"refused lam=None.*expected a float"),
    ("browser steps=3.5", browser(steps=3.5), WidgetError, r"refused steps=3.5.*expected an int"),
    ("browser p1='x'", browser(p1="x"), WidgetError, r"refused p1='x'"),
    (
        "browser target junk",
        browser(target={"kind": "latent", "layer": "blocks.4", "channel": -3}),
        WidgetError,
        r"refused target .* target channel must be an int >= 0, got -3",
    ),
    ("browser top", browser(top=[]), WidgetError, r"top is set by the kernel, not by the browser"),
    ("browser running", browser(running=True), WidgetError, r"running is set by the kernel"),
    # ---- widget: construction and run
    ("widget steps=0", make_widget(steps=0), ValueError, r"steps must be an int in \[1, 10000\], got 0"),
    ("widget lam=inf", make_widget(lam=float("inf")), ValueError, r"λ must be a finite number .* got inf"),
    ("widget lam=-1", make_widget(lam=-1), ValueError, r"got -1"),
    ("widget unknown override", make_widget(speed=3), TypeError, r"unknown engine setting\(s\) 'speed'"),
    ("widget reference='chelsea'", make_widget(reference="chelsea"), TypeError, r"reference must be a list of images"),
    ("widget reference=[]", make_widget(reference=[]), ValueError, r"reference set .* is empty"),
    ("widget true_label 5000", make_widget(true_label=5000), IndexError, r"class index 5000 is out of range"),
    ("widget run(steps=2.0)", lambda ctx: ctx["widget"][0].run(steps=2.0), TypeError, r"steps must be an int"),
    # ---- triage (issue 25: reliability round 3)
    ("triage limit='3'", lambda ctx: _triage(ctx, limit="3"), TypeError, r"limit must be .* got str '3'"),
    ("triage limit=0", lambda ctx: _triage(ctx, limit=0), ValueError, r"limit must be a positive int or None, got 0"),
    ("triage on_error", lambda ctx: _triage(ctx, on_error="ignore"), ValueError, r"on_error must be one of 'skip'"),
    ("triage device='banana'", lambda ctx: _triage(ctx, device="banana"), ValueError, r"unknown device 'banana'"),
    ("triage repeated label", lambda ctx: _triage(ctx, repeat=True), ValueError, r"'tabby' matches 2 model classes"),
    ("triage damaged triage.json", lambda ctx: _triage_folder(ctx, "manifest"), ValueError, r"triage.json is damaged"),
    (
        "triage truncated image, strict",
        lambda ctx: _triage_folder(ctx, "truncated"),
        ValueError,
        r"cannot read image 'tabby/cut.jpg': OSError: image file is truncated",
    ),
    # ---- issue 25: int8 dynamic-quantised models (no gradients through their layers; fp32 activations only)
    (
        "quantised model, class target",
        lambda ctx: fw.accentuate(_quantized_net(), ctx["image"], 2, **FAST),
        ValueError,
        r"int8-quantised layers \('4', '6'\); PyTorch takes no gradients .*\(before quantize_dynamic\)",
    ),
    (
        "quantised model, autocast='bf16'",
        lambda ctx: fw.accentuate(_quantized_net(), ctx["image"], "0:3", reg_layer="1", autocast="bf16", **FAST),
        ValueError,
        r"int8-quantised layers, which take float32 activations only; autocast='bf16'",
    ),
    # ---- issue 25: a fixed-size model with a non-square input runs at its (h, w); another size names it
    (
        "non-square fixed-size model, input_size=224",
        lambda ctx: fw.Model(_non_square_vit(), input_size=224),
        ValueError,
        r"fixed input size of 160×256 \(timm patch_embed.img_size\); not input_size=224: .*input_size=\(160, 256\)",
    ),
    (
        "non-square fixed-size model, run input_size=64",
        lambda ctx: fw.accentuate(_non_square_vit(), ctx["image"], 0, **FAST),
        ValueError,
        r"only accepts 160×256 inputs \(a fixed input size, height×width\), but input_size=64 was asked",
    ),
]


@pytest.mark.parametrize("case, call, exc, message", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input(case, call, exc, message, user_model, image, widget):
    net = user_model.user_module
    state, values = _state(net), _values(net)
    w, _ = widget
    before = {
        k: getattr(w, k)
        for k in (
            "target",
            "lam",
            "steps",
            "p1",
            "p2",
            "reg_layer",
            "view",
            "lam_min",
            "lam_max",
            "lam_recommended",
            "top",
        )
    }
    with pytest.raises(exc, match=message):
        call({"model": user_model, "image": image, "widget": widget})
    assert _state(net) == state, case
    after = _values(net)
    assert all(torch.equal(after[k], values[k]) for k in values), case
    assert {k: getattr(w, k) for k in before} == before and not w.running, case  # nothing half-applied
    w.error = ""


def test_the_table_is_large_enough():
    assert len(BAD_INPUTS) >= 40 and len({c[0] for c in BAD_INPUTS}) == len(BAD_INPUTS)


def test_the_widget_stays_usable_after_the_table(widget):
    """Runs after the table: every refused input left the widget working."""
    w, _ = widget
    result = w.run(steps=2)
    assert result.image.shape[0] == 3 and not w.running and w.error == "" and w.status.startswith("done")


# ------------------------------------------------------------------------------------- 1. saturated pixels


@pytest.mark.parametrize("name", sorted(params_mod.PARAMETERIZATIONS))
def test_saturated_pixels_get_a_usable_gradient_and_the_seed_stays_exact(name, image):
    """A black or white pixel's gradient is within 5× of a mid-grey pixel's (it was 10⁻⁴×), and the
    image at step 0 is still the seed (within 1e-3; in fact float round-off)."""
    seed = fw.load_image(image, size=(40, 60))[None].clone()
    seed[..., :10, :10] = 0.0
    seed[..., -10:, -10:] = 1.0
    seed[..., :10, -10:] = 0.5
    param = params_mod.PARAMETERIZATIONS[name](seed)
    x = param.image()
    assert float((x.detach() - seed).abs().max()) <= 1e-3
    if name == "pixel":  # pixel-local gradients: compare a saturated pixel with a grey one directly
        x.sum().backward()
        g = param.params[0].grad.abs().sum(1)[0]
        black, white, grey = float(g[:10, :10].mean()), float(g[-10:, -10:].mean()), float(g[:10, -10:].mean())
        assert black > grey / 5 and white > grey / 5, (black, white, grey)


def test_a_black_image_changes(user_model):
    """The issue's example, smaller: a black seed used to change by at most 2e-5."""
    black = np.zeros((64, 64, 3), np.uint8)
    r = fw.accentuate(user_model, black, "tabby", steps=6, n_crops=2, input_size=64, canvas=64, lam=0.0, seed=0)
    assert float(r.seed.abs().max()) == 0.0
    assert float((r.image - r.seed).abs().max()) > 0.02


# ------------------------------------------------------------------------------------- 2./3. settings


def test_documented_conversions_are_the_only_ones(user_model, image):
    """numpy/torch integer scalars are ints, any finite real is a float, a list crop_range a tuple."""
    cfg = resolve_config(
        "preview",
        "cpu",
        steps=np.int64(3),
        n_crops=torch.tensor(2),
        seed=np.uint8(7),
        lr=1,
        noise=np.float32(0.5),
        crop_range=[0.5, 1],
        balance=np.bool_(False),
    )
    assert (cfg.steps, cfg.n_crops, cfg.seed, cfg.lr, cfg.noise, cfg.crop_range, cfg.balance) == (
        3,
        2,
        7,
        1.0,
        0.5,
        (0.5, 1.0),
        False,
    )
    assert [type(v) for v in (cfg.steps, cfg.n_crops, cfg.seed, cfg.lr, cfg.noise, cfg.balance)] == [
        int,
        int,
        int,
        float,
        float,
        bool,
    ]
    assert SETTING_LIMITS["steps"] == (1, 10_000)


def test_integer_scalar_targets_are_class_indices(user_model, image):
    probs = user_model.probabilities(image)
    for target in (probs.argmax(), np.int64(281), np.uint16(281), torch.tensor([281])[0]):
        obj = resolve_objective(user_model, target)
        assert isinstance(obj, Logit) and obj.index == int(target)
    r = fw.accentuate(user_model, image, probs.argmax(), **FAST)
    assert r.objective.index == int(probs.argmax())


def test_a_label_with_a_colon_is_a_label_first(user_model):
    labels = list(user_model.labels)
    labels[7] = "blocks.4:3"  # looks like layer:unit, and that channel exists
    relabelled = fw.Model(user_model.user_module, labels=labels)
    obj = resolve_objective(relabelled, "blocks.4:3")
    assert isinstance(obj, Logit) and obj.index == 7
    assert resolve_objective(relabelled, "blocks.4:5").description == "blocks.4:5"  # no such label: a channel
    assert resolve_objective(user_model, "blocks.4:3").description == "blocks.4:3"


def test_cli_user_errors_are_one_line_and_exit_2(tmp_path, capsys):
    from faccent_widget.cli import main

    for argv, text in (
        (["--lam", "nan"], "λ must be a finite number"),
        (["--lam", "inf"], "λ must be a finite number"),
        (["--out", str(tmp_path / "missing" / "p.png")], "does not exist"),
        (["--out", str(tmp_path / "p.txt")], "unknown image extension '.txt'"),
        (["--out", str(tmp_path)], "is a folder"),
        (["https://example.com/cat.jpg"], "URLs are not fetched"),
        (["no_such_image.png"], "image file not found"),
        (["--target", "tabbby", "--steps", "1"], "no class labelled 'tabbby'"),
        (["--target", "blocks.4:999", "--steps", "1"], "channel 999 is out of range"),
    ):
        assert main([*argv, "--out", str(tmp_path / "ok.png")] if "--out" not in argv else argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err and text in err, (argv, err)
    assert not (tmp_path / "ok.png").exists()


# ------------------------------------------------------------------------------------- 4. small and mislabelled models


def test_a_three_class_model_works_in_the_widget(image):
    net = _tiny_net(3)
    w = fw.FaccentWidget(net, image, labels=["cat", "dog", "cow"], reference=[image], **WIDGET_FAST)
    w.send = Recorder()  # type: ignore[method-assign]
    assert [t["index"] for t in w.top] == w._session.probs.argsort(descending=True).tolist()
    assert len(w.top) == len(w.inhibited) == 3
    w._on_msg(w, {"type": "ready"}, [])
    w.start_gallery("topk")
    while w.running:
        w.advance(1.0)
    assert len(w.gallery) == 3 and w.error == ""


def test_label_count_is_checked_against_the_logits(image):
    net = _tiny_net(10)
    with pytest.raises(ValueError, match="11 labels were given but Sequential outputs 10 logits"):
        fw.FaccentWidget(net, image, labels=[f"c{i}" for i in range(11)], **WIDGET_FAST)
    short = fw.Model(net, labels=[f"c{i}" for i in range(5)])
    with pytest.raises(ValueError, match="5 labels were given but Sequential outputs 10 logits"):
        fw.accentuate(short, image, 8, **FAST)


# ------------------------------------------------------------------------------------- 5. thin images


def test_thin_images_have_a_bounded_canvas(user_model):
    thin = torch.rand(3, 10, 1000)
    run = fw.start_run(user_model, thin, "tabby", steps=1, n_crops=1, input_size=32, canvas=256, seed=0)
    assert tuple(run.seeds.shape[-2:]) == (10, 1024)  # longer side 4 × canvas; it was 256 × 25600
    assert fw.images.canvas_size((300, 450), 96) == (96, 144)  # ordinary images are unchanged
    assert fw.images.canvas_size((2000, 100), 256) == (1024, 51)
    tall = fw.FaccentWidget(user_model, torch.rand(3, 3000, 20), reference=[torch.rand(3, 50, 50)], **WIDGET_FAST)
    assert tuple(tall._session.display_seed.shape[-2:]) == (1024, 7)  # the tile shipped to the browser


# ------------------------------------------------------------------------------------- 6. widget state after errors


def test_a_refused_latent_target_is_not_kept(widget):
    w, rec = widget
    target, objective = dict(w.target), w._objective
    for channel in (-1, 10**6):
        w._on_msg(w, {"type": "set_latent", "layer": "blocks.4", "channel": channel}, [])
        assert w.error and w.target == target and w._objective is objective
    w.error = ""
    w._on_msg(w, {"type": "start"}, [])
    assert w.running and w.error == ""
    w._on_msg(w, {"type": "chunk", "budget_ms": 1}, [])
    assert rec.sent[-1][0]["type"] == "frame"
    w.stop()


class _FailsOnBatches(nn.Module):
    """A real model that works on one image (and on the adapter's 2-image layout trace) but raises on a
    larger batch, as a buggy forward might."""

    def __init__(self) -> None:
        super().__init__()
        self.net = _tiny_net(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 2:
            raise ValueError(f"this model takes one image at a time, got {x.shape[0]}")
        return self.net(x)


def test_run_after_an_exception_leaves_the_widget_stopped_with_a_clear_status(image):
    settings = {**WIDGET_FAST, "n_crops": 3}  # the run's batches (3 crops) are larger than the model takes
    w = fw.FaccentWidget(_FailsOnBatches(), image, labels=list("abcd"), reference=[image], **settings)
    w.send = Recorder()  # type: ignore[method-assign]
    with pytest.raises(ValueError, match="one image at a time"):
        w.run()
    assert w.running is False
    # the error is said once, in plain words (the error box), and the status says the run stopped
    assert w.status.startswith("stopped at step 0") and w.error.startswith("this model takes one image at a time")
    w._on_msg(w, {"type": "chunk", "budget_ms": 1}, [])
    assert w.send.sent[-1][0] == {"type": "frame", "step": 0, "steps": 2, "done": True}


def test_valid_targets_from_the_browser_are_applied(widget, user_model):
    w, _ = widget
    tabby = user_model.class_index("tabby")
    out: list[dict[str, Any]] = []
    w.comm.send = lambda *a, **k: out.append(k["data"])
    w._handle_msg(
        {
            "content": {
                "data": {"method": "update", "state": {"target": {"kind": "class", "index": tabby}}, "buffer_paths": []}
            },
            "buffers": [],
        }
    )
    assert w.target == {"kind": "class", "index": tabby, "label": "tabby"} and w.error == ""
    assert w._objective.index == tabby
    w.set_target(w.top[0]["index"])


def test_lambda_slider_bounds_accept_good_values(widget):
    w, _ = widget
    w.lam_min, w.lam_max, w.lam_recommended = 1e-3, 1e3, 2.0
    assert (w.lam_min, w.lam_max, w.lam_recommended, w.error) == (1e-3, 1e3, 2.0, "")
    w.lam_recommended = None
    w.lam_min, w.lam_max = 1e-2, 1e2


# ------------------------------------------------------------------------------------- 7. bounded cache


def test_attribution_maps_are_an_lru_cache(widget, monkeypatch):
    w, _ = widget
    session = w._session
    monkeypatch.setattr(session_mod, "MAPS_CACHE_SIZE", 2)
    session._maps.clear()
    a, b, c = (resolve_objective(w._model, t) for t in (281, 282, 285))
    for obj in (a, b, a, c):  # a is used again before c arrives: b is the least recently used
        session.maps(obj)
    assert list(session._maps) == [a.description, c.description]
    assert session_mod.MAPS_CACHE_SIZE == 2 and len(session._maps) <= 2


# ------------------------------------------------------------------------------------- 9. the smaller ones


def test_gradcam_takes_a_bare_module(user_model, image):
    maps = fw.gradcam(user_model.user_module, image, "tabby")
    assert maps.shape == (1, 224, 224) and torch.isfinite(maps).all()


class _WrapsErrors(nn.Module):
    """A user forward that wraps every exception (as some frameworks do)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = _tiny_net(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        try:
            if x.shape[-1] == 13:
                raise ValueError("13 pixels wide is not supported")
            return self.net(x)
        except Exception as exc:
            raise RuntimeError(f"wrapped: {exc!r}") from exc


def test_a_forward_that_wraps_exceptions_keeps_working(image):
    m = fw.Model(_WrapsErrors(), labels=["a", "b", "c"])
    feats = m.features(torch.rand(2, 3, 32, 32), ["net.1"])
    assert feats["net.1"].shape == (2, 8, 32, 32)
    r = fw.accentuate(m, image, "net.3:2", **FAST)
    assert r.target == "net.3:2"
    with pytest.raises(RuntimeError, match="wrapped: ValueError.*13 pixels"):  # the user's own errors surface
        m.features(torch.rand(1, 3, 13, 13), ["net.1"])


def test_pil_mode_i_is_scaled_by_the_mode_range_not_by_its_content():
    dark = fw.load_image(Image.fromarray(np.full((4, 4), 200, np.int32)))
    mixed = np.full((4, 4), 200, np.int32)
    mixed[0, 0] = 60_000
    both = fw.load_image(Image.fromarray(mixed))
    assert float(dark[0, 0, 0]) == pytest.approx(200 / 65535)
    assert float(both[0, 1, 1]) == pytest.approx(200 / 65535)  # the same pixel value, the same brightness
    sixteen = io.BytesIO()
    Image.fromarray(np.full((4, 4), 30_000, np.uint16)).save(sixteen, format="PNG")
    assert float(fw.load_image(Image.open(sixteen))[0, 0, 0]) == pytest.approx(30_000 / 65535)


def test_seed_none_leaves_pythons_random_state_alone(user_model, image):
    random.seed(123)
    state = random.getstate()
    run = fw.start_run(user_model, image, "tabby", steps=1, n_crops=1, input_size=32, canvas=32)
    assert random.getstate() == state
    assert 0 <= run.rng_seed < 2**31 and run.config.seed == run.rng_seed


# ------------------------------------------------------------------------------------- triage (issue 25)


def _triage(ctx: Ctx, repeat: bool = False, **kwargs: Any) -> Any:
    model = ctx["model"]
    if repeat:  # a model that has "tabby" twice
        labels = list(model.labels)
        labels[282] = labels[281]
        model = fw.Model(model.user_module, labels=labels, mean=model.mean, std=model.std, name="repeated")
    return fw.triage(model, [(ctx["image"], "tabby")], **{**FAST, **kwargs})


def _triage_folder(ctx: Ctx, case: str) -> Any:
    import shutil
    import tempfile
    from pathlib import Path

    root = Path(tempfile.mkdtemp(prefix="faccent-reliability-"))
    try:
        (root / "data" / "tabby").mkdir(parents=True)
        if case == "manifest":
            fw.to_pil(ctx["image"]).save(root / "data" / "tabby" / "a.png")
            (root / "out").mkdir()
            (root / "out" / "triage.json").write_text("{not json")
            return fw.triage(ctx["model"], root / "data", out=root / "out", **FAST)
        buf = io.BytesIO()
        fw.to_pil(ctx["image"]).save(buf, format="JPEG")
        (root / "data" / "tabby" / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
        return fw.triage(ctx["model"], root / "data", out=root / "out", on_error="raise", **FAST)
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ------------------------------------------------------------------------------------- issue 25, item 11


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode], ids=["no_grad", "inference_mode"])
def test_calls_inside_no_grad_and_inference_mode_work(mode, user_model):
    """Evaluation code is often wrapped in ``no_grad``/``inference_mode``: the library turns autograd on
    where it takes gradients (the run's steps, Grad-CAM, λ calibration), seeds made there included."""
    net = user_model.user_module
    state, values = _state(net), _values(net)
    with mode():
        img = fw.sample_image("chelsea")  # an inference tensor under inference_mode
        r = fw.accentuate(user_model, img, "tabby", **FAST)
        states = list(fw.iter_accentuate(user_model, img, "tabby", **FAST))
        maps = fw.gradcam(user_model, img, "tabby")
        cal = fw.calibrate_lambda(
            user_model, [img], lambdas=[0.0, 1.0, 100.0], steps=1, n_crops=1, input_size=32, canvas=32, seed=0
        )
        assert not torch.is_grad_enabled()  # the caller's mode is back
    assert float((r.image - r.seed).abs().max()) > 0 and states[-1].done
    assert maps.shape == (1, 224, 224) and torch.isfinite(maps).all() and float(maps.max()) > 0
    assert np.isfinite(cal.curve.distances).all()
    assert _state(net) == state and all(torch.equal(v, values[k]) for k, v in _values(net).items())


# ------------------------------------------------------------------------------------- issue 25, item 13


def test_quantised_models_run_in_fp32_where_gradients_exist(image):
    """The auto rule picks fp32 for int8-quantised models (bf16 autocast fed them bf16 and failed); a
    target before the quantised layers accentuates; the policy says why."""
    from faccent_widget.core.device_policy import device_policy

    policy = device_policy("cpu", quantized=True, cpu_bf16=True, cpu_amx=True)
    assert policy.autocast_dtype is None and "int8-quantised" in policy.reason
    assert device_policy("cpu", model_dtype=torch.float64, cpu_bf16=True, cpu_amx=True).autocast_dtype is None
    run = fw.start_run(_quantized_net(), image, "0:3", reg_layer="1", **FAST)
    assert run.policy.precision == "fp32"
    r = run_to_end_result(run)
    assert float((r.image - r.seed).abs().max()) > 0 and np.isfinite(r.history["objective"]).all()


def run_to_end_result(run: Any) -> Any:
    from faccent_widget.accentuate import run_to_end

    return run_to_end(run)[0]


# ------------------------------------------------------------------------------------- issue 25, item 3


def test_panels_are_bounded_for_any_aspect_ratio():
    """Thin images made 206,459 × 278 px strips: each tile now fits height × 4·height, and the height
    itself is capped (PANEL_MAX_HEIGHT)."""
    from faccent_widget.core.compositing import PANEL_MAX_HEIGHT, labelled_strip

    seed = torch.rand(3, 256, 256)
    wide, tall, line = torch.rand(3, 10, 2000), torch.rand(3, 2000, 10), torch.rand(3, 1, 2000)
    strip = labelled_strip([seed, wide, wide, wide], ["seed", "a", "b", "c"], height=256)
    assert strip.size == (256 + 3 * 1024 + 5 * 4, 256 + 8 + 14)  # was 206,459 px wide
    assert labelled_strip([line, tall]).size == (4 + 4 + 4 + 1 + 4, 1 + 8)  # height 1: tiles of at most 4 × 1
    assert labelled_strip([tall, line]).size == (4 + 5 + 4 + 4096 + 4, 1024 + 8)  # height capped at 1024
    huge = labelled_strip([torch.rand(3, 3000, 3000)])
    assert huge.size == (PANEL_MAX_HEIGHT + 8, PANEL_MAX_HEIGHT + 8)
    for bad, text in ((dict(height=PANEL_MAX_HEIGHT + 1), "height must be an int in"), (dict(pad=10**6), "pad")):
        with pytest.raises(ValueError, match=text):
            labelled_strip([seed], **bad)
