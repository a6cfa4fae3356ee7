"""How to run the optimisation on a device: autocast dtype, memory format, gradient scale, chunk length.

One small pure function, :func:`device_policy`, maps (device, compute capability, model dtype, model
family) to a :class:`DevicePolicy`. The machine is queried only for what the caller does not pass, so
tests inject capabilities and run anywhere.

The rules (auto mode, ``autocast=None``):

============================  ===============================  ==============  ===================
device                        autocast of the model passes     channels_last   gradient scale
============================  ===============================  ==============  ===================
CUDA sm80+ (A100, L4, H100)   bf16                             yes             1
CUDA sm70 / sm75 (V100, T4)   fp16 (no bf16 tensor cores)      yes             2**10 (static)
CUDA older                    none (fp32)                      no              1
Apple MPS                     none (fp32)                      no              1
CPU with AMX (native bf16)    bf16                             yes             1
CPU with AVX512-BF16, no AMX  bf16, unless the model has       yes             1
                              depthwise convolutions
other CPUs                    none (fp32)                      no              1
model already fp16 / bf16     none anywhere (autocast would    as above        2**10 for fp16
                              mix dtypes)
model fp64, or with int8      none anywhere (fp64: asked for   no              1
quantised layers              precision; quantised layers
                              take only fp32 activations)
============================  ===============================  ==============  ===================

On a 2-core AMX CPU (torch 2.14) bf16 + channels_last makes EfficientNet-Lite0's engine step 1.2×
(preview) to 1.5× (paper) faster than fp32, depthwise convolutions and all
(``benchmarks/bench_step.py --precision``); the depthwise exception is kept for CPUs without AMX,
where their bf16 backward was reported slower and we have no measurement.

Only the model passes are autocast; the Fourier parameterization, the crops, the losses, the
attribution and Adam stay fp32. With fp16 the objective and the regulariser are multiplied by
``grad_scale`` before their gradients are taken (so small activation gradients do not underflow in
fp16) and the image gradients are divided by it afterwards, on the device, without a host sync.

Chunk budget: the seconds of steps the widget runs per frame: 0.2 s on a CPU (a step there takes
0.1–1 s), 0.03 s on GPUs: with steps replayed as CUDA graphs (a few ms each) that is several steps a
frame and, with a frame's own few ms (compositing, JPEG, the message), the ~30 frames per second the
widget aims at (issue 21; eager GPU steps of ~30 ms still give one step a frame).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import check_setting

__all__ = ["DevicePolicy", "device_policy", "has_depthwise", "quantized_layers"]


def quantized_layers(module: torch.nn.Module) -> list[str]:
    """Names of ``module``'s int8-quantised layers (``torch.ao.quantization``; no gradients pass them)."""
    prefixes = ("torch.ao.nn.quantized", "torch.nn.quantized", "torch.ao.nn.intrinsic.quantized")
    return [
        n
        for n, m in module.named_modules()
        if type(m).__module__.startswith(prefixes) and not n.endswith("_packed_params")
    ]


def has_depthwise(module: torch.nn.Module) -> bool:
    """Whether ``module`` has grouped (e.g. depthwise) convolutions (they decide the CPU autocast rule)."""
    return any(isinstance(m, torch.nn.Conv2d) and m.groups > 1 for m in module.modules())


#: Static loss scale for fp16: keeps activation gradients (often 1e-6…1e-4 per element, below fp16's
#: normal range of 6e-5) representable, while the largest ones (order 1 at the image) stay far from
#: fp16's maximum of 65504. benchmarks/device_check.py measures gradient finiteness with it.
FP16_GRAD_SCALE = 2.0**10
CPU_CHUNK_S = 0.2
GPU_CHUNK_S = 0.03

_FORCED = {"fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class DevicePolicy:
    """How the engine runs on one device.

    Attributes:
        autocast_dtype: dtype of ``torch.autocast`` around the model passes, or None for fp32.
        channels_last: feed the model channels_last crops.
        chunk_budget_s: seconds of optimisation per widget chunk (one frame).
        grad_scale: multiply the objective and the regulariser by this before taking gradients and
            divide the image gradients by it after (1 = no scaling).
        reason: one line saying why, for logs and the device check.
    """

    autocast_dtype: torch.dtype | None
    channels_last: bool
    chunk_budget_s: float
    grad_scale: float
    reason: str

    @property
    def autocast(self) -> bool:
        """Whether the model passes run under autocast."""
        return self.autocast_dtype is not None

    @property
    def precision(self) -> str:
        """ "bf16", "fp16" or "fp32" (the dtype of the model passes)."""
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.autocast_dtype, "fp32")  # type: ignore[arg-type]


def _machine_cpu_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _machine_cpu_amx() -> bool:
    try:
        return bool(torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):
        return False


