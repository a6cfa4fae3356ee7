"""A model's anatomy: what one traced forward pass tells about its layers.

:meth:`Anatomy.trace` runs a blank batch once through an ``nn.Module`` with temporary hooks on every
sub-module (:func:`~faccent_widget.core.hooks.hooked_forward`) and keeps the facts: call order and
counts, every output's shape and layout, the number of classes. The layer lists (activations,
transformer blocks, map, block, stem and spatial layers, regularisation candidates) and the
appendix-H default regularisation layer are derived from those facts once. ``Model`` holds one
anatomy and delegates its layer properties to it; the anatomy knows only the module, its input size
(h, w) and its normalisation, so it imports nothing from ``model.py``.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.parameter import is_lazy

from .hooks import hooked_forward, preserved
from .layouts import TRACE_BATCH, LayerLayout, classify_output, is_activation_module, is_attention_module

__all__ = ["Anatomy", "Trace", "check_logits", "runs_at", "layer_shapes", "as_hw"]

Normalize = Callable[[torch.Tensor], torch.Tensor]


def as_hw(size: int | tuple[int, int]) -> tuple[int, int]:
    """(h, w) of an input size given as a square's side or an (h, w) pair."""
    if isinstance(size, (tuple, list)):
        return int(size[0]), int(size[1])
    return int(size), int(size)


_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


@dataclass(frozen=True)
class Trace:
    """The raw facts of one traced forward pass."""

    order: tuple[str, ...]  # modules in order of their last call
    calls: dict[str, int]  # calls per module in one forward
    last_call: dict[str, int]  # event index at which each module's last call returned
    first_call: dict[str, int]  # event index at which each module's first call started
    leaf_position: dict[str, int]  # leaf calls completed when the module's last call returned
    n_leaf_calls: int
    shapes: dict[str, tuple[int, ...] | None]  # output shape of the last call (None: not a tensor)
    num_classes: int


def module_device_dtype(module: nn.Module) -> tuple[torch.device, torch.dtype]:
    """The device of ``module``'s first parameter or buffer (CPU if none) and the dtype of its first
    floating-point parameter (float32 if none)."""
    device = next((t.device for t in itertools.chain(module.parameters(), module.buffers())), torch.device("cpu"))
    dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)
    return device, dtype


def _blank(module: nn.Module, batch: int, hw: tuple[int, int]) -> torch.Tensor:
    device, dtype = module_device_dtype(module)
    return torch.zeros(batch, 3, *hw, device=device, dtype=dtype)


_PLAIN = (int, float, bool, str, tuple, type(None))


@contextlib.contextmanager
def attributes_restored(module: nn.Module) -> Iterator[None]:
    """Context: the plain Python attributes (numbers, strings, tuples, None) of every sub-module put
    back on exit. Some models change them when run at another size (Hugging Face ``SwinLayer`` shrinks
    its ``window_size`` to the feature map and keeps it, also after raising); a probe at another size
    must not leave the user's module changed."""
    saved = [(m, {k: v for k, v in vars(m).items() if isinstance(v, _PLAIN)}) for m in module.modules()]
    try:
        yield
    finally:
        for m, attrs in saved:
            for k, v in attrs.items():
                if m.__dict__.get(k, v) is not v:
                    m.__dict__[k] = v


def runs_at(module: nn.Module, size: int | tuple[int, int], normalize: Normalize) -> bool:
    """Whether ``module`` runs a blank (1, 3, h, w) image without raising (``size``: a square's side or
    (h, w); a cheap probe of fixed-size models; the module's state is left as it was)."""
    try:
        with preserved(module), attributes_restored(module), torch.no_grad():
            module(normalize(_blank(module, 1, as_hw(size))))
    except Exception:
        return False
    return True


def input_channel_problem(modules: Iterable[tuple[str, nn.Module]], name: str) -> str | None:
    """A one-line message when the model's first convolution does not take 3 (RGB) channels; else None."""
    for layer, m in modules:
        if isinstance(m, (nn.Conv2d, nn.Conv1d, nn.Conv3d)):
            if m.in_channels == 3:
                return None
            return (
                f"{name} takes {m.in_channels}-channel input (its first convolution {layer!r} has "
                f"in_channels={m.in_channels}), but faccent-widget feeds RGB images as (N, 3, H, W) batches; "
                "wrap the model so that it accepts 3 channels (e.g. average them to 1, or add a 4th)"
            )
    return None


