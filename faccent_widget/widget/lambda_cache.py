"""The panel's recommended-λ mark on disk: computed once per model, layer and calibration settings, then
shown at once in every new kernel (the calibration takes about a minute of idle time on a CPU).

Where: ``$FACCENT_WIDGET_CACHE`` when set (``off``, ``0`` or ``none`` turn the disk cache off), else
``$XDG_CACHE_HOME/faccent-widget`` or ``~/.cache/faccent-widget``; one small JSON file, ``lambda.json``.
The key holds the model's name, a digest of its weights and labels, its input size, the regularisation
layer, the device type and precision, and the calibration settings, so another model (or the same
architecture with other weights) never gets this one's value. A cache that cannot be read or written is
skipped silently: the mark is a convenience.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.device_policy import device_policy, has_depthwise
from ..core.model import Model

__all__ = ["CACHE_ENV", "cache_file", "lambda_key", "load_lambda", "store_lambda"]

#: The environment variable that moves the cache (a folder) or turns it off ("off", "0", "none").
CACHE_ENV = "FACCENT_WIDGET_CACHE"
_OFF = ("", "0", "off", "none", "false", "no")

_DIGESTS: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()


def cache_file() -> Path | None:
    """The cache file, or None when the disk cache is off."""
    env = os.environ.get(CACHE_ENV)
    if env is not None:
        return None if env.strip().lower() in _OFF else Path(env).expanduser() / "lambda.json"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "faccent-widget" / "lambda.json"


def _weights(module: nn.Module) -> str:
    """A digest of the module's weights (kept per module: computed once per process)."""
    digest = _DIGESTS.get(module)
    if digest is None:
        h = hashlib.sha256()
        for name, t in module.state_dict().items():
            h.update(name.encode())
            if isinstance(t, torch.Tensor):
                data = t.detach().to("cpu").contiguous()
                h.update(f"{data.dtype}{tuple(data.shape)}".encode())
                if data.numel():
                    h.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
        digest = _DIGESTS[module] = h.hexdigest()[:24]
    return digest


def lambda_key(model: Model, reg_layer: str, settings: Mapping[str, Any]) -> str:
    """The cache key of the λ mark of ``model`` at ``reg_layer`` with the calibration ``settings``."""
    policy = device_policy(model.device, model_dtype=model.dtype, has_depthwise=has_depthwise(model.module))
    parts = {
        "model": model.name,
        "weights": _weights(model.module),
        "labels": hashlib.sha256("\n".join(model.labels).encode()).hexdigest()[:16],
        "input_size": int(model.input_size),
        "reg_layer": reg_layer,
        "device": model.device.type,
        "precision": str(policy.autocast_dtype or model.dtype),
        "settings": {k: list(v) if isinstance(v, (tuple, list)) else v for k, v in sorted(settings.items())},
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def load_lambda(model: Model, reg_layer: str, settings: Mapping[str, Any]) -> float | None:
    """The cached λ mark, or None (no cache, no entry, or an unreadable one)."""
    path = cache_file()
    if path is None:
        return None
    entry = _read(path).get(lambda_key(model, reg_layer, settings))
    value = entry.get("lambda") if isinstance(entry, dict) else None
    return float(value) if isinstance(value, (int, float)) and value > 0 else None


def store_lambda(model: Model, reg_layer: str, settings: Mapping[str, Any], value: float) -> None:
    """Remember ``value`` on disk (atomically; silently nothing when the cache is off or not writable)."""
    path = cache_file()
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _read(path)
        data[lambda_key(model, reg_layer, settings)] = {
            "lambda": float(value),
            "model": model.name,
            "reg_layer": reg_layer,
        }
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".lambda-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        return
