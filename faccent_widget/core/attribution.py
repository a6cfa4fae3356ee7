"""Spatial attribution for feature accentuation (section 2.4 of the paper): *where* a feature is.

Three sources of attribution maps, all returned as raw (N, H, W) float32 CPU tensors at the image
resolution, ready for :class:`~faccent_widget.core.masks.CollectiveNormalizer`:

* :func:`gradcam` — Grad-CAM of any target: logits, channels, neurons, directions, or combinations
  (figure 9 of the paper), at spatial, channels-last or token layers, computed by Captum's
  ``LayerGradCam`` (pointed at an identity probe that sees the layer's output as (N, C, h, w));
* :func:`activation_attribution` — the target's own activation map, for channel / neuron / direction
  targets of convolutional layers, which are already spatial (figure 10);
* :func:`gradient_attribution` — the accumulated ``|∂objective/∂image|`` map that the accentuation
  engine records while it runs.

Every function takes a :class:`~faccent_widget.Model` (or a bare ``nn.Module``, wrapped with
:func:`~faccent_widget.core.model.as_model`). The wrapped ``nn.Module`` is never changed: Grad-CAM runs inside
``model.preserved()`` (eval mode, parameters frozen, both restored afterwards); its one hook on the
user's module (on the Grad-CAM layer, through ``core.hooks.hooked_forward``) is removed when each
forward pass returns, also after an exception, and Captum's hooks go only on the probe.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .hooks import ForwardHook, hooked_forward
from .layouts import LayerLayout
from .model import Model, as_model
from .objectives import Objective, Target, resolve_objective

__all__ = [
    "gradcam",
    "activation_attribution",
    "gradient_attribution",
    "attribution_maps",
    "default_gradcam_layer",
    "as_image_batch",
    "describe_target",
    "ATTRIBUTION_SOURCES",
]

#: Names accepted by :func:`attribution_maps` (and ``CollectiveNormalizer.fit_images``).
ATTRIBUTION_SOURCES = ("gradcam", "activation")


# --------------------------------------------------------------------------- inputs


def as_image_batch(model: Model, images: Any) -> torch.Tensor:
    """Turn ``images`` into a (N, 3, H, W) float batch in [0, 1] on the model's device.

    * a (N, 3, H, W) float tensor is used as it is (any H, W; values must lie in [0, 1]);
    * anything else (one image or a list of anything :func:`faccent_widget.load_image` accepts) goes
      through the model view, :meth:`Model.to_input` (resized to the model's input, ``input_hw``).
    """
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        if images.shape[1] != 3 or images.shape[0] == 0:
            raise ValueError(f"expected a (N, 3, H, W) image batch with N ≥ 1, got shape {tuple(images.shape)}")
        if not images.is_floating_point():
            raise TypeError(f"image batches must be float tensors in [0, 1], got dtype {images.dtype}")
        lo, hi = float(images.min()), float(images.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(f"image batches must have values in [0, 1], got [{lo:.3g}, {hi:.3g}]")
        batch = images.detach()
    else:
        batch = model.to_input(images)
    return batch.to(device=model.device, dtype=model.dtype)


# --------------------------------------------------------------------------- layer choice


def _deepest_target_layer(model: Model, objective: Objective) -> str | None:
    """The objective's deepest hidden layer, or None when it reads the logits."""
    if objective.needs_logits or not objective.layers:
        return None
    return model.execution_order(objective.layers)[-1]


def _map_candidates(model: Model, objective: Objective) -> list[str]:
    """Map layers (spatial, channels-last, tokens with a patch grid; in execution order) that produce
    their output no later than the target."""
    layers = list(model.map_layers)
    deepest = _deepest_target_layer(model, objective)
    if deepest is None:
        return layers
    maps = set(layers)
    order = model.execution_order(list(dict.fromkeys(layers + [deepest])))
    return [n for n in order[: order.index(deepest) + 1] if n in maps]


def _transformer_layer(model: Model) -> str | None:
    """The Grad-CAM layer of a transformer's output: for token models with prefix tokens (ViT, DeiT)
    the last block's pre-attention norm — the patch tokens after the last attention never reach a
    class-token head, so Grad-CAM there is zero (pytorch-grad-cam's ViT recipe uses
    ``blocks[-1].norm1``); for models without prefix tokens (Swin) the last block's output, i.e. the
    last stage. None for models without transformer blocks."""
    blocks = model.transformer_blocks
    if not blocks:
        return None
    last = blocks[-1]
    lay = model.layout(last)
    if lay.kind == "tokens" and lay.prefix_tokens > 0:
        return model.attention_input_layer(last)
    return last


def default_gradcam_layer(model: nn.Module | Model, target: Target, hw: tuple[int, int] | None = None) -> str:
    """The layer Grad-CAM uses when none is given.

    Candidates are the map layers (spatial (N, C, h, w), channels-last (N, h, w, C), or tokens with
    a patch grid; never attention internals or pooled vectors) with more than one position, produced
    no later than the target:

    * hidden-layer targets at a map layer: that layer (Grad-CAM there is the channel's activation
      map, scaled);
    * logits (and targets at pooled layers) of a vision transformer: the last block's pre-attention
      norm for models with class/distillation tokens (timm ``blocks[-1].norm1``, torchvision
      ``encoder_layer_N.ln_1``, Hugging Face ``layernorm_before``), the last block / stage output for
      hierarchical ones without (Swin);
    * otherwise (CNNs): the last candidate — the model's last spatial layer for logits (global-pooling
      outputs of size 1×1 are skipped).
    """
    model = as_model(model)
    objective = resolve_objective(model, target)
    hw = hw or model.input_hw
    candidates = [n for n in _map_candidates(model, objective) if model.is_spatial_map(n, hw)]
    deepest = _deepest_target_layer(model, objective)
    if deepest is not None and deepest in candidates:
        return deepest
    preferred = _transformer_layer(model)
    if preferred is not None and preferred in candidates:
        return preferred
    if candidates:
        return candidates[-1]
    where = "" if objective.needs_logits else f" before {objective.description}"
    raise ValueError(
        f"{model.name} has no layer with a spatial map (pixels or patch tokens){where}; Grad-CAM needs one"
    )


def _why_not_a_map(model: Model, layer: str, hw: tuple[int, int]) -> str:
    lay = model.layout(layer)
    if not lay.is_activation:
        return f"it is internal to the model, not an activation of the image: {lay.describe()}"
    if lay.kind == "tokens":
        return f"its {lay.describe()} form no patch grid"
    shape = model.output_shape(layer, hw)
    if len(shape) == 4:
        h, w = (shape[-2], shape[-1]) if lay.kind in ("spatial", "pooled") else (shape[1], shape[2])
        return f"its output is {h}×{w}"
    return f"its output is {lay.describe()}, not a (N, C, H, W) map"


def _check_gradcam_layer(model: Model, objective: Objective, layer: str, hw: tuple[int, int]) -> str:
    layer = model.resolve_layer(layer)
    if not model.is_spatial_map(layer, hw):
        try:
            options = [default_gradcam_layer(model, objective, hw)]
        except ValueError:
            options = []
        for name in reversed(_map_candidates(model, objective)):
            if len(options) >= 6:
                break
            if name not in options and model.is_spatial_map(name, hw):
                options.append(name)
        tail = ", ".join(repr(n) for n in options) or "none"
        raise ValueError(
            f"Grad-CAM needs a layer with a spatial output, but {layer!r} has none "
            f"({_why_not_a_map(model, layer, hw)}). Spatial layers of {model.name} you can use "
            f"(the default first, then deepest first): {tail}"
        )
    deepest = _deepest_target_layer(model, objective)
    if deepest is not None and layer != deepest:
        first = model.execution_order([layer, deepest])[0]
        if first != layer:
            raise ValueError(
                f"Grad-CAM layer must come before the target layer: {layer!r} runs after {deepest!r} "
                f"(the layer of {objective.description}). Pick {deepest!r} itself or an earlier layer."
            )
    return layer


# --------------------------------------------------------------------------- Grad-CAM


class _ObjectiveForward(nn.Module):
    """The objective's value per image, (N,), for a [0, 1] batch (through ``Model.features``)."""

    def __init__(self, model: Model, objective: Objective) -> None:
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        objective = self.objective
        feats = self.model.features(x, tuple(objective.layers), logits=bool(objective.needs_logits), normalize=True)
        value = objective(feats)
        if value.dim() != 1:
            raise ValueError(f"{objective.description} must give one value per image, got shape {tuple(value.shape)}")
        return value


class _LayoutProbe(nn.Identity):
    """Captum's handle on a layer of any layout: an identity module that sees the layer's output as
    an (N, C, h, w) map. Only the temporary hook of :func:`_probe_hook` calls it; it is never part of
    the user's model, and Captum's hooks go on it alone."""


def _probe_hook(layout: LayerLayout, probe: _LayoutProbe, layer: str, seen: list[bool]) -> ForwardHook:
    """A forward hook for ``layer``: its output re-laid to (N, C, h, w) (``layout.to_map``: tokens
    lose their prefix tokens and are reshaped to the patch grid, channels-last maps are permuted),
    detached and in float32, passed through ``probe``, and laid back to the layer's layout, dtype and
    prefix tokens — the same values, so the model computes what it computes without the hook, but
    the objective now depends on the layer through the probe's output."""

    def hook(_name: str, output: Any) -> torch.Tensor:
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"layer {layer!r} returns {type(output).__name__}, not a tensor")
        seen.append(True)
        amap = probe(layout.to_map(output).detach().float())
        return _lay_back(layout, amap, output)

    return hook