def lazy_module_problem(module: nn.Module) -> str | None:
    """A one-line message naming the lazy modules (``nn.LazyLinear``, ``nn.LazyConv2d``, …) whose
    parameters are not materialised yet (they never ran a forward pass); else None. faccent-widget does
    not run that first pass itself: it would give your model its weights (and their class) for you."""
    lazy = [
        f"{name or '(the model)'!r}: {type(m).__name__}"
        for name, m in module.named_modules()
        if any(is_lazy(t) for t in itertools.chain(m.parameters(recurse=False), m.buffers(recurse=False)))
    ]
    if not lazy:
        return None
    names = ", ".join(lazy[:5]) + (f", … {len(lazy) - 5} more" if len(lazy) > 5 else "")
    return (
        f"the model has uninitialised lazy modules ({names}); run one forward pass on an input of the right size first"
    )


def trace_module(
    module: nn.Module,
    input_size: int | tuple[int, int],
    normalize: Normalize,
    name: str,
    modules: Mapping[str, nn.Module],
) -> Trace:
    """One forward pass of a blank batch of size ``input_size`` (a side or (h, w)) with hooks on every
    sub-module, recording the call order and every output's shape (the facts layouts are read from)."""
    starts: dict[str, int] = {}
    calls: dict[str, int] = {}
    returned_at: dict[str, int] = {}
    leaf_at_return: dict[str, int] = {}
    shapes: dict[str, tuple[int, ...] | None] = {}
    leaves = {n for n, m in modules.items() if n and next(iter(m.children()), None) is None}
    clock = [0, 0]  # events, leaf calls

    def before(n: str) -> None:
        clock[0] += 1
        starts.setdefault(n, clock[0])

    def after(n: str, output: Any) -> None:
        clock[0] += 1
        clock[1] += n in leaves
        calls[n] = calls.get(n, 0) + 1
        returned_at[n], leaf_at_return[n] = clock[0], clock[1]
        shapes[n] = tuple(output.shape) if isinstance(output, torch.Tensor) else None

    names = [n for n in modules if n]
    x = _blank(module, TRACE_BATCH, as_hw(input_size))
    try:
        with preserved(module), torch.no_grad():
            result = hooked_forward(
                module,
                normalize(x),
                hooks=dict.fromkeys(names, after),
                pre_hooks=dict.fromkeys(names, before),
                modules=modules,
            )
    except Exception as err:
        problem = input_channel_problem(modules.items(), name)
        if problem:
            raise ValueError(problem) from err
        raise
    logits = check_logits(result.output, name)
    order = tuple(sorted(returned_at, key=returned_at.__getitem__))
    return Trace(order, calls, returned_at, starts, leaf_at_return, clock[1], shapes, int(logits.shape[1]))


def layer_shapes(
    module: nn.Module, hw: tuple[int, int], normalize: Normalize, modules: Mapping[str, nn.Module]
) -> dict[str, tuple[int, ...]]:
    """Output shape of every sub-module for one blank (1, 3, *hw) image (``()`` for non-tensors)."""
    shapes: dict[str, tuple[int, ...]] = {}

    def record(n: str, out: Any) -> None:
        shapes[n] = tuple(out.shape) if isinstance(out, torch.Tensor) else ()

    with preserved(module), attributes_restored(module), torch.no_grad():
        hooked_forward(
            module,
            normalize(_blank(module, 1, hw)),
            hooks=dict.fromkeys([n for n in modules if n], record),
            modules=modules,
        )
    return shapes


def check_logits(result: Any, name: str) -> torch.Tensor:
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


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


