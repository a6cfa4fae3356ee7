"""``Model``: one clean way to run any image classifier ``nn.Module``.

The adapter owns preprocessing (mean/std or input range, input size), named layers, truncated
feature extraction through temporary forward hooks, labels and prediction. It never mutates the
wrapped module: hooks it adds are removed in ``finally``; train/eval flags and ``requires_grad``
flags are restored after every call, also after an exception.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import math
import operator
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from ..images import ImageInput, load_image, resize_image
from .layouts import LayerLayout

__all__ = [
    "Model",
    "Prediction",
    "LayerNotFoundError",
    "LayerLayout",
    "ACTIVATION_TYPES",
    "imagenet_labels",
    "as_model",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

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
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
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
#: Names of the parameters that hold prefix tokens (timm, torchvision, Hugging Face).
_PREFIX_TOKEN_PARAMS = ("cls_token", "class_token", "dist_token", "distillation_token", "reg_token", "register_tokens")
#: Batch size of the tracing forward pass: an output whose first axis differs is not per image.
_TRACE_BATCH = 2


class LayerNotFoundError(KeyError):
    """An unknown layer name; the message lists close matches."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class Prediction(NamedTuple):
    """One entry of ``Model.predict``."""

    index: int  # type: ignore[assignment]  # shadows tuple.index on purpose: the class index
    label: str
    prob: float


