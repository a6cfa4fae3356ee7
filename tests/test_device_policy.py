"""Device policy: the rules, by injecting capabilities (no GPU needed)."""

from __future__ import annotations

import pytest
import torch

from faccent_widget.core.device_policy import FP16_GRAD_SCALE, DevicePolicy, device_policy


@pytest.mark.parametrize("capability", [(8, 0), (8, 6), (8, 9), (9, 0)])
def test_cuda_sm80_and_newer_use_bf16_and_channels_last(capability):
    p = device_policy("cuda", capability=capability)
    assert p.autocast_dtype == torch.bfloat16 and p.channels_last and p.grad_scale == 1.0
    assert p.precision == "bf16" and p.autocast
    assert 0 < p.chunk_budget_s <= 1 / 15  # >= 15 frames/s of pure compute
    assert f"sm{capability[0]}{capability[1]}" in p.reason


@pytest.mark.parametrize("capability", [(7, 0), (7, 5)])
def test_t4_and_v100_use_fp16_with_a_static_gradient_scale(capability):
    p = device_policy("cuda:0", capability=capability)
    assert p.autocast_dtype == torch.float16 and p.channels_last
    assert p.grad_scale == FP16_GRAD_SCALE > 1
    assert "gradient scale" in p.reason


@pytest.mark.parametrize("capability", [(6, 1), (5, 2), (3, 7)])
def test_old_cuda_cards_run_fp32(capability):
    p = device_policy("cuda", capability=capability)
    assert p == DevicePolicy(None, False, p.chunk_budget_s, 1.0, p.reason)
    assert p.precision == "fp32" and p.chunk_budget_s < 0.1


def test_depthwise_models_keep_bf16_on_cuda():
    assert device_policy("cuda", capability=(9, 0), has_depthwise=True).autocast_dtype == torch.bfloat16


def test_mps_runs_fp32_without_channels_last():
    p = device_policy("mps")
    assert p.autocast_dtype is None and not p.channels_last and p.grad_scale == 1.0
    assert p.chunk_budget_s <= 1 / 10


@pytest.mark.parametrize("amx", [True, False])
def test_cpu_with_native_bf16_and_no_depthwise(amx):
    p = device_policy("cpu", cpu_bf16=True, cpu_amx=amx)
    assert p.autocast_dtype == torch.bfloat16 and p.channels_last and p.chunk_budget_s == pytest.approx(0.2)


def test_depthwise_models_get_bf16_only_on_amx_cpus():
    amx = device_policy("cpu", cpu_bf16=True, cpu_amx=True, has_depthwise=True)
    assert amx.autocast_dtype == torch.bfloat16 and amx.channels_last and "AMX" in amx.reason
    no_amx = device_policy("cpu", cpu_bf16=True, cpu_amx=False, has_depthwise=True)
    assert no_amx.autocast_dtype is None and not no_amx.channels_last and "depthwise" in no_amx.reason


def test_cpu_without_bf16_runs_fp32():
    for depthwise in (False, True):
        p = device_policy("cpu", cpu_bf16=False, cpu_amx=False, has_depthwise=depthwise)
        assert p.autocast_dtype is None and not p.channels_last and p.grad_scale == 1.0


def test_cpu_default_asks_the_machine():
    bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    amx = bool(torch.cpu._is_amx_tile_supported())
    assert device_policy("cpu").autocast == bf16
    assert device_policy(torch.device("cpu"), has_depthwise=True).autocast == (bf16 and amx)


@pytest.mark.parametrize("device, capability", [("cpu", None), ("cuda", (9, 0)), ("cuda", (7, 5)), ("mps", None)])
def test_half_models_never_get_autocast(device, capability):
    fp16 = device_policy(device, capability=capability, model_dtype=torch.float16, cpu_bf16=True)
    bf16 = device_policy(device, capability=capability, model_dtype=torch.bfloat16, cpu_bf16=True)
    assert fp16.autocast_dtype is None and bf16.autocast_dtype is None
    assert fp16.grad_scale == FP16_GRAD_SCALE and bf16.grad_scale == 1.0
    with pytest.raises(ValueError, match="would mix dtypes"):
        device_policy(device, capability=capability, model_dtype=torch.float16, autocast="bf16")
    assert device_policy(device, capability=capability, model_dtype=torch.float16, autocast=False).autocast is False


def test_overrides():
    assert device_policy("cuda", capability=(9, 0), autocast=False).autocast_dtype is None
    forced = device_policy("cuda", capability=(9, 0), autocast="fp16")  # the T4 path, measured on an H100
    assert forced.autocast_dtype == torch.float16 and forced.grad_scale == FP16_GRAD_SCALE
    assert "requested" in forced.reason
    assert device_policy("cuda", capability=(7, 5), autocast="bf16").autocast_dtype == torch.bfloat16
    assert device_policy("cuda", capability=(7, 5), autocast=True).autocast_dtype == torch.float16
    assert device_policy("cuda", capability=(8, 0), autocast=True).autocast_dtype == torch.bfloat16
    assert device_policy("cpu", cpu_bf16=False, autocast=True).autocast_dtype == torch.bfloat16
    assert device_policy("cpu", cpu_bf16=True, has_depthwise=True, autocast=True).channels_last
    assert device_policy("mps", autocast=True).autocast_dtype == torch.float16
    assert not device_policy("mps", autocast="bf16").channels_last
    with pytest.raises(ValueError, match="autocast must be"):
        device_policy("cpu", autocast="fp8")


def test_policy_is_frozen():
    p = device_policy("cpu", cpu_bf16=False)
    with pytest.raises(AttributeError):
        p.channels_last = True  # type: ignore[misc]
