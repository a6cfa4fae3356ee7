"""Validation tools on the real default model: λ calibration, path similarity, noise-seeded
visualisation and the cascading-randomization check (tiny CPU-sized settings)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import faccent_widget as fw
from faccent_widget.validation import LambdaCalibrationRun, calibrate_lambda, path_similarity, randomization_check
from faccent_widget.validation.calibration import crossing
from faccent_widget.validation.randomization import parameterized_layers

FAST = dict(steps=6, n_crops=2, input_size=96, canvas=96, seed=0)


# --------------------------------------------------------------------------- λ calibration


def test_calibration_curve_falls_between_its_extremes(model, chelsea, coffee):
    grid = [0, 1e-2, 1, 1e2]
    cal = calibrate_lambda(model, [chelsea, coffee], lambdas=grid, **FAST)
    c = cal.curve
    assert c.lambdas.tolist() == grid
    assert c.distances.shape == c.normalized.shape == c.crop_distances.shape == (2, 4)
    assert (c.distances[:, 0] > c.distances[:, -1]).all(), c.distances
    np.testing.assert_allclose(c.normalized[:, 0], 1.0)
    np.testing.assert_allclose(c.normalized[:, -1], 0.0, atol=1e-12)
    np.testing.assert_allclose(c.mean, c.normalized.mean(0))
    np.testing.assert_allclose(c.std, c.normalized.std(0))
    assert c.mean[0] > c.mean[-1]
    assert cal.reg_layer == model.default_reg_layer
    assert len(cal.targets) == 2
    second = [model.predict(img, k=2)[1].index for img in (chelsea, coffee)]
    assert [t.split()[1] for t in cal.targets] == [str(i) for i in second]
    assert 1e-2 <= cal.recommended <= 1e2 or not cal.bracketed
    assert "recommended" in cal.table()


def test_calibration_batched_images_and_options(model, chelsea):
    grid = [0, 1, 1e3]
    cal = calibrate_lambda(
        model, {"a": chelsea}, lambdas=grid, targets="tabby", batch_images=True, return_accentuations=True, **FAST
    )
    assert cal.targets == ["logit 281 (tabby)"]
    accs = cal.accentuations
    assert len(accs) == 1 and [a.lam for a in accs[0]] == grid
    assert len({a.rng_seed for a in accs[0]}) == 1  # one shared random seed
    assert cal.config.seed == accs[0][0].rng_seed and cal.config.reg_layer == cal.reg_layer


def test_calibration_in_steps_is_calibrate_lambda(model, chelsea):
    """The stepper cut into tiny chunks gives exactly calibrate_lambda's curve (the math exists once);
    one run per (image, λ) gives it up to float noise (batching only changes round-off)."""
    grid = [0.0, 1.0, 1e3]
    settings = dict(lambdas=grid, targets="tabby", **{**FAST, "steps": 2})
    whole = calibrate_lambda(model, [chelsea], **settings)
    steps = LambdaCalibrationRun(model, [chelsea], **settings)
    with pytest.raises(RuntimeError, match="not finished"):
        steps.result()
    progress = []
    while not steps.advance(1e-6):  # at least one step per call
        progress.append(steps.progress)
    assert progress == sorted(progress) and len(progress) == 1 and steps.progress == 1.0  # 2 steps, 1 batch
    np.testing.assert_array_equal(steps.result().curve.distances, whole.curve.distances)
    assert steps.result().recommended == whole.recommended and steps.result().config == whole.config
    single = LambdaCalibrationRun(model, [chelsea], batch="single", **settings)
    single.advance()
    np.testing.assert_allclose(single.result().curve.distances, whole.curve.distances, rtol=1e-2)
    with pytest.raises(ValueError, match="batch must be"):
        LambdaCalibrationRun(model, [chelsea], batch="pairs", **settings)  # type: ignore[arg-type]


def test_crossing_interpolates_in_log_lambda():
    lam, ok = crossing([0, 0.1, 1, 10], [1.0, 0.9, 0.7, 0.3], 0.5)
    assert ok and lam == pytest.approx(10**0.5)
    lam, ok = crossing([0, 1, 10], [1.0, 0.2, 0.0], 0.5)  # 0.5 lies between λ = 0 and the smallest λ > 0
    assert not ok and lam == 1.0


def test_calibration_errors(model, chelsea):
    with pytest.raises(ValueError, match="empty"):
        calibrate_lambda(model, [], **FAST)
    with pytest.raises(ValueError, match="two distinct"):
        calibrate_lambda(model, [chelsea], lambdas=[1.0], **FAST)
    with pytest.raises(ValueError, match=">= 0"):
        calibrate_lambda(model, [chelsea], lambdas=[-1, 1], **FAST)
    with pytest.raises(TypeError, match="unknown engine setting"):
        calibrate_lambda(model, [chelsea], lambdas=[0, 1], stepz=3)
    with pytest.raises(fw.LayerNotFoundError):
        calibrate_lambda(model, [chelsea], lambdas=[0, 1], reg_layer="blocks.99", **FAST)
    with pytest.raises(ValueError, match="targets for"):
        calibrate_lambda(model, [chelsea], lambdas=[0, 1], targets=[1, 2], **FAST)


# --------------------------------------------------------------------------- path similarity


def test_identical_copy_has_path_similarity_one_everywhere(model, chelsea):
    sim = path_similarity(model, [chelsea], [chelsea.clone()])
    assert sim.layers[-1] == "logits" and len(sim.layers) > 100
    assert sim.layers[:-1] == model.execution_order(sim.layers[:-1])
    values = sim.values()
    assert np.isfinite(values).all()
    np.testing.assert_allclose(values, 1.0, atol=1e-5)
    depths = sim.depths()
    assert depths[0] < 0.1 and depths[-1] == 1.0 and (np.diff(depths) >= 0).all()


def test_path_similarity_sets_diagonal_and_pairing(model, chelsea, coffee):
    imgs = fw.sample_images()
    pool = [imgs["chelsea"], imgs["coffee"], imgs["rocket"]]
    layers = ["blocks.1", "blocks.4", "logits"]
    full = path_similarity(model, pool, layers=layers)  # a set with itself, diagonal included
    off = path_similarity(model, pool, layers=layers, exclude_diagonal=True)
    assert off.layers == ["blocks.1", "blocks.4", "logits"]
    for n in layers:
        m = full.pairs[n]
        np.testing.assert_allclose(np.diag(m), 1.0, atol=1e-5)
        np.testing.assert_allclose(m, m.T, atol=1e-6)
        assert np.isnan(np.diag(off.pairs[n])).all()
        offdiag = m[~np.eye(3, dtype=bool)]
        assert off.per_layer[n] == pytest.approx(offdiag.mean())
        assert off.std[n] == pytest.approx(offdiag.std())
        assert off.per_layer[n] < full.per_layer[n] < 1.0
    # a tensor batch of different sizes is resized to the model input; paired compares a[i] with b[i]
    batch = torch.stack([fw.load_image(chelsea, size=(120, 150)), fw.load_image(coffee, size=(120, 150))])
    matched = path_similarity(model, batch, [chelsea, coffee], layers="logits", paired=True)
    swapped = path_similarity(model, batch, [coffee, chelsea], layers="logits", paired=True)
    assert matched.mode == "paired" and np.isnan(matched.pairs["logits"][0, 1])
    assert matched.per_layer["logits"] > 0.8 and swapped.per_layer["logits"] < matched.per_layer["logits"] - 0.2


def test_path_similarity_errors(model, chelsea):
    with pytest.raises(ValueError, match="empty"):
        path_similarity(model, [], [chelsea])
    with pytest.raises(ValueError, match="empty"):
        path_similarity(model, [chelsea], [])
    with pytest.raises(fw.LayerNotFoundError, match="blocks.4.9"):
        path_similarity(model, [chelsea], [chelsea], layers=["blocks.4.9"])
    with pytest.raises(ValueError, match="at least 2"):
        path_similarity(model, [chelsea], exclude_diagonal=True)
    with pytest.raises(ValueError, match="equal size"):
        path_similarity(model, [chelsea, chelsea], [chelsea], paired=True)
    with pytest.raises(ValueError, match="layers is empty"):
        path_similarity(model, [chelsea], layers=[])


# --------------------------------------------------------------------------- noise-seeded visualisation


def test_noise_seeded_visualisation(model):
    vis = fw.visualize(model, ["tabby", "espresso"], **{**FAST, "steps": 12})
    assert len(vis) == 2
    for v in vis:
        assert v.noise_seeded and v.lam == 0.0
        assert v.image.shape == (3, 96, 96) and 0 <= float(v.image.min()) and float(v.image.max()) <= 1
        obj = v.history["objective"]  # the target (on the augmented crops) went up from the noise seed
        assert obj[-2:].mean() > obj[:2].mean()
    assert not torch.equal(vis[0].seed, vis[1].seed)  # each item has its own noise
    single = fw.accentuate(model, None, "tabby", lam=0.0, **{**FAST, "steps": 1})
    torch.testing.assert_close(single.seed, vis[0].seed)  # same seed value → same noise for item 0


# --------------------------------------------------------------------------- randomization


def _fingerprint(module: nn.Module):
    return (
        {k: v.clone() for k, v in module.state_dict().items()},
        [m.training for m in module.modules()],
        [p.requires_grad for p in module.parameters()],
        [(dict(m._forward_hooks), dict(m._forward_pre_hooks), dict(m._backward_hooks)) for m in module.modules()],
    )


def test_randomization_changes_the_accentuation_and_leaves_the_model_alone(model, chelsea):
    module = model.user_module
    seen = []
    handle = module.conv_head.register_forward_hook(lambda m, a, o: seen.append(1))
    try:
        module.blocks[3].train()  # a state the check must not "fix"
        module.bn2.weight.requires_grad_(False)
        before = _fingerprint(module)
        layers = parameterized_layers(model)
        assert layers[-1] == "classifier" and layers[0] == "conv_stem"
        check = randomization_check(model, chelsea, ["tabby", "tiger cat"], depths=[1, "blocks.5"], **FAST)
        after = _fingerprint(module)
    finally:
        handle.remove()
        module.blocks[3].eval()
        module.bn2.weight.requires_grad_(True)
    for k in before[0]:
        torch.testing.assert_close(after[0][k], before[0][k], rtol=0, atol=0)
    assert after[1:] == before[1:]

    n = len(layers)
    k5 = n - min(i for i, name in enumerate(layers) if name.startswith("blocks.5"))
    assert check.depths == [0, 1, k5]
    assert check.randomized(1) == ["classifier"]
    assert check.randomized(k5)[-1].startswith("blocks.5.0")
    assert check.targets == ["logit 281 (tabby)", "logit 282 (tiger cat)"]
    np.testing.assert_allclose(check.ssim_diff[0], 1.0)
    np.testing.assert_allclose(check.corr_diff[0], 1.0)
    np.testing.assert_allclose(check.corr_specific[0], 1.0)
    np.testing.assert_allclose(check.path[0], 1.0, atol=1e-5)
    scores = check.scores
    # the explanation changes: far from the intact model's 1 (same seed, so the same crops)
    assert scores[1] < 0.9 and scores[k5] < 0.9, scores
    assert np.mean(check.corr_diff[k5]) < 0.9, check.corr_diff
    assert set(check.baseline) == {"ssim_diff", "corr_diff", "corr_specific", "ssim_image", "path", "change"}
    assert len(check.baseline_accentuations) == 2
    assert all(len(check.accentuations[k]) == 2 for k in check.depths)
    assert "SSIM(diff)" in check.table()


def test_randomization_errors(model, chelsea, coffee):
    with pytest.raises(ValueError, match="ONE image"):
        randomization_check(model, [chelsea, coffee], "tabby", **FAST)
    with pytest.raises(ValueError, match="out of range"):
        randomization_check(model, chelsea, "tabby", depths=[10_000], **FAST)
    with pytest.raises(fw.LayerNotFoundError):
        randomization_check(model, chelsea, "tabby", depths=["blocks.77"], **FAST)
    with pytest.raises(ValueError, match="empty"):
        randomization_check(model, chelsea, [], **FAST)


def test_validation_tools_take_a_preset(model, chelsea):
    """The README's call: a preset name next to the other engine settings."""
    cal = calibrate_lambda(model, [chelsea], lambdas=[0.0, 1.0], preset="preview", **{**FAST, "steps": 2})
    assert cal.config.preset == "preview"
