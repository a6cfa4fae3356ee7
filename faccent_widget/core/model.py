"""``Model``: one clean way to run any image classifier ``nn.Module``.

The adapter owns preprocessing (mean/std or input range, input size), named layers, truncated
feature extraction through temporary forward hooks, labels and prediction. It never mutates the
wrapped module: hooks it adds are removed in ``finally``; train/eval flags and ``requires_grad``
flags are restored after every call, also after an exception.
"""

from __future__ import annotations

import contextlib
import difflib
import operator
from typing import Any, Iterable, Iterator, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..images import ImageInput, load_image, resize_image

__all__ = ["Model", "Prediction", "LayerNotFoundError", "ACTIVATION_TYPES", "imagenet_labels", "as_model"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Module types counted as "activation layers" for the default regularisation layer.
ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.LeakyReLU, nn.ELU, nn.Hardswish, nn.Mish, nn.PReLU,
)
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


class LayerNotFoundError(KeyError):
    """An unknown layer name; the message lists close matches."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class Prediction(NamedTuple):
    """One entry of ``Model.predict``."""

    index: int
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
        input_size: side of the square model input (default from the metadata, else 224).
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
        self.input_size = int(input_size or meta.get("input_size", 224))
        self._labels = list(labels) if labels is not None else meta.get("labels")
        self._reg_layer_override = reg_layer
        self._trace_cache: _Trace | None = None
        self._shape_cache: dict[tuple[int, int], dict[str, tuple[int, ...]]] = {}
        self._modules = dict(self.module.named_modules())
        if reg_layer is not None:
            self.resolve_layer(reg_layer)

    # ------------------------------------------------------------------ basic properties
    def __repr__(self) -> str:
        return f"Model({self.name}, input_size={self.input_size}, mean={self.mean}, std={self.std})"

    @property
    def device(self) -> torch.device:
        """Device the model runs on (of its first parameter or buffer; CPU if it has none)."""
        for t in self.module.parameters():
            return t.device
        for t in self.module.buffers():
            return t.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
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
                    f"{len(self._labels)} labels were given but {self.name} outputs {n} logits; pass one label per class"
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
        """Activation modules (ReLU, ReLU6, SiLU, GELU, …) in execution order."""
        trace = self._trace()
        return [n for n in trace.order if isinstance(self._modules[n], ACTIVATION_TYPES)]

    @property
    def block_layers(self) -> list[str]:
        """Block outputs in execution order: spatial non-container modules whose ancestors (below the
        root) are all plain containers (Sequential/ModuleList/ModuleDict). E.g. GoogLeNet's
        ``inception3a``, ResNet's ``layer1.0``."""
        trace = self._trace()
        blocks = []
        for n in trace.order:
            mod = self._modules[n]
            if isinstance(mod, _CONTAINERS) or not trace.spatial.get(n, False):
                continue
            if all(isinstance(self._modules[a], _CONTAINERS) for a in _ancestors(n)):
                blocks.append(n)
        return blocks

    @property
    def spatial_layers(self) -> list[str]:
        """Layers whose output is a (N, C, H, W) tensor, in execution order."""
        trace = self._trace()
        return [n for n in trace.order if trace.spatial.get(n, False)]

    @property
    def reg_layer_candidates(self) -> list[str]:
        """Layers offered for regularisation, in execution order: the activation modules with a
        spatial output; for models whose activations are functional (no activation modules, e.g.
        torchvision's GoogLeNet), the block outputs (``block_layers``); else every spatial layer."""
        trace = self._trace()
        return [n for n in self.activation_layers if trace.spatial.get(n, False)] or self.block_layers \
            or self.spatial_layers

    @property
    def default_reg_layer(self) -> str:
        """The default regularisation layer (appendix H of the paper).

        Rule: among the activation modules (ReLU/ReLU6/SiLU/GELU/…) with a spatial output, the one
        whose output is produced closest to 1/4 of the model's depth, where depth is measured in
        leaf-module calls of one forward pass. Models whose activations are functional (no
        activation modules, e.g. torchvision's GoogLeNet) use block outputs (``block_layers``)
        instead. A ``reg_layer`` given to the constructor wins.
        """
        if self._reg_layer_override is not None:
            return self._reg_layer_override
        trace = self._trace()
        candidates = self.reg_layer_candidates
        if not candidates:
            raise ValueError(f"{self.name} has no layer with a spatial (N, C, H, W) output to regularise at")
        target = 0.25 * trace.n_leaf_calls
        return min(candidates, key=lambda n: abs(trace.leaf_position[n] - target))

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
        """Whether ``name`` outputs an (N, C, h, w) map with more than one position at image size ``hw``."""
        shape = self.output_shape(name, hw)
        return len(shape) == 4 and shape[-1] * shape[-2] > 1

    def with_module(self, module: nn.Module, *, name: str | None = None) -> "Model":
        """A new adapter for ``module`` with this one's preprocessing, labels and reg-layer override
        (e.g. for a randomised copy of the network)."""
        return Model(module, mean=self.mean, std=self.std, input_size=self.input_size, labels=self._labels,
                     reg_layer=self._reg_layer_override, name=name or self.name)

    # ------------------------------------------------------------------ state guarding
    @contextlib.contextmanager
    def preserved(self, *, freeze: bool = True) -> Iterator[None]:
        """Context: eval mode (and, with ``freeze``, parameters not requiring grad) inside; every
        module's ``training`` flag and every parameter's ``requires_grad`` restored on exit."""
        modes = [(m, m.training) for m in self.module.modules()]
        flags = [(p, p.requires_grad) for p in self.module.parameters()]
        try:
            self.module.eval()
            if freeze:
                for p, _ in flags:
                    p.requires_grad_(False)
            yield
        finally:
            for m, mode in modes:
                m.training = mode
            for p, flag in flags:
                p.requires_grad_(flag)

    # ------------------------------------------------------------------ running
    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Map a [0, 1] batch to the model's input normalisation."""
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std

    def features(
        self,
        x: torch.Tensor,
        layers: Iterable[str] = (),
        *,
        logits: bool = False,
        normalize: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Activations of exactly ``layers`` (and ``"logits"`` when asked) for a [0, 1] batch ``x``.

        Hooks go only on the requested layers and are removed afterwards. Without ``logits`` the
        forward pass stops right after the deepest requested layer. Gradients flow to ``x``; the
        model's parameters are not trained (their ``requires_grad`` is restored afterwards).
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
            with self.preserved():
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
        items = list(images) if isinstance(images, (list, tuple)) else [images]
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
    def _trace(self) -> "_Trace":
        if self._trace_cache is None:
            self._trace_cache = _trace_module(self)
        return self._trace_cache


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


class _Trace(NamedTuple):
    order: list[str]  # modules in order of their last call
    calls: dict[str, int]  # calls per module in one forward
    last_call: dict[str, int]  # index (in all calls) of each module's last call
    leaf_position: dict[str, int]  # leaf calls completed when the module's last call returned
    n_leaf_calls: int
    spatial: dict[str, bool]
    num_classes: int


def _trace_module(model: Model) -> _Trace:
    """One forward pass of a blank input with hooks on every module, recording the call order."""
    events: list[str] = []
    leaf_count = [0]
    leaf_at_return: dict[str, int] = {}
    spatial: dict[str, bool] = {}
    modules = {n: m for n, m in model.module.named_modules() if n}
    handles = []

    def make_hook(name: str, is_leaf: bool):
        def hook(_m: nn.Module, _a: Any, output: Any) -> None:
            if is_leaf:
                leaf_count[0] += 1
            events.append(name)
            leaf_at_return[name] = leaf_count[0]
            spatial[name] = isinstance(output, torch.Tensor) and output.dim() == 4

        return hook

    x = torch.zeros(1, 3, model.input_size, model.input_size, device=model.device, dtype=model.dtype)
    try:
        for n, m in modules.items():
            handles.append(m.register_forward_hook(make_hook(n, len(list(m.children())) == 0)))
        with model.preserved(), torch.no_grad():
            result = model.module(model.normalize(x))
    finally:
        for h in handles:
            h.remove()
    logits = _check_logits(result, model.name)
    calls: dict[str, int] = {}
    last_call: dict[str, int] = {}
    for i, n in enumerate(events):
        calls[n] = calls.get(n, 0) + 1
        last_call[n] = i
    order = sorted(last_call, key=last_call.__getitem__)
    return _Trace(order, calls, last_call, leaf_at_return, leaf_count[0], spatial, int(logits.shape[1]))


def _check_logits(result: Any, name: str) -> torch.Tensor:
    if hasattr(result, "logits") and isinstance(result.logits, torch.Tensor):  # e.g. GoogLeNetOutputs
        result = result.logits
    if not isinstance(result, torch.Tensor) or result.dim() != 2:
        got = f"a tensor of shape {tuple(result.shape)}" if isinstance(result, torch.Tensor) else type(result).__name__
        raise ValueError(
            f"{name} must return (N, C) class logits for a (N, 3, H, W) image batch, but returned {got}. "
            "Wrap it so that forward() returns the logits tensor."
        )
    return result


def _metadata(module: nn.Module, weights: Any) -> dict[str, Any]:
    """Preprocessing and labels from torchvision ``weights`` or a timm ``pretrained_cfg``."""
    meta: dict[str, Any] = {}
    cfg = getattr(module, "pretrained_cfg", None) or getattr(module, "default_cfg", None)
    if isinstance(cfg, dict):
        if "mean" in cfg and "std" in cfg:
            meta["mean"], meta["std"] = tuple(cfg["mean"]), tuple(cfg["std"])
        if "input_size" in cfg:
            meta["input_size"] = int(cfg["input_size"][-1])
    if weights is not None:
        transforms = weights.transforms()
        meta["mean"], meta["std"] = tuple(transforms.mean), tuple(transforms.std)
        crop = transforms.crop_size
        meta["input_size"] = int(crop[0] if isinstance(crop, (list, tuple)) else crop)
        categories = weights.meta.get("categories")
        if categories:
            meta["labels"] = list(categories)
    return meta


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
            model.user_module, mean=model.mean, std=model.std, input_size=model.input_size,
            labels=labels if labels is not None else model._labels, device=device or model.device,
            name=model.name, reg_layer=model._reg_layer_override,
        )
    if isinstance(model, nn.Module):
        return Model(model, labels=labels, device=device)
    raise TypeError(f"expected an nn.Module or faccent_widget.Model, got {type(model).__name__}")
