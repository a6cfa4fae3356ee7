"""``Model``: one clean way to run any image classifier ``nn.Module``.

The adapter owns preprocessing (mean/std or input range, input size), named layers, truncated
feature extraction through temporary forward hooks, labels and prediction. It never mutates the
wrapped module: hooks it adds are removed in ``finally``; train/eval flags and ``requires_grad``
flags are restored after every call, also after an exception.

What the model's metadata says lives in :class:`~faccent_widget.core.model_meta.ModelMeta`; what one
traced pass tells about its layers (layouts, layer lists, the default regularisation layer) in
:class:`~faccent_widget.core.anatomy.Anatomy`. ``Model`` runs the module and delegates to both.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import functools
import itertools
import warnings
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from ..images import ImageInput, load_image, resize_image
from .anatomy import Anatomy, check_logits, input_channel_problem, lazy_module_problem, runs_at
from .hooks import StopForward, hooked_forward, preserved
from .labels import imagenet_labels, resolve_class_index
from .layouts import ACTIVATION_TYPES, LayerLayout
from .model_meta import ModelMeta

__all__ = [
    "Model",
    "ModelMeta",
    "Prediction",
    "LayerNotFoundError",
    "LayerLayout",
    "ACTIVATION_TYPES",
    "imagenet_labels",
    "as_model",
]


_CPU = torch.device("cpu")


class LayerNotFoundError(KeyError):
    """An unknown layer name; the message lists close matches."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class Prediction(NamedTuple):
    """One entry of ``Model.predict``."""

    index: int  # type: ignore[assignment]  # shadows tuple.index on purpose: the class index
    label: str
    prob: float