def _lay_back(layout: LayerLayout, amap: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """``amap`` (N, C, h, w) in the layout, dtype and prefix tokens of ``output``: the inverse of
    ``layout.to_map``."""
    amap = amap.to(output.dtype)
    if layout.kind == "channels_last":
        return amap.permute(0, 2, 3, 1)
    if layout.kind == "tokens":
        patches = amap.flatten(2).transpose(1, 2)
        prefix = layout.prefix_tokens
        return torch.cat([output[:, :prefix], patches], dim=1) if prefix else patches
    return amap.reshape(output.shape)


def _gradcam_maps(model: Model, objective: Objective, layer: str, x: torch.Tensor) -> torch.Tensor:
    """Raw Grad-CAM (N, 1, h, w) of ``objective`` at ``layer`` for one batch, any layout, computed by
    Captum's ``LayerGradCam`` (``relu_attributions=False``).

    ``LayerGradCam`` takes dim 1 as the channels, so it is pointed at a :class:`_LayoutProbe` that a
    temporary forward hook on the layer (through :func:`~faccent_widget.core.hooks.hooked_forward`,
    removed when each forward pass returns) calls with the layer's (last) output as (N, C, h, w):
    ``Σ_c mean_hw(∂target/∂A_c) · A_c`` then comes out for spatial, channels-last and token layers
    alike.
    """
    from captum.attr import LayerGradCam  # imported on first use: importing captum takes about a second

    probe = _LayoutProbe()
    seen: list[bool] = []
    hooks = {layer: _probe_hook(model.layout(layer), probe, layer, seen)}
    # hooked_forward runs `net`, whose forward reaches the user's layer through Model.features; the
    # table names that layer, so the hook sits on it (and nowhere else) for each forward pass
    table = {layer: model.module.get_submodule(layer)}
    net = _ObjectiveForward(model, objective)

    def forward(batch: torch.Tensor) -> torch.Tensor:
        return hooked_forward(net, batch, hooks=hooks, modules=table).output

    try:
        attr = LayerGradCam(forward, probe).attribute(x, relu_attributions=False)
    except AssertionError:  # Captum's "Forward hook did not obtain any outputs for given layer"
        if seen:
            raise
        raise ValueError(
            f"layer {layer!r} does not run before {objective.description}; pick a layer on its path"
        ) from None
    except RuntimeError as err:  # torch.autograd.grad: the value does not depend on the probe
        if "used in the graph" not in str(err) and "does not require grad" not in str(err):
            raise
        raise ValueError(
            f"{objective.description} does not depend on layer {layer!r}; pick a layer on its path"
        ) from None
    if not isinstance(attr, torch.Tensor):  # one layer, one tensor; a tuple would be a Captum change
        raise TypeError(f"captum's LayerGradCam returned {type(attr).__name__}, expected a tensor")
    return attr


def gradcam(
    model: nn.Module | Model,
    images: Any,
    target: Target,
    layer: str | None = None,
    *,
    upsample: bool = True,
    batch_size: int = 8,
) -> torch.Tensor:
    """Raw Grad-CAM maps of ``target`` for ``images``: a (N, H, W) float32 CPU tensor.

    Args:
        model: a :class:`faccent_widget.Model`, or a bare ``nn.Module`` (wrapped with ``as_model``).
        images: a (N, 3, H, W) float tensor in [0, 1], or a list of anything ``load_image`` accepts
            (each then resized to the model's input, ``model.input_hw``; see
            :func:`as_image_batch`).
        target: a class index, a class label, ``"layer:unit"``, or an :class:`Objective` (logit,
            channel, neuron, direction, or a combination).
        layer: the layer to take Grad-CAM at; by default :func:`default_gradcam_layer` (the model's
            last spatial layer for CNN logits, the last block's pre-attention norm for ViTs). It must
            have a map output — spatial (N, C, h, w), channels-last (N, h, w, C), or tokens with a
            patch grid (prefix tokens are dropped and the patches reshaped to (N, C, h, w), as
            pytorch-grad-cam's ``reshape_transform`` for ViTs does) — and, for hidden-layer targets,
            run no later than the target's layer.
        upsample: False returns the maps at the layer's own resolution (N, h, w).
        batch_size: images per forward/backward pass.

    Returns:
        The *raw* map: ``Σ_c mean_hw(∂target/∂A_c) · A_c`` at ``layer``, computed by Captum's
        ``LayerGradCam`` with ``relu_attributions=False`` (for every layout, through an identity
        probe that sees the layer's output as (N, C, h, w)), i.e. before any ReLU and before any
        normalisation, so negative values (evidence against the target) are kept, and upsampled
        bilinearly (``LayerAttribution.interpolate``, ``align_corners=False``) from the layer's h×w
        to the image's H×W. Apply ``.clamp(min=0)`` for the classic ReLU'd Grad-CAM, and a
        :class:`~faccent_widget.core.masks.CollectiveNormalizer` to turn maps into masks.
    """
    model = as_model(model)
    objective = resolve_objective(model, target)
    x = as_image_batch(model, images)
    hw = (int(x.shape[-2]), int(x.shape[-1]))
    layer = (
        default_gradcam_layer(model, objective, hw)
        if layer is None
        else _check_gradcam_layer(model, objective, layer, hw)
    )
    from captum.attr import LayerAttribution

    out = []
    step = max(1, int(batch_size))
    with model.preserved(), torch.inference_mode(False), torch.enable_grad():
        for start in range(0, x.shape[0], step):
            attr = _gradcam_maps(model, objective, layer, x[start : start + step]).detach().float()
            if upsample:  # bilinear, align_corners=False
                attr = LayerAttribution.interpolate(attr, hw, interpolate_mode="bilinear")
            out.append(attr[:, 0].cpu())
    return torch.cat(out)


# --------------------------------------------------------------------------- other sources


def activation_attribution(model: nn.Module | Model, images: Any, target: Target) -> torch.Tensor:
    """The target's own activation map as attribution (figure 10): a (N, H, W) float32 CPU tensor.

    For channel, neuron and direction targets of a convolutional layer: the channel's activations
    (for a neuron, its whole channel; for a direction, the per-position projection), upsampled
    bilinearly to the image size. Raw values, no ReLU or normalisation. ``images`` as in
    :func:`gradcam`. Logit targets have no activation map; use :func:`gradcam`.
    """
    model = as_model(model)
    objective = resolve_objective(model, target)
    if objective.spatial_layer is None:
        raise ValueError(
            f"{objective.description} has no activation map (it is not a single hidden-layer feature); "
            "use gradcam() for logits and combined objectives"
        )
    x = as_image_batch(model, images)
    with torch.no_grad():
        feats = model.features(x, objective.layers)
        amap = objective.activation_map(feats)
    if amap.dim() != 3:
        raise ValueError(
            f"the activation map of {objective.description} has shape {tuple(amap.shape)}; expected (N, h, w)"
        )
    amap = F.interpolate(amap[:, None].float(), size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
    return amap[:, 0].cpu()


def gradient_attribution(
    grads: torch.Tensor,
    *,
    sigma: float = 0.0,
    size: int | tuple[int, int] | None = None,
) -> torch.Tensor:
    """An accumulated image-gradient map (the engine's ``Accentuation.attribution``) as attribution.

    Args:
        grads: ``Σ_steps |∂objective/∂image|`` as (H, W) or (N, H, W) — used as given — or an
            image-shaped (N, C, H, W) gradient, reduced to ``Σ_c |g_c|``. (A (3, H, W) tensor is read as
            three maps; pass ``g[None]`` for one colour gradient.)
        sigma: standard deviation, in pixels, of an optional Gaussian blur (0 = none). Pixel gradients
            are speckled; a blur of a few pixels gives smoother masks.
        size: resize the result (bilinear): an int for a square side or an (H, W) pair.

    Returns:
        A (N, H, W) float32 CPU tensor, to normalise like the other attribution maps.
    """
    g = torch.as_tensor(grads).detach().float().cpu()
    if g.dim() == 2:
        g = g[None]
    elif g.dim() == 4:
        g = g.abs().sum(1)
    elif g.dim() != 3:
        raise ValueError(f"expected a gradient map (H, W), (N, H, W) or (N, C, H, W), got shape {tuple(g.shape)}")
    if g.numel() == 0:
        raise ValueError("the gradient map is empty")
    if sigma and sigma > 0:
        g = _gaussian_blur(g, float(sigma))
    if size is not None:
        hw = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
        g = F.interpolate(g[:, None], size=hw, mode="bilinear", align_corners=False)[:, 0]
    return g.contiguous()


def _gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(round(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    x = maps[:, None]
    pad_h, pad_w = min(radius, x.shape[-2] - 1), min(radius, x.shape[-1] - 1)
    if pad_w > 0:
        kw = k[radius - pad_w : radius + pad_w + 1]
        x = F.conv2d(F.pad(x, (pad_w, pad_w, 0, 0), mode="reflect"), kw.view(1, 1, 1, -1))
    if pad_h > 0:
        kh = k[radius - pad_h : radius + pad_h + 1]
        x = F.conv2d(F.pad(x, (0, 0, pad_h, pad_h), mode="reflect"), kh.view(1, 1, -1, 1))
    return x[:, 0]


def attribution_maps(
    model: nn.Module | Model,
    images: Any,
    target: Target,
    source: str = "gradcam",
    layer: str | None = None,
) -> torch.Tensor:
    """Raw (N, H, W) attribution maps from ``source``: ``"gradcam"`` (:func:`gradcam`, with
    ``layer``) or ``"activation"`` (:func:`activation_attribution`)."""
    model = as_model(model)
    if source == "gradcam":
        return gradcam(model, images, target, layer)
    if source == "activation":
        if layer is not None:
            raise ValueError("source='activation' uses the target's own layer; do not pass layer")
        return activation_attribution(model, images, target)
    raise ValueError(f"unknown attribution source {source!r}; choose one of {', '.join(ATTRIBUTION_SOURCES)}")


def describe_target(model: Model, target: Target) -> str:
    """A short, stable description of ``target`` (e.g. ``"logit 967 (espresso)"``)."""
    return resolve_objective(model, target).description