class _StopForward(Exception):
    """Raised by a hook to end a forward pass after the deepest requested layer."""


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet class names (from torchvision's metadata; no download)."""
    from torchvision.models import GoogLeNet_Weights

    return list(GoogLeNet_Weights.IMAGENET1K_V1.meta["categories"])


class Model:
    """Wrap an image classifier for feature accentuation.

    Args:
        module: any ``nn.Module`` mapping a (N, 3, H, W) batch to (N, C) logits.
        mean, std: per-channel normalisation applied to [0, 1] images. Defaults come from a timm
            ``pretrained_cfg`` or torchvision ``weights`` when known, else ImageNet's.
        input_range: alternative to mean/std, e.g. ``(0, 255)`` or ``(-1, 1)``.
        input_size: side of the square model input (default from the metadata: timm's
            ``patch_embed.img_size`` / ``pretrained_cfg``, torchvision ``weights`` or
            ``VisionTransformer.image_size`` (299 for ``Inception3``), a Hugging Face
            ``config.image_size``; else 224). For a fixed-size model another value is an error.
        accepts_any_size: whether the model runs at input sizes other than ``input_size`` (default
            from the metadata: False for timm ViT/DeiT/Swin with a strict patch embedding, torchvision
            ``VisionTransformer``, Hugging Face models with absolute position embeddings; else True).
            Fixed-size models always get crops of exactly ``input_size``.
        labels: class names; 1000-way models get the ImageNet names by default.
        weights: a torchvision ``Weights`` enum member to take preprocessing and labels from.
        reg_layer: override the default regularisation layer.
        device: run on this device. If it differs from the module's device the adapter runs a
            private copy there, leaving your module where it is.
        name: a display name.
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        input_range: tuple[float, float] | None = None,
        input_size: int | None = None,
        accepts_any_size: bool | None = None,
        labels: Sequence[str] | None = None,
        weights: Any = None,
        reg_layer: str | None = None,
        device: str | torch.device | None = None,
        name: str | None = None,
    ) -> None:
        if isinstance(module, Model):
            raise TypeError("module is already a faccent_widget.Model; pass it directly")
        if not isinstance(module, nn.Module):
            raise TypeError(f"expected a torch.nn.Module, got {type(module).__name__}")
        if isinstance(module, torch.jit.ScriptModule):
            raise TypeError(
                f"{type(module).__name__} is a TorchScript module; faccent-widget needs forward hooks on its layers, "
                "which TorchScript does not run. Pass the original (eager) nn.Module instead."
            )
        if isinstance(labels, (str, bytes)) or (labels is not None and not all(isinstance(x, str) for x in labels)):
            raise TypeError("labels must be a list of strings, one per class (e.g. ['cat', 'dog'])")
        self.user_module = module
        self.module = _on_device(module, device)
        self.name = name or type(module).__name__
        meta = _metadata(module, weights)
        if input_range is not None:
            if mean is not None or std is not None:
                raise ValueError("pass either input_range or mean/std, not both")
            lo, hi = float(input_range[0]), float(input_range[1])
            if not hi > lo:
                raise ValueError(f"input_range must be (low, high) with high > low, got {input_range}")
            mean, std = (-lo / (hi - lo),) * 3, (1.0 / (hi - lo),) * 3
        self.mean = tuple(float(v) for v in (mean if mean is not None else meta.get("mean", IMAGENET_MEAN)))
        self.std = tuple(float(v) for v in (std if std is not None else meta.get("std", IMAGENET_STD)))
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std need 3 values with std > 0, got mean={self.mean} std={self.std}")
        native = int(meta.get("input_size", 224))
        fixed = bool(meta.get("fixed_input_size", False)) if accepts_any_size is None else not accepts_any_size
        if input_size is not None and fixed and int(input_size) != native and accepts_any_size is None:
            raise ValueError(
                f"{self.name} has a fixed input size of {native}×{native} ({meta.get('size_source', 'its metadata')}); "
                f"input_size={input_size} is not possible. Leave input_size unset, or pass accepts_any_size=True "
                "if the model really runs at other sizes."
            )
        self.input_size = int(input_size or native)
        self.accepts_any_size = not fixed
        self._labels = list(labels) if labels is not None else meta.get("labels")
        self._token_meta: tuple[int | None, tuple[int, int] | None] = (
            meta.get("prefix_tokens"),
            meta.get("patch_grid") if self.input_size == native else None,
        )
        self._reg_layer_override = reg_layer
        self._trace_cache: _Trace | None = None
        self._layout_cache: dict[str, LayerLayout] | None = None
        self._derived: dict[str, list[str]] = {}  # layer lists derived from the trace, computed once
        self._shape_cache: dict[tuple[int, int], dict[str, tuple[int, ...]]] = {}
        self._modules = dict(self.module.named_modules())
        if reg_layer is not None:
            self.resolve_layer(reg_layer)

    # ------------------------------------------------------------------ basic properties
    def __repr__(self) -> str:
        size = f"input_size={self.input_size}" + ("" if self.accepts_any_size else " (fixed)")
        return f"Model({self.name}, {size}, mean={self.mean}, std={self.std})"

    @property
    def device(self) -> torch.device:
        """Device the model runs on (of its first parameter or buffer; CPU if it has none)."""
        for p in self.module.parameters():
            return p.device
        for b in self.module.buffers():
            return b.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        """Floating-point dtype of the model's parameters (inputs are cast to it; float32 if none)."""
        for t in self.module.parameters():
            if t.is_floating_point():
                return t.dtype
        return torch.float32

    @property
    def layer_names(self) -> list[str]:
        """Names of all sub-modules, as ``named_modules()`` gives them (the root excluded)."""
        return [n for n in self._modules if n]

    @property
    def num_classes(self) -> int:
        return self._trace().num_classes

    @property
    def labels(self) -> list[str]:
        """Class names: the user's, the weights', ImageNet's for 1000-way models, else ``class i``.

        Given labels are checked once against the number of logits (``ValueError`` on a mismatch)."""
        if self._labels is None:
            n = self.num_classes
            self._labels = imagenet_labels() if n == 1000 else [f"class {i}" for i in range(n)]
        elif not getattr(self, "_labels_checked", False):
            n = self.num_classes
            if len(self._labels) != n:
                raise ValueError(
                    f"{len(self._labels)} labels were given but {self.name} outputs {n} logits; pass one label per class"  # noqa: E501
                )
            self._labels_checked = True
        return self._labels

    # ------------------------------------------------------------------ layers
    def resolve_layer(self, name: str) -> str:
        """Return ``name`` if it is a layer, else raise ``LayerNotFoundError`` naming close matches."""
        if name in self._modules and name:
            return name
        close = difflib.get_close_matches(str(name), self.layer_names, n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        sample = ", ".join(self.layer_names[:8])
        raise LayerNotFoundError(
            f"unknown layer {name!r} in {self.name}{hint} (see Model.layer_names; first ones: {sample}, …)"
        )

    @property
    def activation_layers(self) -> list[str]:
        """Activation modules (ReLU, ReLU6, SiLU, GELU, Hugging Face/timm activation classes, …) in
        execution order, whatever their layout."""
        trace = self._trace()
        return [n for n in trace.order if _is_activation_module(self._modules[n])]

    # ------------------------------------------------------------------ layouts
    def layout(self, name: str) -> LayerLayout:
        """The :class:`~faccent_widget.core.layouts.LayerLayout` of layer ``name``'s output (at the
        model's input size): spatial, channels-last, tokens, pooled or internal.

        Found by one traced forward pass from the output's shape and module type and the model's own
        metadata: a module inside an attention module (or a ``Softmax``) is internal; an output whose
        first axis is not the image batch is internal (window-partitioned tensors); (N, C) is pooled;
        (N, L, C) are tokens, with the prefix tokens and patch grid from ``num_prefix_tokens`` /
        ``patch_embed.grid_size`` (timm), ``class_token`` / ``image_size`` (torchvision) or the
        config (Hugging Face); a 4-D output is spatial (N, C, h, h) or channels-last (N, h, h, C) by
        which two axes form the square grid of the square traced input (module type breaks ties).
        """
        layer = self.resolve_layer(name)
        layouts = self._layouts()
        if layer not in layouts:
            return LayerLayout("internal", note="not called in a forward pass")
        return layouts[layer]

    @property
    def transformer_blocks(self) -> list[str]:
        """Transformer blocks in execution order: the modules holding an (outermost) attention module
        whose own output is tokens or channels-last (timm ``blocks.3``, torchvision
        ``encoder.layers.encoder_layer_3``, Hugging Face ``vit.layers.3``, Swin's ``layers.1.blocks.0``).
        Empty for convolutional networks."""

        def compute() -> list[str]:
            parents = {_parent(n) for n in self._attention_modules() if _parent(n)}
            return [
                n
                for n in self._trace().order
                if n in parents and self.layout(n).kind in ("tokens", "channels_last") and self.layout(n).is_map
            ]

        return self._once("transformer_blocks", compute)

    def attention_input_layer(self, block: str) -> str | None:
        """The pre-attention norm of transformer block ``block``: the last map layer inside it that
        returns before its attention module starts (timm ``norm1``, torchvision ``ln_1``, Hugging Face
        ``layernorm_before``); None when there is none."""
        block = self.resolve_layer(block)
        trace = self._trace()
        starts = [
            trace.first_call[a]
            for a in self._attention_modules()
            if a.startswith(block + ".") and a in trace.first_call
        ]
        if not starts:
            return None
        before = [n for n in self.map_layers if n.startswith(block + ".") and trace.last_call[n] < min(starts)]
        return before[-1] if before else None

    @property
    def map_layers(self) -> list[str]:
        """Layers whose output has a 2-D grid of image positions (spatial, channels-last, or tokens
        with a patch grid; more than one position), in execution order: the layers Grad-CAM and
        activation maps can use."""
        trace = self._trace()
        return [n for n in trace.order if self.layout(n).is_map]

    @property
    def block_layers(self) -> list[str]:
        """Block outputs in execution order: the transformer blocks, and every module with a map output
        (see ``map_layers``) that is not a plain container and whose ancestors (below the root) are all
        plain containers (Sequential/ModuleList/ModuleDict). E.g. GoogLeNet's ``inception3a``,
        ResNet's ``layer1.0``, timm ViT's ``blocks.3``. Never internal or pooled outputs."""

        def compute() -> list[str]:
            transformer = set(self.transformer_blocks)
            blocks = []
            for n in self._trace().order:
                if not self.layout(n).is_map:
                    continue
                if n in transformer:
                    blocks.append(n)
                elif not isinstance(self._modules[n], _CONTAINERS) and all(
                    isinstance(self._modules[a], _CONTAINERS) for a in _ancestors(n)
                ):
                    blocks.append(n)
            return blocks

        return self._once("block_layers", compute)

    @property
    def stem_layers(self) -> list[str]:
        """Layers that finish before the first inner block starts: the stem of a CNN (ResNet's
        ``conv1``…``maxpool``), the patch embedding of a transformer (``patch_embed``, ``pos_drop``, …).
        An inner block is a transformer block or a block output inside a container. Empty when the
        model has no inner blocks."""

        def compute() -> list[str]:
            trace = self._trace()
            transformer = set(self.transformer_blocks)
            inner = [
                n
                for n in self.block_layers
                if n in transformer or any(isinstance(self._modules[a], _CONTAINERS) for a in _ancestors(n))
            ]
            if not inner:
                return []
            start = min(trace.first_call[n] for n in inner)
            return [n for n in trace.order if trace.last_call[n] < start]

        return self._once("stem_layers", compute)

    @property
    def spatial_layers(self) -> list[str]:
        """Layers whose output is an (N, C, H, W) map with more than one position, in execution order."""
        trace = self._trace()
        return [n for n in trace.order if self.layout(n).kind == "spatial" and self.layout(n).is_map]

    @property
    def reg_layer_candidates(self) -> list[str]:
        """Layers offered for regularisation, in execution order, never internal or pooled ones.

        * transformers (models with ``transformer_blocks``): the block outputs (``block_layers``)
          after the patch embedding (``stem_layers``);
        * convolutional networks: the activation modules whose output is a spatial or channels-last
          map; for models whose activations are functional (no activation modules, e.g.
          torchvision's GoogLeNet), the block outputs; else every map layer.
        """
        if self.transformer_blocks:
            stem = set(self.stem_layers)
            return [n for n in self.block_layers if n not in stem] or self.block_layers
        acts = [
            n
            for n in self.activation_layers
            if self.layout(n).is_map and self.layout(n).kind in ("spatial", "channels_last")
        ]
        return acts or self.block_layers or self.map_layers

    @property
    def default_reg_layer(self) -> str:
        """The default regularisation layer (appendix H of the paper).

        Rule: among ``reg_layer_candidates`` outside the stem / patch embedding (``stem_layers``;
        the stem is used only when nothing else is left), the one whose output is produced closest to
        1/4 of the model's depth, where depth is measured in leaf-module calls of one forward pass.
        Per layout:

        * spatial CNNs (ResNet, VGG, EfficientNet, …): the activation module (ReLU/SiLU/GELU/…) with a
          spatial output nearest 1/4 depth, as in appendix H; squeeze-excitation activations are pooled
          (N, C, 1, 1) and never chosen. Functional activations (GoogLeNet): the nearest block output.
        * channels-last CNNs (torchvision ConvNeXt): the nearest GELU, whose output is (N, H, W, C).
        * token transformers (ViT, DeiT, Hugging Face ViT): the nearest transformer block output
          (N, L, C), never the patch embedding or an attention internal (q/k/v, attention maps).
        * hierarchical transformers (Swin): the nearest transformer block output (channels-last).

        A ``reg_layer`` given to the constructor wins.
        """
        if self._reg_layer_override is not None:
            return self._reg_layer_override
        trace = self._trace()
        candidates = self.reg_layer_candidates
        if not candidates:
            raise ValueError(f"{self.name} has no layer with a spatial, channels-last or token output to regularise at")
        stem = set(self.stem_layers)
        pool = [n for n in candidates if n not in stem] or candidates
        target = 0.25 * trace.n_leaf_calls
        return min(pool, key=lambda n: abs(trace.leaf_position[n] - target))

    def check_reg_layer(self, name: str | None) -> str:
        """``name`` (or the default regularisation layer when None) if it can serve as one; a
        ``ValueError`` naming the candidates for internal tensors (attention q/k/v and maps, …)."""
        if not name:
            return self.default_reg_layer
        layer = self.resolve_layer(name)
        lay = self.layout(layer)
        if not lay.is_activation:
            shown = ", ".join(repr(n) for n in self.reg_layer_candidates[:12])
            raise ValueError(
                f"reg_layer {layer!r} is not an activation of the image ({lay.describe()}); "
                f"use a block output or activation, e.g. {shown}"
            )
        return layer

    def layer_depth(self, name: str) -> float:
        """Relative depth in [0, 1] at which ``name`` produces its output."""
        trace = self._trace()
        return trace.leaf_position[self.resolve_layer(name)] / max(1, trace.n_leaf_calls)

    def execution_order(self, layers: Iterable[str]) -> list[str]:
        """Sort layer names by when they produce their (last) output."""
        trace = self._trace()
        resolved = [self.resolve_layer(n) for n in layers]
        missing = [n for n in resolved if n not in trace.last_call]
        if missing:
            raise ValueError(f"layers {missing} are never called in a forward pass of {self.name}")
        return sorted(resolved, key=lambda n: trace.last_call[n])

    def output_shape(self, name: str, hw: tuple[int, int] | None = None) -> tuple[int, ...]:
        """Shape of layer ``name``'s output for one blank image of size ``hw`` (default: the model
        input); ``()`` when the output is not a tensor. One traced forward per size, cached."""
        layer = self.resolve_layer(name)
        key = (int(hw[0]), int(hw[1])) if hw is not None else (self.input_size, self.input_size)
        if key not in self._shape_cache:
            self._shape_cache[key] = _layer_shapes(self, key)
        return self._shape_cache[key].get(layer, ())

    def is_spatial_map(self, name: str, hw: tuple[int, int] | None = None) -> bool:
        """Whether ``name`` outputs a map of image positions (spatial, channels-last, or tokens with a
        patch grid; see :meth:`layout`) with more than one position at image size ``hw``."""
        lay = self.layout(name)
        if not lay.is_map:
            return False
        shape = self.output_shape(name, hw)
        if lay.kind == "spatial":
            return len(shape) == 4 and shape[-1] * shape[-2] > 1
        if lay.kind == "channels_last":
            return len(shape) == 4 and shape[1] * shape[2] > 1
        grid = lay.grid_for(shape[1]) if len(shape) == 3 else None
        return grid is not None and grid[0] * grid[1] > 1

    def crop_size(self, requested: int | None = None, scale: float = 1.0) -> int:
        """The side of the square crops fed to the model in a run.

        A fixed-size model (``accepts_any_size`` False) always gets ``input_size``; asking for another
        size is a ``ValueError``. Other models get ``requested`` when given, else ``scale`` × their
        native ``input_size`` rounded to a multiple of 8 (at least 16): the presets scale from the
        model's own size (``preview`` 0.7×, ``paper`` 1×).
        """
        if not self.accepts_any_size:
            if requested is not None and int(requested) != self.input_size:
                raise ValueError(
                    f"{self.name} only accepts {self.input_size}×{self.input_size} inputs (a fixed input size), "
                    f"but input_size={requested} was asked; leave input_size unset (None) to use {self.input_size}"
                )
            return self.input_size
        if requested is not None:
            return int(requested)
        return max(16, 8 * round(self.input_size * float(scale) / 8))

    def with_module(self, module: nn.Module, *, name: str | None = None) -> Model:
        """A new adapter for ``module`` with this one's preprocessing, labels and reg-layer override
        (e.g. for a randomised copy of the network)."""
        return Model(
            module,
            mean=self.mean,
            std=self.std,
            input_size=self.input_size,
            labels=self._labels,
            reg_layer=self._reg_layer_override,
            name=name or self.name,
            accepts_any_size=self.accepts_any_size,
        )

    # ------------------------------------------------------------------ state guarding
    @contextlib.contextmanager
    def preserved(self, *, freeze: bool = True) -> Iterator[None]:
        """Context: eval mode (and, with ``freeze``, parameters not requiring grad) inside; every
        module's ``training`` flag and every parameter's ``requires_grad`` restored on exit."""
        # touched only where they change: setting a flag on every module and parameter twice per call
        # was a few ms of Python per engine step
        modules = list(self.module.modules())
        modes = [m.training for m in modules]
        flags = [(p, p.requires_grad) for p in self.module.parameters()] if freeze else []
        try:
            if any(modes):
                self.module.eval()
            for p, flag in flags:
                if flag:
                    p.requires_grad_(False)
            yield
        finally:
            for m, mode in zip(modules, modes):
                if m.training != mode:
                    m.training = mode
            for p, flag in flags:
                if p.requires_grad != flag:
                    p.requires_grad_(flag)

    # ------------------------------------------------------------------ running
    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Map a [0, 1] batch to the model's input normalisation."""
        mean, std = _norm_constants(self.mean, self.std, x.device, x.dtype)
        return (x - mean) / std

    def features(
        self,
        x: torch.Tensor,
        layers: Iterable[str] = (),
        *,
        logits: bool = False,
        normalize: bool = True,
        freeze: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Activations of exactly ``layers`` (and ``"logits"`` when asked) for a [0, 1] batch ``x``.

        Hooks go only on the requested layers and are removed afterwards. Without ``logits`` the
        forward pass stops right after the deepest requested layer. Gradients flow to ``x``; the
        model's parameters are not trained (their ``requires_grad`` is restored afterwards).
        ``freeze=False`` leaves their ``requires_grad`` alone: for callers that take gradients only
        with respect to ``x`` (``torch.autograd.grad``, as the engine does), so that nothing reaches the
        parameters' ``.grad`` and autocast can reuse its weight casts between two calls in one
        autocast region.
        """
        names = list(dict.fromkeys(self.resolve_layer(n) for n in layers))
        if not names and not logits:
            raise ValueError("features() needs at least one layer or logits=True")
        trace = self._trace()
        stop_at = None if logits else max(names, key=lambda n: trace.last_call.get(n, -1))
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a (N, 3, H, W) batch in [0, 1], got shape {tuple(x.shape)}")
        x = x.to(device=self.device, dtype=self.dtype)
        inp = self.normalize(x) if normalize else x
        out: dict[str, torch.Tensor] = {}
        handles = []
        calls: dict[str, int] = {}
        stopped = []  # set when our hook ended the pass: any exception after that is the stop signal

        def make_hook(name: str, stop: bool):
            expected = trace.calls.get(name, 1)

            def hook(_module: nn.Module, _args: Any, output: Any) -> None:
                calls[name] = calls.get(name, 0) + 1
                last = calls[name] >= expected
                if stop and last:
                    out[name] = output
                    stopped.append(True)
                    raise _StopForward
                out[name] = output.clone() if isinstance(output, torch.Tensor) else output

            return hook

        try:
            with self.preserved(freeze=freeze):
                for n in names:
                    handles.append(self._modules[n].register_forward_hook(make_hook(n, n == stop_at)))
                try:
                    result = self.module(inp)
                except Exception:
                    # our stop signal, also when a user's forward wraps it in another exception
                    if not stopped:
                        raise
                    result = None
            if logits:
                out["logits"] = _check_logits(result, self.name)
        finally:
            for h in handles:
                h.remove()
        return out

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C) logits for a [0, 1] batch."""
        return self.features(x, logits=True)["logits"]

    def view(self, images: ImageInput | Sequence[ImageInput] | torch.Tensor) -> torch.Tensor:
        """The model view: images resized (bilinear, antialiased, aspect not kept) to the model's
        square input, as a (N, 3, S, S) float batch in [0, 1].

        A (N, 3, H, W) float tensor stays on its device; anything else ``load_image`` accepts (or a
        list of such images) is loaded on the CPU. The engine's scores, Grad-CAM and the validation
        tools all see images through this one resize.
        """
        size = (self.input_size, self.input_size)
        if isinstance(images, torch.Tensor) and images.dim() == 4:
            return resize_image(images.detach().float(), size)
        items: list[Any] = list(images) if isinstance(images, (list, tuple)) else [images]
        if not items:
            raise ValueError("no images given: pass an image, a (N, 3, H, W) tensor or a non-empty list")
        return torch.stack([load_image(img, size=size) for img in items])

    def prepare(self, image: ImageInput) -> torch.Tensor:
        """One image in the model view: a (1, 3, S, S) batch in [0, 1] (see :meth:`view`)."""
        return self.view(image if not isinstance(image, (list, tuple)) else [image])[:1]

    def probabilities(self, image: ImageInput | torch.Tensor) -> torch.Tensor:
        """Softmax probabilities (C,) for one image (anything ``load_image`` accepts)."""
        x = image if isinstance(image, torch.Tensor) and image.dim() == 4 else self.prepare(image)
        with torch.no_grad():
            return self.logits(x).float().softmax(-1)[0].cpu()

    def predict(self, image: ImageInput, k: int = 5) -> list[Prediction]:
        """Top-``k`` classes of ``image`` as (index, label, probability)."""
        probs = self.probabilities(image)
        k = max(1, min(int(k), probs.numel()))
        values, indices = probs.topk(k)
        return [Prediction(int(i), self.labels[int(i)], float(v)) for v, i in zip(values, indices)]

    def class_index(self, target: int | str) -> int:
        """Resolve a class index or label to an index, with a clear error when it does not exist."""
        n = len(self.labels)
        if isinstance(target, bool) or type(target).__name__ == "bool_" or getattr(target, "dtype", None) == torch.bool:
            raise TypeError("a class target must be an int index or a label string, not a bool")
        if isinstance(target, int) or (hasattr(target, "__index__") and not isinstance(target, str)):
            try:
                idx = operator.index(target)
            except TypeError:
                raise TypeError(f"a class index must be an integer, got {target!r}") from None
            if not 0 <= idx < n:
                raise IndexError(f"class index {idx} is out of range for {self.name}: valid are 0…{n - 1}")
            return idx
        if isinstance(target, str):
            lowered = [lab.lower() for lab in self.labels]
            key = target.strip().lower()
            if key in lowered:
                return lowered.index(key)
            close = difflib.get_close_matches(key, lowered, n=5, cutoff=0.6)
            hint = f"; close matches: {', '.join(repr(self.labels[lowered.index(c)]) for c in close)}" if close else ""
            raise ValueError(f"no class labelled {target!r} in {self.name}{hint}")
        raise TypeError(f"a class target must be an int index or a label string, got {type(target).__name__}")

    # ------------------------------------------------------------------ tracing
    def _trace(self) -> _Trace:
        if self._trace_cache is None:
            self._trace_cache = _trace_module(self)
        return self._trace_cache

    def _once(self, key: str, compute: Any) -> list[str]:
        """A layer list derived from the trace: computed once, returned as a fresh copy."""
        if key not in self._derived:
            self._derived[key] = list(compute())
        return list(self._derived[key])

    def _attention_modules(self) -> list[str]:
        """Outermost attention modules (names), in ``named_modules`` order."""

        def compute() -> list[str]:
            found: list[str] = []
            for n, m in self._modules.items():
                if n and _is_attention_module(m) and not any(a in found for a in _ancestors(n)):
                    found.append(n)
            return found

        return self._once("attention", compute)

    def _layouts(self) -> dict[str, LayerLayout]:
        if self._layout_cache is None:
            trace = self._trace()
            attention = self._attention_modules()
            layouts = {}
            for n in trace.order:
                inside = next((a for a in attention if n.startswith(a + ".")), None)
                layouts[n] = _classify(self._modules[n], trace.shapes.get(n), inside, self._token_meta)
            self._layout_cache = layouts
        return self._layout_cache


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _parent(name: str) -> str:
    return name.rpartition(".")[0]


def _is_activation_module(module: nn.Module) -> bool:
    return isinstance(module, ACTIVATION_TYPES) or type(module).__module__.startswith(_ACTIVATION_PACKAGES)


def _is_attention_module(module: nn.Module) -> bool:
    """Attention modules by type: ``nn.MultiheadAttention``, or a class named like ``*Attention*`` /
    ``*Attn*`` (timm ``Attention``/``WindowAttention``, torchvision ``ShiftedWindowAttention``, Hugging
    Face ``ViTAttention``, …)."""
    if isinstance(module, nn.MultiheadAttention):
        return True
    cls = type(module).__name__.lower()
    return "attention" in cls or "attn" in cls


def _classify(
    module: nn.Module,
    shape: tuple[int, ...] | None,
    inside_attention: str | None,
    token_meta: tuple[int | None, tuple[int, int] | None],
) -> LayerLayout:
    """The layout of one module's output, traced with a batch of ``_TRACE_BATCH`` square images."""
    one = (1, *shape[1:]) if shape else ()
    if inside_attention is not None:
        return LayerLayout("internal", one, note=f"inside attention module {inside_attention!r}")
    if isinstance(module, (nn.Softmax, nn.Softmin)):
        return LayerLayout("internal", one, note="softmax (attention map)")
    if shape is None:
        return LayerLayout("internal", note="output is not a tensor")
    if not shape or shape[0] != _TRACE_BATCH:
        return LayerLayout("internal", one, note="first axis is not the image batch")
    if len(shape) == 2:
        return LayerLayout("pooled", one)
    if len(shape) == 3:
        if isinstance(module, _SEQUENCE_TYPES):
            return LayerLayout("internal", one, note="(N, C, L) sequence")
        count = shape[1]
        prefix, grid = token_meta
        prefix = int(prefix or 0)
        if grid is not None and count == prefix + grid[0] * grid[1]:
            return LayerLayout("tokens", one, grid=grid, prefix_tokens=prefix)
        for p in dict.fromkeys((0, prefix)):
            side = math.isqrt(max(count - p, 0))
            if side > 0 and side * side == count - p:
                return LayerLayout("tokens", one, grid=(side, side), prefix_tokens=p)
        if count <= prefix:
            return LayerLayout("pooled", one, note="prefix tokens only")
        return LayerLayout("tokens", one, grid=None, prefix_tokens=prefix)
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


class _Trace(NamedTuple):
    order: list[str]  # modules in order of their last call
    calls: dict[str, int]  # calls per module in one forward
    last_call: dict[str, int]  # event index at which each module's last call returned
    first_call: dict[str, int]  # event index at which each module's first call started
    leaf_position: dict[str, int]  # leaf calls completed when the module's last call returned
    n_leaf_calls: int
    shapes: dict[str, tuple[int, ...] | None]  # output shape of the last call (None: not a tensor)
    num_classes: int


def _trace_module(model: Model) -> _Trace:
    """One forward pass of a blank batch with hooks on every module, recording the call order and
    every module's output shape (the facts ``Model.layout`` is read from)."""
    events: list[str] = []
    starts: dict[str, int] = {}
    leaf_count = [0]
    leaf_at_return: dict[str, int] = {}
    returned_at: dict[str, int] = {}
    shapes: dict[str, tuple[int, ...] | None] = {}
    clock = [0]
    modules = {n: m for n, m in model.module.named_modules() if n}
    handles = []

    def make_pre_hook(name: str):
        def hook(_m: nn.Module, _a: Any) -> None:
            clock[0] += 1
            starts.setdefault(name, clock[0])

        return hook

    def make_hook(name: str, is_leaf: bool):
        def hook(_m: nn.Module, _a: Any, output: Any) -> None:
            if is_leaf:
                leaf_count[0] += 1
            clock[0] += 1
            events.append(name)
            returned_at[name] = clock[0]
            leaf_at_return[name] = leaf_count[0]
            shapes[name] = tuple(output.shape) if isinstance(output, torch.Tensor) else None

        return hook

    x = torch.zeros(_TRACE_BATCH, 3, model.input_size, model.input_size, device=model.device, dtype=model.dtype)
    try:
        for n, m in modules.items():
            handles.append(m.register_forward_pre_hook(make_pre_hook(n)))
            handles.append(m.register_forward_hook(make_hook(n, len(list(m.children())) == 0)))
        with model.preserved(), torch.no_grad():
            result = model.module(model.normalize(x))
    finally:
        for h in handles:
            h.remove()
    logits = _check_logits(result, model.name)
    calls: dict[str, int] = {}
    for n in events:
        calls[n] = calls.get(n, 0) + 1
    order = sorted(returned_at, key=returned_at.__getitem__)
    return _Trace(order, calls, returned_at, starts, leaf_at_return, leaf_count[0], shapes, int(logits.shape[1]))


@functools.lru_cache(maxsize=32)
def _norm_constants(
    mean: tuple[float, ...], std: tuple[float, ...], device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, 3, 1, 1) mean and std on ``device``, made once: building them from Python floats every
    call is a host→device copy, which synchronises a CUDA optimisation step with the host."""
    with torch.inference_mode(False):
        return (
            torch.tensor(mean, device=device, dtype=dtype).view(1, 3, 1, 1),
            torch.tensor(std, device=device, dtype=dtype).view(1, 3, 1, 1),
        )


def _check_logits(result: Any, name: str) -> torch.Tensor:
    """The (N, C) logits of a forward result: a tensor, an object with ``.logits`` (Hugging Face
    ``ModelOutput``, torchvision ``GoogLeNetOutputs``/``InceptionOutputs``), a mapping with
    ``"logits"``, or a tuple/list whose first item is the logits."""
    if hasattr(result, "logits") and isinstance(result.logits, torch.Tensor):
        result = result.logits
    elif isinstance(result, Mapping) and isinstance(result.get("logits"), torch.Tensor):
        result = result["logits"]
    elif isinstance(result, (tuple, list)) and result and isinstance(result[0], torch.Tensor):
        result = result[0]
    if not isinstance(result, torch.Tensor) or result.dim() != 2:
        got = f"a tensor of shape {tuple(result.shape)}" if isinstance(result, torch.Tensor) else type(result).__name__
        raise ValueError(
            f"{name} must return (N, C) class logits for a (N, 3, H, W) image batch (a tensor, a tuple with "
            f"the logits first, a dict with 'logits' or an object with .logits), but returned {got}. "
            "Wrap it so that forward() returns the logits tensor."
        )
    return result


def _size_of(value: Any) -> int | None:
    """An int side from an int or an (…, H, W) sequence; None otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, (tuple, list)) and value and all(isinstance(v, int) for v in value):
        return int(value[-1])
    return None


def _metadata(module: nn.Module, weights: Any) -> dict[str, Any]:
    """Preprocessing, input size (and whether it is fixed), labels and token facts from the model's
    own metadata: a timm ``pretrained_cfg`` and ``patch_embed``, torchvision ``weights`` or model
    class, or a Hugging Face ``config``. Keys: mean, std, input_size, fixed_input_size, size_source,
    labels, prefix_tokens, patch_grid."""
    meta: dict[str, Any] = {}
    cfg = getattr(module, "pretrained_cfg", None) or getattr(module, "default_cfg", None)
    if isinstance(cfg, dict):
        if "mean" in cfg and "std" in cfg:
            meta["mean"], meta["std"] = tuple(cfg["mean"]), tuple(cfg["std"])
        if "input_size" in cfg:
            meta["input_size"] = int(cfg["input_size"][-1])
            meta["size_source"] = "timm pretrained_cfg"
        if cfg.get("fixed_input_size"):
            meta["fixed_input_size"] = True
    patch_embed = getattr(module, "patch_embed", None)
    img_size = _size_of(getattr(patch_embed, "img_size", None))
    if img_size is not None:  # timm: the patch embedding knows the size the model was built for
        meta["input_size"] = img_size
        meta["size_source"] = "timm patch_embed.img_size"
        dynamic = bool(getattr(module, "dynamic_img_size", False) or getattr(patch_embed, "dynamic_img_pad", False))
        meta["fixed_input_size"] = bool(getattr(patch_embed, "strict_img_size", False)) and not dynamic
        grid = getattr(patch_embed, "grid_size", None)
        if isinstance(grid, (tuple, list)) and len(grid) == 2:
            meta["patch_grid"] = (int(grid[0]), int(grid[1]))
    prefix = getattr(module, "num_prefix_tokens", None)
    if isinstance(prefix, int):
        meta["prefix_tokens"] = prefix
    _torchvision_metadata(module, meta)
    _huggingface_metadata(module, meta)
    if "prefix_tokens" not in meta:
        count = sum(
            int(p.shape[1])
            for n, p in module.named_parameters()
            if n.rpartition(".")[2] in _PREFIX_TOKEN_PARAMS and p.dim() == 3
        )
        if count:
            meta["prefix_tokens"] = count
    if weights is not None:
        transforms = weights.transforms()
        meta["mean"], meta["std"] = tuple(transforms.mean), tuple(transforms.std)
        crop = transforms.crop_size
        meta["input_size"] = int(crop[0] if isinstance(crop, (list, tuple)) else crop)
        meta["size_source"] = "torchvision weights"
        categories = weights.meta.get("categories")
        if categories:
            meta["labels"] = list(categories)
    return meta


def _torchvision_metadata(module: nn.Module, meta: dict[str, Any]) -> None:
    if not type(module).__module__.startswith("torchvision."):
        return
    from torchvision.models import Inception3, VisionTransformer

    if isinstance(module, VisionTransformer):  # forward() asserts the size
        meta["input_size"] = int(module.image_size)
        meta["fixed_input_size"] = True
        meta["size_source"] = "torchvision VisionTransformer.image_size"
        side = int(module.image_size) // int(module.patch_size)
        meta["patch_grid"] = (side, side)
        meta["prefix_tokens"] = 1
    elif isinstance(module, Inception3):
        meta["input_size"] = 299
        meta["size_source"] = "torchvision Inception3 (299 px)"


def _huggingface_metadata(module: nn.Module, meta: dict[str, Any]) -> None:
    config = getattr(module, "config", None)
    if config is None or not type(config).__module__.startswith("transformers."):
        return
    size = _size_of(getattr(config, "image_size", None))
    patch = _size_of(getattr(config, "patch_size", None))
    if size is not None:
        meta["input_size"] = size
        meta["size_source"] = "Hugging Face config.image_size"
        # absolute position embeddings fix the token count (ViT, DeiT); convolutional and windowed
        # models (ResNet, ConvNeXt, Swin) pad or pool and accept any size
        meta["fixed_input_size"] = any(
            n.rpartition(".")[2] == "position_embeddings" and p.dim() == 3 for n, p in module.named_parameters()
        )
        if patch:
            meta["patch_grid"] = (size // patch, size // patch)
    id2label = getattr(config, "id2label", None)
    if isinstance(id2label, Mapping) and id2label:
        labels = [str(id2label.get(i, id2label.get(str(i), f"class {i}"))) for i in range(len(id2label))]
        if not all(lab == f"LABEL_{i}" for i, lab in enumerate(labels)):
            meta["labels"] = labels


def _on_device(module: nn.Module, device: str | torch.device | None) -> nn.Module:
    if device is None:
        return module
    target = torch.device(device)
    current = next(iter(module.parameters()), None)
    if current is not None and current.device == target:
        return module
    import copy

    return copy.deepcopy(module).to(target)


def _layer_shapes(model: Model, hw: tuple[int, int]) -> dict[str, tuple[int, ...]]:
    """Output shape of every sub-module for one blank (1, 3, *hw) image: one forward pass with
    temporary shape-recording hooks, removed afterwards."""
    shapes: dict[str, tuple[int, ...]] = {}

    def make_hook(name: str) -> Any:
        def hook(_m: nn.Module, _a: Any, out: Any) -> None:
            shapes[name] = tuple(out.shape) if isinstance(out, torch.Tensor) else ()

        return hook

    handles = []
    x = torch.zeros(1, 3, *hw, device=model.device, dtype=model.dtype)
    try:
        for name, mod in model.module.named_modules():
            if name:
                handles.append(mod.register_forward_hook(make_hook(name)))
        with model.preserved(), torch.no_grad():
            model.module(model.normalize(x))
    finally:
        for h in handles:
            h.remove()
    return shapes


def as_model(model: nn.Module | Model, *, labels: Sequence[str] | None = None, device: Any = None) -> Model:
    """Return ``model`` as a :class:`Model`, wrapping a bare ``nn.Module`` (with ``labels``).

    A :class:`Model` is returned as is, unless other ``labels`` or another ``device`` are asked for:
    then a new adapter with the same preprocessing is made (the given one is left unchanged).
    """
    if isinstance(model, Model):
        other_device = device is not None and torch.device(device) != model.device
        if not other_device and labels is None:
            return model
        return Model(
            model.user_module,
            mean=model.mean,
            std=model.std,
            input_size=model.input_size,
            labels=labels if labels is not None else model._labels,
            device=device or model.device,
            name=model.name,
            reg_layer=model._reg_layer_override,
            accepts_any_size=model.accepts_any_size,
        )
    if isinstance(model, nn.Module):
        return Model(model, labels=labels, device=device)
    raise TypeError(f"expected an nn.Module or faccent_widget.Model, got {type(model).__name__}")
