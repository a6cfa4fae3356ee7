"""Engine settings, presets and λ bounds: the one place each of them is defined.

``PRESETS`` holds ready :class:`EngineConfig` instances; :func:`resolve_config` applies a user's
overrides to one of them (``dataclasses.replace``) and validates the result once: the settings door.
Everything past it (the engine, the crops) trusts the values. :class:`EngineOverrides` is the typed
``**overrides`` of ``start_run``; :func:`resolve_run_config` fills in what depends on the model (crop
size, regularisation layer).

Types are checked, not coerced. The only conversions, all documented in :func:`check_setting`:
numpy/torch integer scalars → ``int`` (for integer settings), any finite real (``int``, numpy
float, …) → ``float`` (for float settings), numpy booleans → ``bool``, a 2-list → tuple
(``crop_range``). ``bool`` is never accepted where a number is expected, and non-finite numbers are
refused everywhere.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import operator
import secrets
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np
import torch

from .parameterizations import PARAMETERIZATIONS

if TYPE_CHECKING:  # typing only: the model adapter does not import the settings
    from .model import Model

__all__ = [
    "EngineConfig",
    "EngineOverrides",
    "PRESETS",
    "DEFAULT_LAMBDA",
    "LAMBDA_MAX",
    "LAMBDA_SLIDER",
    "ENGINE_SETTINGS",
    "default_preset",
    "resolve_config",
    "resolve_run_config",
    "fresh_rng_seed",
    "check_lambda",
    "check_setting_names",
    "check_setting",
    "check_int",
    "check_real",
    "SETTING_LIMITS",
    "SEED_MAX",
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
    are the paper's appendix A.

    A run records its config fully resolved (:attr:`AccentuationRun.config`, ``Accentuation.config``):
    ``input_size`` and ``reg_layer`` as :func:`resolve_run_config` sets them, ``seed`` as drawn.
    ``seed`` is the random seed of the crops and noise (an int), not the seed *image*.
    """

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
    # replay the steps as CUDA graphs (core/step_graphs.py): None = on for CUDA, off elsewhere
    cuda_graphs: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def __getitem__(self, key: str) -> Any:
        """Deprecated: results used to carry their settings as a dict. ``config["steps"]`` →
        ``config.steps``; ``config["lam"]`` / ``["noise_seeded"]`` → ``Accentuation.lam`` / ``.noise_seeded``."""
        legacy: dict[str, Any] = self.__dict__.get("_legacy_keys", {})
        if key in _FIELD_NAMES:
            value, use = getattr(self, key), f"config.{key}"
        elif key in legacy:
            value, use = legacy[key], f"the result's .{key}"
        else:
            raise KeyError(key)
        warnings.warn(
            f"config[{key!r}] is deprecated: the config is an EngineConfig now; use {use}",
            DeprecationWarning,
            stacklevel=2,
        )
        return value


def with_legacy_keys(config: EngineConfig, **values: Any) -> EngineConfig:
    """A copy of ``config`` whose deprecated ``config[key]`` also answers ``values`` (the keys the result
    dicts used to hold beside the settings, such as ``"lam"``). Goes with the deprecation."""
    copy = dataclasses.replace(config)
    object.__setattr__(copy, "_legacy_keys", dict(values))  # not a field: not compared, copied or listed
    return copy


class EngineOverrides(TypedDict, total=False):
    """The engine settings a caller may override, typed (``start_run(..., **overrides)``): one key per
    field of :class:`EngineConfig` but ``preset``; ``None`` (or leaving it out) keeps the preset's value.
    Checked and converted by :func:`check_setting`."""

    steps: int | None
    n_crops: int | None
    input_size: int | None
    input_scale: float | None
    canvas: int | None
    crop_range: tuple[float, float] | None
    lr: float | None
    param: str | None
    noise: float | None
    balance: bool | None
    reg_layer: str | None
    snapshot_every: int | None
    attribution_every: int | None
    seed: int | None
    autocast: bool | str | None
    cuda_graphs: bool | None


#: ``preview`` (the CPU default), ``gpu`` (the CUDA default: the preview's canvas with the paper's
#: crops) and ``paper`` (appendix A exactly: 100 steps, 16 crops on a 512 px canvas, Gaussian σ = 0.02
#: plus uniform ±0.01 noise). Crop sizes follow the model: ``gpu`` and ``paper`` feed crops at the
#: model's native input size (224 for most, 299 for Inception-v3, …), ``preview`` at 0.7× of it (native
#: for fixed-size models such as ViTs). Quality and speed of each: README, "Presets".
PRESETS: dict[str, EngineConfig] = {
    "preview": EngineConfig(
        steps=40, n_crops=4, input_scale=0.7, canvas=256, noise=0.0, snapshot_every=2, preset="preview"
    ),
    "gpu": EngineConfig(steps=100, n_crops=16, canvas=256, noise=0.02, preset="gpu"),
    "paper": EngineConfig(preset="paper"),  # the dataclass defaults are appendix A
}