class Model:
    """Wrap an image classifier for feature accentuation.

    Args:
        module: any ``nn.Module`` mapping a (N, 3, H, W) batch to (N, C) logits. Lazy modules
            (``nn.LazyLinear``, …) must have run once: their weights are not made here.
        mean, std: per-channel normalisation applied to [0, 1] images. Defaults come from a timm
            ``pretrained_cfg`` or torchvision ``weights`` when known, else ImageNet's.
        input_range: alternative to mean/std, e.g. ``(0, 255)`` or ``(-1, 1)``.
        input_size: the model input: a square's side, or (height, width) (default from the metadata, see
            :class:`~faccent_widget.core.model_meta.ModelMeta`; else 224). For a fixed-size model
            another value is an error naming its size. Kept as :attr:`input_hw`; :attr:`input_size` is
            its side (the longer side of a non-square input).
        accepts_any_size: whether the model runs at input sizes other than ``input_size``. Default:
            what the metadata says, else one blank forward pass at 0.7 × ``input_size`` decides (a
            model that raises there, e.g. Hugging Face Swin, is fixed-size; see
            :meth:`ModelMeta.resolve_size`). Fixed-size models always get crops of ``input_hw``, which
            may be non-square (e.g. a timm ViT built with ``img_size=(160, 256)``).
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
        input_size: int | tuple[int, int] | None = None,
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
        lazy = lazy_module_problem(module)  # before anything runs it: a clear line, not torch's deep error
        if lazy:
            raise ValueError(lazy)
        if isinstance(labels, (str, bytes)) or (labels is not None and not all(isinstance(x, str) for x in labels)):
            raise TypeError("labels must be a list of strings, one per class (e.g. ['cat', 'dog'])")
        self.user_module = module
        self.module = _on_device(module, device)
        self.name = name or type(module).__name__
        self.meta = meta = ModelMeta.of(module, weights)
        self.mean, self.std = meta.normalisation(mean, std, input_range)
        self._modules = dict(self.module.named_modules())
        hw, fixed = meta.resolve_size(input_size, accepts_any_size, self.name, self._runs_at)
        if fixed is None:  # it fails at every size: name a channel mismatch now, else its own error comes later
            problem = input_channel_problem(self._modules.items(), self.name)
            if problem:
                raise ValueError(problem)
        #: the model input (height, width); square unless a fixed-size model was built non-square
        self.input_hw: tuple[int, int] = hw
        #: the input's side: for a non-square input (``input_hw``) its longer side, which ``crop_size`` accepts
        self.input_size: int = max(hw)
        self.accepts_any_size = not fixed
        self._labels = list(labels) if labels is not None else (list(meta.labels) if meta.labels else None)
        self._labels_checked = False
        self._reg_layer_override = reg_layer
        self._anatomy: Anatomy | None = None
        if reg_layer is not None:
            self.resolve_layer(reg_layer)

    def _runs_at(self, hw: tuple[int, int]) -> bool:
        return runs_at(self.module, hw, self.normalize)

    # ------------------------------------------------------------------ basic properties
    def __repr__(self) -> str:
        h, w = self.input_hw
        size = f"input_size={h if h == w else self.input_hw}" + ("" if self.accepts_any_size else " (fixed)")
        return f"Model({self.name}, {size}, mean={self.mean}, std={self.std})"

    @property
    def anatomy(self) -> Anatomy:
        """What one traced forward pass at ``input_hw`` tells about the layers (traced on first use)."""
        if self._anatomy is None:
            native = self.input_hw == self.meta.input_size
            self._anatomy = Anatomy.of(
                self.module,
                self.input_hw,
                self.normalize,
                name=self.name,
                prefix_tokens=self.meta.prefix_tokens,
                patch_grid=self.meta.patch_grid if native else None,
                modules=self._modules,
            )
        return self._anatomy

    @property
    def device(self) -> torch.device:
        """Device the model runs on (of its first parameter or buffer; CPU if it has none)."""
        return next((t.device for t in itertools.chain(self.module.parameters(), self.module.buffers())), _CPU)

    @property
    def dtype(self) -> torch.dtype:
        """Floating-point dtype of the model's parameters (inputs are cast to it; float32 if none)."""
        return next((p.dtype for p in self.module.parameters() if p.is_floating_point()), torch.float32)

    @property
    def layer_names(self) -> list[str]:
        """Names of all sub-modules, as ``named_modules()`` gives them (the root excluded)."""
        return [n for n in self._modules if n]

    @property
    def num_classes(self) -> int:
        """Number of logits (from the traced pass)."""
        return self.anatomy.trace.num_classes

    @property
    def labels(self) -> list[str]:
        """Class names: the user's, the weights', ImageNet's for 1000-way models, else ``class i``.

        Given labels are checked once against the number of logits (``ValueError`` on a mismatch)."""
        if self._labels is None:
            n = self.num_classes
            self._labels = imagenet_labels() if n == 1000 else [f"class {i}" for i in range(n)]
        elif not self._labels_checked:
            n = self.num_classes
            if len(self._labels) != n:
                raise ValueError(
                    f"{len(self._labels)} labels were given but {self.name} outputs {n} logits; pass one label per class"  # noqa: E501
                )
            self._labels_checked = True
        return self._labels

    # ------------------------------------------------------------------ layers (from the anatomy)
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

    def layout(self, name: str) -> LayerLayout:
        """The :class:`~faccent_widget.core.layouts.LayerLayout` of layer ``name``'s output at the
        model's input size: spatial, channels-last, tokens, pooled or internal (found by the traced pass,
        see :mod:`faccent_widget.core.layouts` and :attr:`anatomy`)."""
        return self.anatomy.layout(self.resolve_layer(name))

    @property
    def activation_layers(self) -> list[str]:
        """Activation modules in execution order (:attr:`Anatomy.activation_layers`)."""
        return list(self.anatomy.activation_layers)

    @property
    def transformer_blocks(self) -> list[str]:
        """Transformer blocks in execution order (:attr:`Anatomy.transformer_blocks`); empty for CNNs."""
        return list(self.anatomy.transformer_blocks)

    def attention_input_layer(self, block: str) -> str | None:
        """The pre-attention norm of transformer block ``block`` (:meth:`Anatomy.attention_input_layer`)."""
        return self.anatomy.attention_input_layer(self.resolve_layer(block))

    @property
    def map_layers(self) -> list[str]:
        """Layers with a 2-D grid of image positions, for Grad-CAM and maps (:attr:`Anatomy.map_layers`)."""
        return list(self.anatomy.map_layers)

    @property
    def block_layers(self) -> list[str]:
        """Block outputs in execution order (:attr:`Anatomy.block_layers`)."""
        return list(self.anatomy.block_layers)

    @property
    def stem_layers(self) -> list[str]:
        """The stem / patch embedding: layers before the first inner block (:attr:`Anatomy.stem_layers`)."""
        return list(self.anatomy.stem_layers)

    @property
    def spatial_layers(self) -> list[str]:
        """Layers whose output is an (N, C, H, W) map with more than one position, in execution order."""
        return list(self.anatomy.spatial_layers)

    @property
    def reg_layer_candidates(self) -> list[str]:
        """Layers offered for regularisation, in execution order (:attr:`Anatomy.reg_layer_candidates`)."""
        return list(self.anatomy.reg_layer_candidates)

    @property
    def default_reg_layer(self) -> str:
        """The default regularisation layer: appendix H's rule (:meth:`Anatomy.default_reg_layer`), unless
        a ``reg_layer`` was given to the constructor."""
        if self._reg_layer_override is not None:
            return self._reg_layer_override
        return self.anatomy.default_reg_layer(self.name)

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
        return self.anatomy.layer_depth(self.resolve_layer(name))

    def execution_order(self, layers: Iterable[str]) -> list[str]:
        """Sort layer names by when they produce their (last) output."""
        last_call = self.anatomy.trace.last_call
        resolved = [self.resolve_layer(n) for n in layers]
        missing = [n for n in resolved if n not in last_call]
        if missing:
            raise ValueError(f"layers {missing} are never called in a forward pass of {self.name}")
        return sorted(resolved, key=lambda n: last_call[n])

    def output_shape(self, name: str, hw: tuple[int, int] | None = None) -> tuple[int, ...]:
        """Shape of layer ``name``'s output for one blank image of size ``hw`` (default: the model
        input); ``()`` when the output is not a tensor. One traced forward per size, cached."""
        return self.anatomy.output_shape(self.resolve_layer(name), self._hw(hw))

    def is_spatial_map(self, name: str, hw: tuple[int, int] | None = None) -> bool:
        """Whether ``name`` outputs a map of image positions (spatial, channels-last, or tokens with a
        patch grid; see :meth:`layout`) with more than one position at image size ``hw``."""
        return self.anatomy.is_spatial_map(self.resolve_layer(name), self._hw(hw))

    def _hw(self, hw: tuple[int, int] | None) -> tuple[int, int]:
        return (int(hw[0]), int(hw[1])) if hw is not None else self.input_hw

    def crop_size(self, requested: int | None = None, scale: float = 1.0) -> int:
        """The side of the square crops fed to the model in a run (their (h, w): :meth:`crop_hw`). A fixed-size
        model (``accepts_any_size`` False) always gets ``input_size`` (crops of ``input_hw``); asking for another
        size is a ``ValueError``. Other models get ``requested`` when given, else ``scale`` × their native
        ``input_size`` rounded to a multiple of 8 (at least 16): the presets scale from the model's own size
        (``preview`` 0.7×, ``paper`` 1×)."""
        if not self.accepts_any_size:
            if requested is not None and int(requested) != self.input_size:
                h, w = self.input_hw
                raise ValueError(
                    f"{self.name} only accepts {h}×{w} inputs (a fixed input size, height×width), but "
                    f"input_size={requested} was asked; leave input_size unset (None) to use {h}×{w}"
                )
            return self.input_size
        if requested is not None:
            return int(requested)
        return max(16, 8 * round(self.input_size * float(scale) / 8))

    def crop_hw(self, size: int) -> tuple[int, int]:
        """(h, w) of the crops of side ``size`` (:meth:`crop_size`): ``input_hw`` for a fixed-size model."""
        return (int(size), int(size)) if self.accepts_any_size else self.input_hw

    def with_module(self, module: nn.Module, *, name: str | None = None) -> Model:
        """A new adapter for ``module`` with this one's preprocessing, labels and reg-layer override
        (e.g. for a randomised copy of the network)."""
        return self._rebuild(module, name=name or self.name)

    def _rebuild(
        self, module: nn.Module, *, name: str, labels: Sequence[str] | None = None, device: Any = None
    ) -> Model:
        """The one copy of this adapter's settings onto a new one (``with_module`` and ``as_model``)."""
        return Model(
            module,
            mean=self.mean,
            std=self.std,
            input_size=self.input_hw,
            accepts_any_size=self.accepts_any_size,
            labels=labels if labels is not None else self._labels,
            reg_layer=self._reg_layer_override,
            device=device,
            name=name,
        )

    # ------------------------------------------------------------------ state guarding
    def preserved(self, *, freeze: bool = True) -> contextlib.AbstractContextManager[None]:
        """Context: eval mode (and, with ``freeze``, parameters not requiring grad) inside; every
        module's ``training`` flag and every parameter's ``requires_grad`` restored on exit."""
        return preserved(self.module, freeze=freeze)

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
        trace = self.anatomy.trace
        stop_at = None if logits else max(names, key=lambda n: trace.last_call.get(n, -1))
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a (N, 3, H, W) batch in [0, 1], got shape {tuple(x.shape)}")
        x = x.to(device=self.device, dtype=self.dtype)
        inp = self.normalize(x) if normalize else x
        out: dict[str, torch.Tensor] = {}
        seen: dict[str, int] = {}
        expected = trace.calls

        def keep(name: str, output: Any) -> None:
            seen[name] = count = seen.get(name, 0) + 1
            if name == stop_at and count >= expected.get(name, 1):
                out[name] = output
                raise StopForward
            out[name] = output.clone() if isinstance(output, torch.Tensor) else output

        with self.preserved(freeze=freeze):
            result = hooked_forward(self.module, inp, hooks=dict.fromkeys(names, keep), modules=self._modules)
        if logits:
            out["logits"] = check_logits(result.output, self.name)
        return out

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C) logits for a [0, 1] batch."""
        return self.features(x, logits=True)["logits"]

    def to_input(self, images: ImageInput | Sequence[ImageInput] | torch.Tensor) -> torch.Tensor:
        """The model view: images resized (bilinear, antialiased, aspect not kept) to the model's input
        :attr:`input_hw`, a (N, 3, h, w) float batch in [0, 1]; a (N, 3, H, W) float tensor stays on its device,
        other inputs (anything ``load_image`` accepts, or a list) load on the CPU. Scores, Grad-CAM and
        validation all see images through this one resize."""
        size = self.input_hw
        if isinstance(images, torch.Tensor) and images.dim() == 4:
            return resize_image(images.detach().float(), size)
        items: list[Any] = list(images) if isinstance(images, (list, tuple)) else [images]
        if not items:
            raise ValueError("no images given: pass an image, a (N, 3, H, W) tensor or a non-empty list")
        return torch.stack([load_image(img, size=size) for img in items])

    def view(self, images: ImageInput | Sequence[ImageInput] | torch.Tensor) -> torch.Tensor:
        """Deprecated name of :meth:`to_input` (``view`` also names the widget's view of a tile)."""
        warnings.warn("Model.view is deprecated; use Model.to_input", DeprecationWarning, stacklevel=2)
        return self.to_input(images)

    def prepare(self, image: ImageInput) -> torch.Tensor:
        """One image in the model view: a (1, 3, h, w) batch in [0, 1] (see :meth:`to_input`)."""
        return self.to_input(image if not isinstance(image, (list, tuple)) else [image])[:1]

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
        return resolve_class_index(self.labels, target, self.name)


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


def _on_device(module: nn.Module, device: str | torch.device | None) -> nn.Module:
    if device is None:
        return module
    target = torch.device(device)
    current = next(iter(module.parameters()), None)
    if current is not None and current.device == target:
        return module
    return copy.deepcopy(module).to(target)


def as_model(model: nn.Module | Model, *, labels: Sequence[str] | None = None, device: Any = None) -> Model:
    """Return ``model`` as a :class:`Model`, wrapping a bare ``nn.Module`` (with ``labels``).

    A :class:`Model` is returned as is, unless other ``labels`` or another ``device`` are asked for:
    then a new adapter with the same preprocessing is made (the given one is left unchanged).
    """
    if isinstance(model, Model):
        other_device = device is not None and torch.device(device) != model.device
        if not other_device and labels is None:
            return model
        return model._rebuild(model.user_module, name=model.name, labels=labels, device=device or model.device)
    if isinstance(model, nn.Module):
        return Model(model, labels=labels, device=device)
    raise TypeError(f"expected an nn.Module or faccent_widget.Model, got {type(model).__name__}")
