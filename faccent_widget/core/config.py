"""Engine settings, presets and λ bounds: the one place each of them is defined.

``PRESETS`` holds ready :class:`EngineConfig` instances; :func:`resolve_config` applies a user's
overrides to one of them (``dataclasses.replace``) and validates the result once.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Iterable

import torch

from .parameterizations import PARAMETERIZATIONS
from .transforms import check_crop_range

__all__ = [
    "EngineConfig", "PRESETS", "DEFAULT_LAMBDA", "LAMBDA_MAX", "LAMBDA_SLIDER", "ENGINE_SETTINGS",
    "default_preset", "resolve_config", "check_lambda", "check_setting_names",
]

#: Default λ (balanced; see ``EngineConfig.balance``): the middle of the default model's sensitive
#: region (README, "λ sensitive region").
DEFAULT_LAMBDA = 1.0
#: Largest λ accepted anywhere (far past saturation: at λ ≈ 10² the image stops changing).
LAMBDA_MAX = 1e6
#: The widget slider's range (log scale); the calibration grid in ``faccent_widget.validation``
#: reaches past it on purpose, to saturate both ends.
LAMBDA_SLIDER = (1e-2, 1e2)


@dataclass(frozen=True)
class EngineConfig:
    """Resolved settings of one accentuation run (λ is per item and passed separately). The defaults
    are the paper's appendix A."""

    steps: int = 100
    n_crops: int = 16
    input_size: int | None = None  # crop side fed to the model; None: from the model (see input_scale)
    input_scale: float = 1.0  # input_size None: this × the model's native size (fixed-size models: 1)
    canvas: int = 512
    crop_range: tuple[float, float] = (0.05, 0.99)
    lr: float = 0.05
    param: str = "fourier"
    noise: float = 0.02
    balance: bool = True
    reg_layer: str | None = None  # None: the model's default regularisation layer
    snapshot_every: int = 5
    attribution_every: int = 10  # sample Σ|∂objective/∂image| every k regularised steps (1 = exact)
    seed: int | None = None
    preset: str = "paper"
    # autocast of the model passes: None = the device's rule (core/device_policy.py), False = fp32,
    # True = the device's low-precision dtype, "fp16" / "bf16" = force that dtype
    autocast: bool | str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: ``preview`` (the CPU default), ``gpu`` (the CUDA default: the preview's canvas with the paper's
#: crops) and ``paper`` (appendix A exactly: 100 steps, 16 crops on a 512 px canvas, Gaussian σ = 0.02
#: plus uniform ±0.01 noise). Crop sizes follow the model: ``gpu`` and ``paper`` feed crops at the
#: model's native input size (224 for most, 299 for Inception-v3, …), ``preview`` at 0.7× of it (native
#: for fixed-size models such as ViTs). Quality and speed of each: README, "Presets".
PRESETS: dict[str, EngineConfig] = {
    "preview": EngineConfig(steps=40, n_crops=4, input_scale=0.7, canvas=256, noise=0.0, snapshot_every=2,
                            preset="preview"),
    "gpu": EngineConfig(steps=100, n_crops=16, canvas=256, noise=0.02, preset="gpu"),
    "paper": EngineConfig(preset="paper"),  # the dataclass defaults are appendix A
}

#: Names of the settings a user may override (every field but the preset's own name).
ENGINE_SETTINGS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(EngineConfig) if f.name != "preset")


def default_preset(device: torch.device | str) -> str:
    """CUDA → "gpu", anything else → "preview"."""
    return "gpu" if torch.device(device).type == "cuda" else "preview"


def resolve_config(preset: str | None, device: torch.device | str, **overrides: Any) -> EngineConfig:
    """A preset (by device when None) with explicit overrides applied (``None`` values are ignored)."""
    name = preset or default_preset(device)
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    check_setting_names(overrides)
    cfg = dataclasses.replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})
    _validate(cfg)
    return cfg


def check_setting_names(names: Iterable[str]) -> None:
    """Raise ``TypeError`` naming any unknown engine setting and listing the known ones."""
    unknown = sorted(set(names) - set(ENGINE_SETTINGS))
    if unknown:
        raise TypeError(f"unknown engine setting(s) {', '.join(map(repr, unknown))}; known: {', '.join(ENGINE_SETTINGS)}")


def check_lambda(value: Any) -> float:
    """``value`` as a float λ, or a ``ValueError`` saying what is accepted."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 <= value <= LAMBDA_MAX:
        raise ValueError(f"λ must be a finite number in [0, {LAMBDA_MAX:g}], got {value!r}")
    return float(value)


def _validate(cfg: EngineConfig) -> None:
    if int(cfg.steps) != cfg.steps or cfg.steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {cfg.steps!r}")
    if int(cfg.n_crops) != cfg.n_crops or cfg.n_crops < 1:
        raise ValueError(f"n_crops must be an int >= 1, got {cfg.n_crops!r}")
    if (cfg.input_size is not None and cfg.input_size < 16) or cfg.canvas < 16:
        raise ValueError(f"input_size and canvas must be >= 16 pixels, got {cfg.input_size} and {cfg.canvas}")
    if not 0.1 <= cfg.input_scale <= 4:
        raise ValueError(f"input_scale must be in [0.1, 4] (a fraction of the model's input size), got {cfg.input_scale}")
    check_crop_range(cfg.crop_range)
    if not cfg.lr > 0:
        raise ValueError(f"lr must be > 0, got {cfg.lr}")
    if cfg.noise < 0:
        raise ValueError(f"noise must be >= 0, got {cfg.noise}")
    if cfg.param.lower() not in PARAMETERIZATIONS:
        raise ValueError(f"unknown parameterization {cfg.param!r}; choose one of {', '.join(PARAMETERIZATIONS)}")
    if not (cfg.autocast is None or isinstance(cfg.autocast, bool) or cfg.autocast in ("fp16", "bf16")):
        raise ValueError(f"autocast must be None, True, False, 'fp16' or 'bf16', got {cfg.autocast!r}")
    if cfg.snapshot_every < 1:
        raise ValueError(f"snapshot_every must be >= 1, got {cfg.snapshot_every}")
    if int(cfg.attribution_every) != cfg.attribution_every or cfg.attribution_every < 1:
        raise ValueError(f"attribution_every must be an int >= 1, got {cfg.attribution_every!r}")
