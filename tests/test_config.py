"""Presets and settings resolution (core/config.py: the one place they are defined)."""

from __future__ import annotations

import dataclasses

import pytest

import faccent_widget as fw
from faccent_widget.core.config import ENGINE_SETTINGS, default_preset, resolve_config


def test_paper_preset_is_appendix_a():
    p = fw.PRESETS["paper"]
    assert (p.steps, p.n_crops, p.input_size, p.input_scale, p.canvas, p.lr, p.noise, p.crop_range) == (
        100,
        16,
        None,
        1.0,
        512,
        0.05,
        0.02,
        (0.05, 0.99),
    )  # crops at the model's native size (224 here)


def test_default_preset_by_device():
    assert default_preset("cuda") == "gpu" and default_preset("cpu") == "preview"
    assert resolve_config(None, "cuda").preset == "gpu"


def test_overrides_replace_fields_and_unknown_names_are_listed():
    cfg = resolve_config("preview", "cpu", steps=7, reg_layer=None)
    assert cfg == dataclasses.replace(fw.PRESETS["preview"], steps=7)
    with pytest.raises(TypeError, match="unknown engine setting.*'stepz'.*known: .*steps"):
        resolve_config("preview", "cpu", stepz=3)
    with pytest.raises(ValueError, match="unknown preset 'turbo'; choose one of preview, gpu, paper"):
        resolve_config("turbo", "cpu")
    assert "preset" not in ENGINE_SETTINGS and "steps" in ENGINE_SETTINGS


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), 1e7, True, "1"])
def test_lambda_bounds_come_from_one_place(bad):
    from faccent_widget.core.config import check_lambda

    with pytest.raises(ValueError, match="λ must be a finite number in"):
        check_lambda(bad)