_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(EngineConfig))
#: Names of the settings a user may override (every field but the preset's own name; the keys of
#: :class:`EngineOverrides`, which tests/test_engine.py checks against these).
ENGINE_SETTINGS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(EngineConfig) if f.name != "preset")
#: Random seeds drawn when none is given lie in [0, RNG_SEED_DRAWN).
RNG_SEED_DRAWN = 2**31


def default_preset(device: torch.device | str) -> str:
    """CUDA → "gpu", anything else → "preview"."""
    return "gpu" if torch.device(device).type == "cuda" else "preview"


def resolve_config(
    preset: str | None, device: torch.device | str, *, base: EngineConfig | None = None, **overrides: Any
) -> EngineConfig:
    """A preset (by device when None), or ``base`` (a config to start from, e.g. the widget's: then
    ``preset`` must be None or ``base.preset``), with explicit overrides applied (``None`` values are
    ignored).

    Unknown names are a ``TypeError`` listing the known ones; every override is checked with
    :func:`check_setting` (types and ranges; see there for the few conversions), then the whole
    configuration is validated once.
    """
    if base is not None and preset is not None and preset != base.preset:
        raise ValueError(f"pass either config (preset {base.preset!r}) or preset={preset!r}, not both")
    check_setting_names(overrides)
    given = {k: check_setting(k, v) for k, v in overrides.items() if v is not None}
    if base is None:
        name = _check_preset(preset, "preset") if preset is not None else default_preset(device)
        base = PRESETS[name]
    cfg = dataclasses.replace(base, **given)
    _validate(cfg)
    return cfg


def resolve_run_config(model: Model, config: EngineConfig) -> EngineConfig:
    """``config`` with what depends on the model filled in: ``input_size`` (the crop side fed to the
    model: :meth:`Model.crop_size` of ``input_size`` and ``input_scale``) and ``reg_layer`` (checked by
    :meth:`Model.check_reg_layer`; None → the model's default). The engine runs with exactly this; the
    validation tools and triage's fingerprint read it without building a run."""
    return dataclasses.replace(
        config,
        input_size=model.crop_size(config.input_size, config.input_scale),
        reg_layer=model.check_reg_layer(config.reg_layer),
    )


def fresh_rng_seed() -> int:
    """A random seed from the OS in [0, 2³¹), for runs given none (Python's ``random`` state is left alone)."""
    return secrets.randbelow(RNG_SEED_DRAWN)


def check_setting_names(names: Iterable[str]) -> None:
    """Raise ``TypeError`` naming any unknown engine setting and listing the known ones."""
    unknown = sorted(set(names) - set(ENGINE_SETTINGS), key=str)
    if unknown:
        raise TypeError(
            f"unknown engine setting(s) {', '.join(map(repr, unknown))}; known: {', '.join(ENGINE_SETTINGS)}"
        )


def check_lambda(value: Any) -> float:
    """``value`` as a float λ, or a ``ValueError`` saying what is accepted (a finite real number in
    [0, ``LAMBDA_MAX``]; numpy scalars count, ``bool`` and strings do not)."""
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or not 0 <= float(value) <= LAMBDA_MAX
    ):
        raise ValueError(f"λ must be a finite number in [0, {LAMBDA_MAX:g}], got {value!r}")
    return float(value)


# --------------------------------------------------------------------------- typed checks


