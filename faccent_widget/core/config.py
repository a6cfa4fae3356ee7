"""Engine settings and presets ("paper" for GPUs, "preview" for CPUs)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from .parameterizations import PARAMETERIZATIONS
from .transforms import check_crop_range

__all__ = ["EngineConfig", "PRESETS", "DEFAULT_LAMBDA", "default_preset", "resolve_config"]

#: Default λ (balanced; see ``balance``). Chosen from the λ sweep on the default model (README).
DEFAULT_LAMBDA = 1.0


@dataclass(frozen=True)
class EngineConfig:
    """Resolved settings of one accentuation run."""

    steps: int = 100
    n_crops: int = 16
    input_size: int = 224
    canvas: int = 512
    crop_range: tuple[float, float] = (0.05, 0.99)
    lr: float = 0.05
    param: str = "fourier"
    noise: float = 0.0
    lam: float = DEFAULT_LAMBDA
    balance: bool = True
    reg_layer: str = ""
    snapshot_every: int = 5
    seed: int | None = None
    preset: str = "paper"
    # autocast of the model passes: None = the device's rule (core/device_policy.py), False = fp32,
    # True = the device's low-precision dtype, "fp16" / "bf16" = force that dtype
    autocast: bool | str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: The paper's recipe (appendix A) and a CPU-friendly preview, measured on a 2-core CPU.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(steps=100, n_crops=16, input_size=224, canvas=512, snapshot_every=5),
    "preview": dict(steps=40, n_crops=4, input_size=160, canvas=256, snapshot_every=2),
}


def default_preset(device: torch.device | str) -> str:
    """CUDA → "paper", anything else → "preview"."""
    return "paper" if torch.device(device).type == "cuda" else "preview"


def resolve_config(preset: str | None, device: torch.device | str, **overrides: Any) -> EngineConfig:
    """Merge a preset (by device when None) with explicit overrides (``None`` values are ignored)."""
    name = preset or default_preset(device)
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    values: dict[str, Any] = {**PRESETS[name], "preset": name}
    fields = {f.name for f in dataclasses.fields(EngineConfig)}
    for key, value in overrides.items():
        if key not in fields:
            raise TypeError(f"unknown engine setting {key!r}; known: {', '.join(sorted(fields))}")
        if value is not None:
            values[key] = value
    cfg = EngineConfig(**values)
    _validate(cfg)
    return cfg


def _validate(cfg: EngineConfig) -> None:
    if int(cfg.steps) != cfg.steps or cfg.steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {cfg.steps!r}")
    if int(cfg.n_crops) != cfg.n_crops or cfg.n_crops < 1:
        raise ValueError(f"n_crops must be an int >= 1, got {cfg.n_crops!r}")
    if cfg.input_size < 16 or cfg.canvas < 16:
        raise ValueError(f"input_size and canvas must be >= 16 pixels, got {cfg.input_size} and {cfg.canvas}")
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
