"""``fw.suppress`` (drive an image away from a target) and ``fw.caricature`` (amplify the image's own
activation pattern at a layer), on the real default model and a sample image."""

from __future__ import annotations

import pytest
import torch

import faccent_widget as fw
from faccent_widget.core.objectives import resolve_objective

SMALL = dict(steps=10, n_crops=2, input_size=128, canvas=128, seed=0)


@pytest.fixture(scope="module")
def model() -> fw.Model:
    return fw.load_model()


def _untouched(model: fw.Model) -> tuple:
    module = model.module
    return (
        [(n, m.training, len(m._forward_hooks), len(m._forward_pre_hooks)) for n, m in module.named_modules()],
        [(n, p.requires_grad) for n, p in module.named_parameters()],
    )


def test_suppress_lowers_the_class_probability(model: fw.Model) -> None:
    img = fw.sample_image("coffee")
    before = _untouched(model)
    cls = model.class_index("espresso")
    result = fw.accentuate(model, img, fw.suppress("espresso"), lam=0.1, **SMALL)
    assert result.target.startswith("suppress logit") and "espresso" in result.target
    p_seed = float(model.probabilities(result.seed[None])[cls])
    p_final = float(model.probabilities(result.image[None])[cls])
    assert p_seed > 0.5 and p_final < 0.5 * p_seed, (p_seed, p_final)  # measured: 0.87 → ≈0.1
    assert result.score.value > result.seed_score.value  # the objective (−logit) went up
    assert result.seed_score.prob is not None and result.score.prob is not None  # p of the suppressed class
    assert result.score.prob < 0.5 * result.seed_score.prob
    assert _untouched(model) == before


def test_suppress_resolves_every_target_form(model: fw.Model) -> None:
    for target in ("espresso", 967, fw.logit(967), "blocks.3.0:5"):
        bound = resolve_objective(model, fw.suppress(target))
        assert bound.description.startswith("suppress ")
    assert resolve_objective(model, fw.suppress(967)).class_index == 967
    with pytest.raises(TypeError, match="suppress\\(suppress\\(x\\)\\) is x"):
        fw.suppress(fw.suppress("espresso"))
    with pytest.raises(ValueError, match="no class|not a class|unknown"):
        resolve_objective(model, fw.suppress("no such class label"))


def test_caricature_amplifies_the_seeds_own_pattern(model: fw.Model) -> None:
    img = fw.sample_image("chelsea")
    before = _untouched(model)
    result = fw.accentuate(model, img, fw.caricature("blocks.3.0"), lam=0.1, **SMALL)
    objective = resolve_objective(model, fw.caricature("blocks.3.0", result.seed))
    with torch.no_grad():
        feats_seed = model.features(model.to_input(result.seed[None]), ["blocks.3.0"])
        feats_final = model.features(model.to_input(result.image[None]), ["blocks.3.0"])
    v_seed, v_final = float(objective(feats_seed)), float(objective(feats_final))
    assert v_final > 1.08 * v_seed > 0, (v_seed, v_final)  # measured: 12.3 → 14.7 (×1.20)
    assert _untouched(model) == before


def test_caricature_needs_an_image_and_a_sane_power(model: fw.Model) -> None:
    with pytest.raises(ValueError, match="needs the image whose pattern to amplify"):
        fw.visualize(model, fw.caricature("blocks.3.0"), steps=1, n_crops=1, input_size=64, canvas=64)
    with pytest.raises(ValueError, match="cossim_pow must be a finite number"):
        fw.caricature("blocks.3.0", cossim_pow=float("nan"))
    with pytest.raises(fw.LayerNotFoundError, match="unknown layer"):
        resolve_objective(model, fw.caricature("blocks.99", fw.sample_image("chelsea")))
