"""Layer output layouts: which axis of a layer's output holds the channels, and what its positions are.

Every layer a :class:`~faccent_widget.Model` offers has one :class:`LayerLayout`, found by one traced
forward pass (shapes, module types and the model's own metadata; see ``Model.layout``):

* ``"spatial"`` — (N, C, H, W), convolutional feature maps; positions are the H·W pixels;
* ``"channels_last"`` — (N, H, W, C), e.g. torchvision ConvNeXt/Swin and timm Swin; positions H·W;
* ``"tokens"`` — (N, L, C), vision transformers; positions are the L tokens, of which the first
  ``prefix_tokens`` (class / distillation / register tokens) are not image patches and the rest form
  the patch ``grid``;
* ``"pooled"`` — (N, C) vectors (or (N, C, 1, 1) maps): one position, no spatial extent;
* ``"internal"`` — anything that is not an activation of the image batch: attention queries, keys,
  values and maps, window-partitioned tensors, tuples. Never offered as a regularisation or Grad-CAM
  layer, and refused as one.

``channels_first`` and ``to_map`` bring any activation to a common form, so the latent distance,
channel objectives and Grad-CAM have one implementation for every layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "LayerLayout",
    "LAYOUT_KINDS",
    "ACTIVATION_TYPES",
    "TRACE_BATCH",
    "classify_output",
    "is_activation_module",
    "is_attention_module",
]

#: The layout kinds, see the module docstring.
LAYOUT_KINDS = ("spatial", "channels_last", "tokens", "pooled", "internal")


@dataclass(frozen=True)
class LayerLayout:
    """How one layer's output is laid out (see the module docstring for the kinds).

    Attributes:
        kind: one of :data:`LAYOUT_KINDS`.
        shape: the output shape for one image at the model's input size (batch dimension 1);
            ``()`` for outputs that are not tensors.
        grid: (h, w) of the image positions at the model's input size: the pixel grid of spatial and
            channels-last maps, the patch grid of tokens (None when the tokens form no square grid).
        prefix_tokens: leading tokens that are not image patches (tokens only).
        note: why the layer is internal, or other provenance of the decision.
    """

    kind: str
    shape: tuple[int, ...] = ()
    grid: tuple[int, int] | None = None
    prefix_tokens: int = 0
    note: str = ""

    def __post_init__(self) -> None:
        if self.kind not in LAYOUT_KINDS:
            raise ValueError(f"unknown layout kind {self.kind!r}; known: {', '.join(LAYOUT_KINDS)}")

    # ------------------------------------------------------------------ facts
    @property
    def channel_dim(self) -> int | None:
        """The channel axis of the output (1 or -1); None for internal tensors."""
        if self.kind in ("spatial", "pooled"):
            return 1
        if self.kind in ("channels_last", "tokens"):
            return -1
        return None

    @property
    def channels(self) -> int | None:
        """Number of channels (None for internal tensors)."""
        dim = self.channel_dim
        if dim is None or len(self.shape) < 2:
            return None
        return int(self.shape[dim])

    @property
    def positions(self) -> int:
        """Positions the latent distance averages over: pixels, tokens (all of them), or 1 (pooled)."""
        if self.kind == "spatial":
            return int(math.prod(self.shape[2:]))
        if self.kind == "channels_last":
            return int(math.prod(self.shape[1:-1]))
        if self.kind == "tokens":
            return int(self.shape[1])
        return 1

    @property
    def is_map(self) -> bool:
        """Whether the output has a 2-D grid of image positions (more than one): spatial and
        channels-last maps, tokens with a patch grid. Only such layers serve Grad-CAM and activation
        maps."""
        return (
            self.kind in ("spatial", "channels_last", "tokens")
            and self.grid is not None
            and self.grid[0] * self.grid[1] > 1
        )

    @property
    def is_activation(self) -> bool:
        """Whether the output is an activation of the image (anything but ``"internal"``)."""
        return self.kind != "internal"

    def describe(self) -> str:
        """A short human description, e.g. ``"tokens (N, 197, 384): 1 prefix + 14×14 patches"``."""
        dims = ", ".join(str(d) for d in self.shape[1:])
        base = f"{self.kind} (N, {dims})" if self.shape else self.kind
        if self.kind == "tokens":
            grid = f"{self.grid[0]}×{self.grid[1]} patches" if self.grid else "no patch grid"
            base += f": {self.prefix_tokens} prefix + {grid}"
        if self.note:
            base += f" [{self.note}]"
        return base

    # ------------------------------------------------------------------ conversions
    def _check_activation(self) -> None:
        if self.kind == "internal":
            raise TypeError(f"an internal tensor ({self.describe()}) has no channels or positions")

    def channels_first(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` as (N, C, *positions): (N, C, H, W) for maps, (N, C, L) for tokens (all of them),
        (N, C) for pooled vectors."""
        self._check_activation()
        if self.kind == "channels_last":
            return t.permute(0, t.dim() - 1, *range(1, t.dim() - 1))
        if self.kind == "tokens":
            return t.transpose(1, 2)
        return t

    def to_map(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` as an (N, C, h, w) map of image positions. Tokens lose their prefix tokens and are
        reshaped to the patch grid (as pytorch-grad-cam's ``reshape_transform`` for ViTs does); for a
        token count other than the traced one (another input size) a square grid is assumed."""
        self._check_activation()
        if self.kind == "spatial":
            return t if t.dim() == 4 else t.reshape(*t.shape[:2], 1, 1)
        if self.kind == "channels_last":
            return t.permute(0, 3, 1, 2)
        if self.kind == "pooled":
            return t.reshape(t.shape[0], t.shape[1], 1, 1)
        patches = t[:, self.prefix_tokens :]
        n, count, c = patches.shape
        grid = self.grid_for(count + self.prefix_tokens)
        if grid is None:
            raise ValueError(
                f"cannot arrange {count} patch tokens into a grid ({self.describe()}); this layer has no spatial map"
            )
        return patches.transpose(1, 2).reshape(n, c, *grid)

    def grid_for(self, tokens: int) -> tuple[int, int] | None:
        """The patch grid for a token layer with ``tokens`` tokens (prefix included), or None."""
        count = tokens - self.prefix_tokens
        if self.grid is not None and self.grid[0] * self.grid[1] == count:
            return self.grid
        side = math.isqrt(max(count, 0))
        return (side, side) if side > 0 and side * side == count else None


# ---------------------------------------------------------------------- classification of traced outputs

#: Module types counted as "activation layers" for the default regularisation layer.
ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.SiLU,
    nn.GELU,
    nn.LeakyReLU,
    nn.ELU,
    nn.Hardswish,
    nn.Mish,
    nn.PReLU,
)
#: Modules from these packages count as activation layers too (Hugging Face's ``GELUActivation``, …).
_ACTIVATION_PACKAGES = ("transformers.activations", "timm.layers.activations")
#: Module types whose 4-D output is channels-first (N, C, H, W) by construction.
_CHANNELS_FIRST_TYPES: tuple[type[nn.Module], ...] = (
    nn.Conv2d,
    nn.ConvTranspose2d,
    nn.BatchNorm2d,
    nn.InstanceNorm2d,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.Upsample,
)
#: Module types that act on the last axis: their 3-/4-D outputs are tokens or channels-last.
_LAST_AXIS_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.LayerNorm)
#: Module types whose 3-D output is a (N, C, L) sequence, not tokens.
_SEQUENCE_TYPES: tuple[type[nn.Module], ...] = (
    nn.Conv1d,
    nn.BatchNorm1d,
    nn.InstanceNorm1d,
    nn.MaxPool1d,
    nn.AvgPool1d,
    nn.AdaptiveAvgPool1d,
)
#: Batch size of the tracing forward pass: an output whose first axis differs is not per image.
TRACE_BATCH = 2


def is_activation_module(module: nn.Module) -> bool:
    """Whether ``module`` is an activation (:data:`ACTIVATION_TYPES` or a timm/Hugging Face activation class)."""
    return isinstance(module, ACTIVATION_TYPES) or type(module).__module__.startswith(_ACTIVATION_PACKAGES)


def is_attention_module(module: nn.Module) -> bool:
    """Attention modules by type: ``nn.MultiheadAttention``, or a class named like ``*Attention*`` /
    ``*Attn*`` (timm ``Attention``/``WindowAttention``, torchvision ``ShiftedWindowAttention``, Hugging
    Face ``ViTAttention``, …)."""
    if isinstance(module, nn.MultiheadAttention):
        return True
    cls = type(module).__name__.lower()
    return "attention" in cls or "attn" in cls


def classify_output(
    module: nn.Module,
    shape: tuple[int, ...] | None,
    inside_attention: str | None,
    prefix_tokens: int | None,
    patch_grid: tuple[int, int] | None,
) -> LayerLayout:
    """The layout of one module's output, traced with a batch of :data:`TRACE_BATCH` square images.

    ``shape`` is None when the output is not a tensor; ``inside_attention`` names the attention
    module holding ``module`` (None if none); ``prefix_tokens`` and ``patch_grid`` are the model's own
    token facts (from its metadata), used for token outputs."""
    one = (1, *shape[1:]) if shape else ()
    if inside_attention is not None:
        return LayerLayout("internal", one, note=f"inside attention module {inside_attention!r}")
    if isinstance(module, (nn.Softmax, nn.Softmin)):
        return LayerLayout("internal", one, note="softmax (attention map)")
    if shape is None:
        return LayerLayout("internal", note="output is not a tensor")
    if not shape or shape[0] != TRACE_BATCH:
        return LayerLayout("internal", one, note="first axis is not the image batch")
    if len(shape) == 2:
        return LayerLayout("pooled", one)
    if len(shape) == 3:
        return _classify_3d(module, shape, one, int(prefix_tokens or 0), patch_grid)
    if len(shape) == 4:
        a, b, c = shape[1:]
        first, last = b == c, a == b
        if first and last:
            last_axis = isinstance(module, _LAST_AXIS_TYPES) and "2d" not in type(module).__name__.lower()
            first = not last_axis or isinstance(module, _CHANNELS_FIRST_TYPES)
        if first:
            return LayerLayout("spatial" if b * c > 1 else "pooled", one, grid=(b, c))
        if last:
            return LayerLayout("channels_last" if a * b > 1 else "pooled", one, grid=(a, b))
        return LayerLayout("internal", one, note="4-D output is neither (N, C, h, h) nor (N, h, h, C)")
    return LayerLayout("internal", one, note=f"{len(shape)}-D output")


def _classify_3d(
    module: nn.Module, shape: tuple[int, ...], one: tuple[int, ...], prefix: int, grid: tuple[int, int] | None
) -> LayerLayout:
    if isinstance(module, _SEQUENCE_TYPES):
        return LayerLayout("internal", one, note="(N, C, L) sequence")
    count = shape[1]
    if grid is not None and count == prefix + grid[0] * grid[1]:
        return LayerLayout("tokens", one, grid=grid, prefix_tokens=prefix)
    for p in dict.fromkeys((0, prefix)):
        side = math.isqrt(max(count - p, 0))
        if side > 0 and side * side == count - p:
            return LayerLayout("tokens", one, grid=(side, side), prefix_tokens=p)
    if count <= prefix:
        return LayerLayout("pooled", one, note="prefix tokens only")
    return LayerLayout("tokens", one, grid=None, prefix_tokens=prefix)