def check_int(value: Any, name: str, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` as an ``int`` in [lo, hi], or a clear error.

    Accepted: ``int`` and integer scalars that implement ``__index__`` (numpy integers, 0-d integer
    torch tensors). Refused with ``TypeError``: ``bool`` (also numpy/torch booleans), floats (even
    ``2.0``), strings. Out of range: ``ValueError``.
    """
    what = _range_text(lo, hi)
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, torch.Tensor) and value.dtype == torch.bool):
        raise TypeError(f"{name} must be an int{what}, got the bool {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int{what}, got {type(value).__name__} {value!r}") from None
    if (lo is not None and number < lo) or (hi is not None and number > hi):
        raise ValueError(f"{name} must be an int{what}, got {number}")
    return int(number)


def check_real(
    value: Any, name: str, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False
) -> float:
    """``value`` as a finite ``float`` in [lo, hi] (``(lo, hi]`` with ``lo_open``), or a clear error.

    Accepted: any real number (``int``, ``float``, numpy scalars). Refused: ``bool`` and strings
    (``TypeError``), NaN, ±inf and values out of range (``ValueError``).
    """
    what = _range_text(lo, hi, lo_open)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a finite number{what}, got {type(value).__name__} {value!r}")
    number = float(value)
    if (
        not math.isfinite(number)
        or (lo is not None and (number <= lo if lo_open else number < lo))
        or (hi is not None and number > hi)
    ):
        raise ValueError(f"{name} must be a finite number{what}, got {value!r}")
    return number


def _range_text(lo: float | None, hi: float | None, lo_open: bool = False) -> str:
    def num(v: float) -> str:
        return "2**63 - 1" if v == SEED_MAX else f"{v:g}" if isinstance(v, float) else str(v)

    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{num(lo)}, {num(hi)}]"
    if lo is not None:
        return f" {'>' if lo_open else '>='} {num(lo)}"
    return f" <= {num(hi)}" if hi is not None else ""


def _check_bool(value: Any, name: str) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")


def _check_crop_range(value: Any, name: str) -> tuple[float, float]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{name} must be a (min, max) pair of fractions with 0 < min <= max <= 1, got {value!r}")
    lo = check_real(value[0], f"{name}[0]", 0.0, 1.0, lo_open=True)
    hi = check_real(value[1], f"{name}[1]", 0.0, 1.0, lo_open=True)
    if lo > hi:
        raise ValueError(f"{name} must satisfy 0 < min <= max <= 1 (fractions of the canvas), got {value!r}")
    return lo, hi


def _check_param(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, one of {', '.join(PARAMETERIZATIONS)}; got {type(value).__name__}")
    if value.lower() not in PARAMETERIZATIONS:
        raise ValueError(f"unknown parameterization {value!r}; choose one of {', '.join(PARAMETERIZATIONS)}")
    return value


def _check_name(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a layer name (a string) or None, got {type(value).__name__} {value!r}")
    if not value.strip():
        raise ValueError(f"{name} must be a layer name or None, got the empty string {value!r}")
    return value


def _check_preset(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string ({', '.join(map(repr, PRESETS))}), got {type(value).__name__}")
    if value not in PRESETS:
        raise ValueError(f"unknown preset {value!r}; choose one of {', '.join(PRESETS)}")
    return value


def _check_autocast(value: Any, name: str) -> bool | str:
    if isinstance(value, str) and value in ("fp16", "bf16"):
        return value
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    error = ValueError if isinstance(value, str) else TypeError  # a wrong word, or not a word at all
    raise error(f"{name} must be True, False, 'fp16' or 'bf16' (or None), got {type(value).__name__} {value!r}")


def _optional(check: Callable[[Any, str], Any]) -> Callable[[Any, str], Any]:
    return lambda value, name: None if value is None else check(value, name)


#: (min, max) of the integer settings. ``steps`` tops out at 10 000 (the widget's slider too).
SETTING_LIMITS: dict[str, tuple[int, int]] = {
    "steps": (1, 10_000),
    "n_crops": (1, 1024),
    "input_size": (16, 2048),
    "canvas": (16, 4096),
    "snapshot_every": (1, 10**9),
}
#: Largest random seed (seeds are ints in [0, SEED_MAX]).
SEED_MAX = 2**63 - 1


def _int_setting(name: str) -> Callable[[Any, str], int]:
    lo, hi = SETTING_LIMITS[name]
    return lambda value, label: check_int(value, label, lo, hi)


_CHECKS: dict[str, Callable[[Any, str], Any]] = {
    "steps": _int_setting("steps"),
    "n_crops": _int_setting("n_crops"),
    "input_size": _optional(_int_setting("input_size")),
    "input_scale": lambda v, n: check_real(v, n, 0.1, 4.0),
    "attribution_every": lambda v, n: check_int(v, n, 1, 10**9),
    "canvas": _int_setting("canvas"),
    "snapshot_every": _int_setting("snapshot_every"),
    "crop_range": _check_crop_range,
    "lr": lambda v, n: check_real(v, n, 0.0, 100.0, lo_open=True),
    "param": _check_param,
    "noise": lambda v, n: check_real(v, n, 0.0, 10.0),
    "balance": _check_bool,
    "reg_layer": _optional(_check_name),
    "seed": _optional(lambda v, n: check_int(v, n, 0, SEED_MAX)),
    "preset": lambda v, n: _check_preset(v, n),
    "autocast": _optional(_check_autocast),
    "cuda_graphs": _optional(_check_bool),
}  # one check per field of EngineConfig (tests/test_engine.py holds them to it)


def check_setting(name: str, value: Any) -> Any:
    """Check one engine setting and return it in its canonical type (``TypeError``/``ValueError``
    naming the setting, the bad value and what is accepted).

    ``steps``, ``n_crops``, ``input_size``, ``canvas``, ``snapshot_every``: ints in
    ``SETTING_LIMITS``; ``seed`` (the random seed): an int in [0, 2⁶³ − 1] or None. ints may be
    numpy/torch integer scalars (converted to ``int``); floats and bools are refused. ``lr`` (0, 100]
    and ``noise`` [0, 10]: finite real numbers (converted to ``float``). ``crop_range``: a (min, max)
    pair with 0 < min ≤ max ≤ 1 (converted to a tuple of floats). ``balance``: a bool; ``cuda_graphs``: a
    bool or None; ``autocast``: a bool, "fp16", "bf16" or None (another string: ``ValueError``).
    ``param``: "fourier", "pixel" or "maco". ``reg_layer``: a layer name or None.
    """
    if name not in _CHECKS:
        check_setting_names([name])  # raises, listing the known settings
    return _CHECKS[name](value, name)


def _validate(cfg: EngineConfig) -> None:
    """Check every field of ``cfg`` (raises on the first bad one)."""
    for f in dataclasses.fields(cfg):
        _CHECKS[f.name](getattr(cfg, f.name), f.name)