def device_policy(
    device: torch.device | str,
    *,
    capability: tuple[int, int] | None = None,
    model_dtype: torch.dtype = torch.float32,
    has_depthwise: bool = False,
    cpu_bf16: bool | None = None,
    cpu_amx: bool | None = None,
    autocast: bool | str | None = None,
    quantized: bool = False,
) -> DevicePolicy:
    """The :class:`DevicePolicy` for running a model of ``model_dtype`` on ``device``.

    Args:
        device: where the model runs ("cpu", "cuda", "cuda:1", "mps", …).
        capability: CUDA compute capability (major, minor); default: what the device reports.
        model_dtype: dtype of the model's parameters. fp16/bf16 models never get autocast.
        has_depthwise: the model has grouped (depthwise) convolutions — on CPUs without AMX bf16
            autocast stays off for them.
        cpu_bf16: the CPU has native bf16 (AMX / AVX512-BF16); default: what oneDNN reports.
        cpu_amx: the CPU has AMX tiles; default: what torch reports.
        autocast: None = the rules above; False = fp32; True = the device's low-precision dtype
            (bf16 on CPUs and CUDA sm80+, fp16 on older CUDA cards and on MPS); "fp16" or "bf16" =
            that dtype (e.g. to measure the T4 path on an H100).
        quantized: the model has int8-quantised layers (``torch.ao.quantization.quantize_dynamic``):
            they take fp32 activations only, so autocast stays off.

    Raises:
        ValueError: an unknown ``autocast`` string (another type: ``TypeError``; both from
            :func:`~faccent_widget.core.config.check_setting`), or autocast asked for a model that is
            already fp16/bf16 or has quantised layers.
    """
    dev = torch.device(device)
    autocast = check_setting("autocast", autocast)  # the settings' own check: one rule, one error type
    if dev.type == "cuda" and capability is None:
        capability = tuple(torch.cuda.get_device_capability(dev))  # type: ignore[assignment]
    budget = CPU_CHUNK_S if dev.type == "cpu" else GPU_CHUNK_S
    fast_cuda = dev.type == "cuda" and capability is not None and tuple(capability) >= (7, 0)
    where = f"CUDA sm{capability[0]}{capability[1]}" if dev.type == "cuda" and capability else dev.type.upper()

    if model_dtype in (torch.float16, torch.bfloat16):
        if autocast not in (None, False):
            raise ValueError(
                f"the model's parameters are {model_dtype}; autocast={autocast!r} would mix dtypes. "
                "Use autocast=None/False, or a float32 model."
            )
        scale = FP16_GRAD_SCALE if model_dtype == torch.float16 else 1.0
        return DevicePolicy(
            None,
            fast_cuda,
            budget,
            scale,
            f"{where}: model is {model_dtype}, so no autocast"
            + (f"; gradient scale {scale:g}" if scale != 1.0 else ""),
        )

    if autocast is False:
        return DevicePolicy(None, False, budget, 1.0, f"{where}: fp32 (autocast=False)")

    if quantized:
        if autocast is not None:
            raise ValueError(
                f"the model has int8-quantised layers, which take float32 activations only; "
                f"autocast={autocast!r} would feed them low precision. Use autocast=None/False."
            )
        return DevicePolicy(None, False, budget, 1.0, f"{where}: fp32 (int8-quantised layers take fp32 only)")
    if model_dtype == torch.float64 and autocast is None:
        return DevicePolicy(None, False, budget, 1.0, f"{where}: fp64 (the model is float64, so no autocast)")

    if autocast is None:
        dtype, why = _auto_dtype(dev, capability, has_depthwise, cpu_bf16, cpu_amx)
    else:
        if autocast is True:
            low_bf16 = dev.type == "cpu" or (
                dev.type == "cuda" and capability is not None and tuple(capability) >= (8, 0)
            )
            dtype = torch.bfloat16 if low_bf16 else torch.float16
        else:
            dtype = _FORCED[str(autocast)]
        why = f"autocast={autocast!r} requested"

    if dtype is None:
        return DevicePolicy(None, False, budget, 1.0, f"{where}: fp32 ({why})")
    channels_last = dev.type in ("cuda", "cpu")
    scale = FP16_GRAD_SCALE if dtype == torch.float16 else 1.0
    name = "bf16" if dtype == torch.bfloat16 else "fp16"
    text = f"{where}: {name} autocast" + (" + channels_last" if channels_last else "") + f" ({why})"
    if scale != 1.0:
        text += f"; gradient scale {scale:g}"
    return DevicePolicy(dtype, channels_last, budget, scale, text)


def _auto_dtype(
    dev: torch.device,
    capability: tuple[int, int] | None,
    has_depthwise: bool,
    cpu_bf16: bool | None,
    cpu_amx: bool | None,
) -> tuple[torch.dtype | None, str]:
    if dev.type == "cuda":
        cap = tuple(capability) if capability is not None else (0, 0)
        if cap >= (8, 0):
            return torch.bfloat16, "bf16 tensor cores"
        if cap >= (7, 0):
            return torch.float16, "fp16 tensor cores, no bf16"
        return None, "no tensor cores"
    if dev.type == "cpu":
        native = _machine_cpu_bf16() if cpu_bf16 is None else bool(cpu_bf16)
        if not native:
            return None, "no native bf16 on this CPU"
        amx = _machine_cpu_amx() if cpu_amx is None else bool(cpu_amx)
        if amx:
            return torch.bfloat16, "native bf16 CPU with AMX"
        if has_depthwise:
            return None, "depthwise convolutions on a CPU without AMX"
        return torch.bfloat16, "native bf16 CPU"
    if dev.type == "mps":
        return None, "MPS runs fp32"
    return None, f"no policy for {dev.type}"