@dataclass(frozen=True, eq=False)
class Anatomy:
    """The facts of one traced pass of ``module`` at ``input_hw`` = (h, w) and the layer lists derived
    from them (each computed once, on first use). Names are as in ``named_modules()``; lists are in
    execution order (by each module's last call). Build it with :meth:`of`."""

    module: nn.Module
    modules: Mapping[str, nn.Module]
    input_hw: tuple[int, int]
    normalize: Normalize
    trace: Trace
    prefix_tokens: int | None = None
    patch_grid: tuple[int, int] | None = None
    _shapes: dict[tuple[int, int], dict[str, tuple[int, ...]]] = field(default_factory=dict, repr=False)

    @classmethod
    def of(
        cls,
        module: nn.Module,
        input_size: int | tuple[int, int],
        normalize: Normalize,
        *,
        name: str = "",
        prefix_tokens: int | None = None,
        patch_grid: tuple[int, int] | None = None,
        modules: Mapping[str, nn.Module] | None = None,
    ) -> Anatomy:
        """Trace ``module`` once on a blank batch of size ``input_size`` (a square's side or (h, w);
        normalised by ``normalize``); ``prefix_tokens``/``patch_grid`` are the metadata's token facts at
        that size."""
        table = modules if modules is not None else dict(module.named_modules())
        hw = as_hw(input_size)
        trace = trace_module(module, hw, normalize, name or type(module).__name__, table)
        return cls(module, table, hw, normalize, trace, prefix_tokens, patch_grid)

    @property
    def input_size(self) -> int:
        """The longer side of :attr:`input_hw` (its side for a square input)."""
        return max(self.input_hw)

    # ------------------------------------------------------------------ layouts
    @functools.cached_property
    def attention_modules(self) -> list[str]:
        """Outermost attention modules (names), in ``named_modules`` order."""
        found: list[str] = []
        for n, m in self.modules.items():
            if n and is_attention_module(m) and not any(a in found for a in _ancestors(n)):
                found.append(n)
        return found

    @functools.cached_property
    def layouts(self) -> dict[str, LayerLayout]:
        """The layout of every module called in the pass."""
        attention = self.attention_modules
        out = {}
        for n in self.trace.order:
            inside = next((a for a in attention if n.startswith(a + ".")), None)
            out[n] = classify_output(
                self.modules[n], self.trace.shapes.get(n), inside, self.prefix_tokens, self.patch_grid
            )
        return out

    def layout(self, name: str) -> LayerLayout:
        """The layout of ``name`` (internal when it is never called)."""
        return self.layouts.get(name) or LayerLayout("internal", note="not called in a forward pass")

    def _maps(self, names: Iterable[str], kinds: tuple[str, ...] = ("spatial", "channels_last", "tokens")) -> list[str]:
        return [n for n in names if self.layouts[n].is_map and self.layouts[n].kind in kinds]

    # ------------------------------------------------------------------ layer lists
    @functools.cached_property
    def activation_layers(self) -> list[str]:
        """Activation modules (ReLU, ReLU6, SiLU, GELU, Hugging Face/timm activation classes, …) in
        execution order, whatever their layout."""
        return [n for n in self.trace.order if is_activation_module(self.modules[n])]

    @functools.cached_property
    def map_layers(self) -> list[str]:
        """Layers whose output has a 2-D grid of image positions (spatial, channels-last, or tokens
        with a patch grid; more than one position): the layers Grad-CAM and activation maps can use."""
        return self._maps(self.trace.order)

    @functools.cached_property
    def spatial_layers(self) -> list[str]:
        """Layers whose output is an (N, C, H, W) map with more than one position."""
        return self._maps(self.trace.order, ("spatial",))

    @functools.cached_property
    def transformer_blocks(self) -> list[str]:
        """Transformer blocks: the modules holding an (outermost) attention module whose own output is
        tokens or channels-last (timm ``blocks.3``, torchvision ``encoder.layers.encoder_layer_3``,
        Hugging Face ``vit.layers.3``, Swin's ``layers.1.blocks.0``). Empty for convolutional networks."""
        parents = {n.rpartition(".")[0] for n in self.attention_modules if "." in n}
        return [n for n in self._maps(self.trace.order, ("tokens", "channels_last")) if n in parents]

    @functools.cached_property
    def block_stand_ins(self) -> list[str]:
        """For transformer blocks whose output is not a tensor (Hugging Face ``SwinLayer`` returns a
        tuple): the block's post-attention norm, the first norm module inside it called after its
        attention returned — the residual stream on the main path, not an attention or MLP branch."""
        order = self.trace.order
        out = []
        for attention in self.attention_modules:
            block = attention.rpartition(".")[0]
            if not block or self.trace.shapes.get(block) is not None or attention not in self.trace.last_call:
                continue
            end = self.trace.last_call[attention]
            after = [
                n
                for n in order
                if n.startswith(block + ".")
                and self.trace.first_call.get(n, -1) > end
                and "norm" in type(self.modules[n]).__name__.lower()
                and self.layouts[n].is_map
            ]
            if after:
                out.append(min(after, key=self.trace.first_call.__getitem__))
        return sorted(dict.fromkeys(out), key=self.trace.last_call.__getitem__)

    def attention_input_layer(self, block: str) -> str | None:
        """The pre-attention norm of transformer block ``block``: the last map layer inside it that
        returns before its attention module starts (timm ``norm1``, torchvision ``ln_1``, Hugging Face
        ``layernorm_before``); None when there is none."""
        starts = [
            self.trace.first_call[a]
            for a in self.attention_modules
            if a.startswith(block + ".") and a in self.trace.first_call
        ]
        if not starts:
            return None
        before = [n for n in self.map_layers if n.startswith(block + ".") and self.trace.last_call[n] < min(starts)]
        return before[-1] if before else None

    @functools.cached_property
    def block_layers(self) -> list[str]:
        """Block outputs: the transformer blocks, and every module with a map output (see
        ``map_layers``) that is not a plain container and whose ancestors (below the root) are all plain
        containers (Sequential/ModuleList/ModuleDict). E.g. GoogLeNet's ``inception3a``, ResNet's
        ``layer1.0``, timm ViT's ``blocks.3``. Never internal or pooled outputs."""
        transformer = set(self.transformer_blocks)
        return [
            n
            for n in self.map_layers
            if n in transformer
            or (
                not isinstance(self.modules[n], _CONTAINERS)
                and all(isinstance(self.modules[a], _CONTAINERS) for a in _ancestors(n))
            )
        ]

    @functools.cached_property
    def stem_layers(self) -> list[str]:
        """Layers that finish before the first inner block starts: the stem of a CNN (ResNet's
        ``conv1``…``maxpool``), the patch embedding of a transformer (``patch_embed``, ``pos_drop``, …).
        An inner block is a transformer block or a block output inside a container. Empty when the
        model has no inner blocks."""
        transformer = set(self.transformer_blocks)
        inner = [
            n
            for n in self.block_layers
            if n in transformer or any(isinstance(self.modules[a], _CONTAINERS) for a in _ancestors(n))
        ]
        if not inner:
            return []
        start = min(self.trace.first_call[n] for n in inner)
        return [n for n in self.trace.order if self.trace.last_call[n] < start]

    @functools.cached_property
    def reg_layer_candidates(self) -> list[str]:
        """Layers offered for regularisation, never internal or pooled ones.

        * transformers (models with ``transformer_blocks``): the block outputs (``block_layers``)
          after the patch embedding (``stem_layers``);
        * transformers whose blocks return tuples (Hugging Face Swin): ``block_stand_ins``;
        * convolutional networks: the activation modules whose output is a spatial or channels-last
          map; for models whose activations are functional (no activation modules, e.g.
          torchvision's GoogLeNet), the block outputs; else every map layer.
        """
        if self.transformer_blocks:
            stem = set(self.stem_layers)
            return [n for n in self.block_layers if n not in stem] or list(self.block_layers)
        if self.block_stand_ins:
            return list(self.block_stand_ins)
        acts = self._maps(self.activation_layers, ("spatial", "channels_last"))
        return acts or list(self.block_layers) or list(self.map_layers)

    def default_reg_layer(self, name: str = "model") -> str:
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
        * hierarchical transformers (Swin): the nearest transformer block output (channels-last);
          Hugging Face Swin, whose blocks return tuples: the nearest block's post-attention norm.
        """
        candidates = self.reg_layer_candidates
        if not candidates:
            raise ValueError(f"{name} has no layer with a spatial, channels-last or token output to regularise at")
        stem = set(self.stem_layers)
        pool = [n for n in candidates if n not in stem] or candidates
        target = 0.25 * self.trace.n_leaf_calls
        return min(pool, key=lambda n: abs(self.trace.leaf_position[n] - target))

    def layer_depth(self, name: str) -> float:
        """Relative depth in [0, 1] at which ``name`` produces its output."""
        return self.trace.leaf_position[name] / max(1, self.trace.n_leaf_calls)

    # ------------------------------------------------------------------ shapes at other sizes
    def output_shape(self, name: str, hw: tuple[int, int]) -> tuple[int, ...]:
        """Shape of ``name``'s output for one blank image of size ``hw``; one forward per size, cached."""
        if hw not in self._shapes:
            self._shapes[hw] = layer_shapes(self.module, hw, self.normalize, self.modules)
        return self._shapes[hw].get(name, ())

    def is_spatial_map(self, name: str, hw: tuple[int, int]) -> bool:
        """Whether ``name`` outputs a map of more than one image position at image size ``hw``."""
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
