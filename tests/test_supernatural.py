"""Class-wise path similarity and the "super-natural" test (appendix A) on the real default model,
real images (sample images, skimage's LFW faces) and tiny step counts."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import torch

import faccent_widget as fw
from faccent_widget.validation import (
    ClassPathSimilarity,
    augmented_views,
    average_classes,
    class_path_similarity,
    supernatural,
)
from faccent_widget.validation.supernatural import NOISE, lambda_name

LAYERS = ["blocks.1.0", "blocks.4.0", "logits"]
FAST = dict(steps=6, n_crops=2, input_size=96, canvas=96, seed=0)


@pytest.fixture(scope="module")
def views(chelsea, coffee):
    """Three views of each of two photos, and each view's photo (its source)."""
    images = augmented_views(chelsea, 3, seed=1) + augmented_views(coffee, 3, seed=2)
    return images, ["chelsea"] * 3 + ["coffee"] * 3


@pytest.fixture(scope="module")
def faces(model):
    """The 4 LFW-subset face photos the model most confidently calls "Windsor tie" (distinct photos)."""
    raw = torch.tensor(skimage.data.lfw_subset()[:100]).float()
    photos = [p[None].repeat(3, 1, 1) for p in raw]
    with torch.no_grad():
        probs = model.logits(model.to_input(photos)).float().softmax(-1)
    k = model.class_index("Windsor tie")
    top = [int(i) for i in probs[:, k].argsort(descending=True) if int(probs[i].argmax()) == k]
    return [photos[i] for i in top[:4]]


def test_augmented_views_are_reproducible_and_leave_the_global_rng_alone(chelsea):
    state = torch.random.get_rng_state()
    a = augmented_views(chelsea, 4, seed=3, size=64)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = augmented_views(chelsea, 4, seed=3, size=64)
    c = augmented_views(chelsea, 4, seed=4, size=64)
    assert len(a) == 4 and all(v.shape == (3, 64, 64) and 0 <= v.min() and v.max() <= 1 for v in a)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[1], c[1]) and torch.equal(a[0], c[0])  # view 0 is the photo itself
    torch.testing.assert_close(a[0], fw.load_image(chelsea, size=(64, 64)))
    assert not torch.equal(augmented_views(chelsea, 1, include_original=False, size=64)[0], a[0])
    with pytest.raises(ValueError, match="n must be"):
        augmented_views(chelsea, 0)
    with pytest.raises(ValueError, match="scale"):
        augmented_views(chelsea, 2, scale=(0.0, 1.0))


def test_natural_images_normalise_to_one_and_their_own_photo_is_left_out(model, views):
    images, sources = views
    res = class_path_similarity(
        model,
        images,
        {"copies": [v.clone() for v in images], "unexcluded": [v.clone() for v in images]},
        sources=sources,
        candidate_sources={"copies": sources, "unexcluded": [None] * len(images)},
        layers=LAYERS,
        target="two photos",
    )
    assert res.layers == LAYERS and res.natural.shape == (3,) and res.n_sources == 2
    assert res.counts == {"natural": 6, "copies": 6, "unexcluded": 6}
    assert res.depths()[-1] == 1.0 and (np.diff(res.depths()) > 0).all()
    # the natural images themselves, with their photos left out, ARE natural-to-natural
    np.testing.assert_allclose(res.normalised("copies", "ratio"), 1.0, atol=1e-6)
    np.testing.assert_allclose(res.normalised("copies"), 0.0, atol=1e-6)
    np.testing.assert_allclose(res.normalised("natural", "ratio"), 1.0)
    # comparing a view with its own photo's views (and itself) inflates the similarity at every layer
    assert (res.normalised("unexcluded") > 0.05).all(), res.normalised("unexcluded")
    # cross-photo natural-to-natural is below 1 (cat vs coffee), but positive
    assert ((res.natural > 0) & (res.natural < 0.95)).all(), res.natural
    assert "two photos" in res.table() and "copies" in res.summary()


def test_average_over_classes(model, views):
    images, sources = views
    one = class_path_similarity(
        model, images[:4], {"c": images[4:]}, sources=sources[:4], candidate_sources={"c": [None, None]}, layers=LAYERS
    )
    two = class_path_similarity(
        model, images, {"c": images[:2]}, sources=sources, candidate_sources={"c": ["chelsea"] * 2}, layers=LAYERS
    )
    mean = average_classes([one, two])
    assert isinstance(mean, ClassPathSimilarity) and mean.counts["c"] == 2
    np.testing.assert_allclose(mean.natural, (one.natural + two.natural) / 2)
    np.testing.assert_allclose(mean.normalised("c"), (one.normalised("c") + two.normalised("c")) / 2)
    np.testing.assert_allclose(mean.normalised_spread("c"), np.abs(one.normalised("c") - two.normalised("c")) / 2)
    assert np.isnan(one.normalised_spread("c")).all()
    assert len(mean.to_dict()["per_class"]) == 2
    other = class_path_similarity(
        model, images, {"c": images[:1]}, sources=sources, layers=["logits"], candidate_sources={"c": [None]}
    )
    with pytest.raises(ValueError, match="other layers"):
        average_classes([one, other])
    with pytest.raises(ValueError, match="empty"):
        average_classes([])


def test_class_path_similarity_errors(model, views):
    images, sources = views
    with pytest.raises(ValueError, match="at least 2"):
        class_path_similarity(model, images[:3], {"c": images[3:]}, sources=sources[:3], layers=LAYERS)
    with pytest.raises(ValueError, match="source of its seed must be given"):
        class_path_similarity(model, images, {"c": images[:2]}, sources=sources, layers=LAYERS)
    with pytest.raises(ValueError, match="not a source of any natural image"):
        class_path_similarity(
            model, images, {"c": images[:1]}, sources=sources, candidate_sources={"c": ["rocket"]}, layers=LAYERS
        )
    with pytest.raises(ValueError, match="one source per image"):
        class_path_similarity(model, images, {"c": images[:1]}, sources=sources[:2], layers=LAYERS)
    with pytest.raises(ValueError, match="non-empty mapping"):
        class_path_similarity(model, images, {}, sources=sources, layers=LAYERS)
    with pytest.raises(ValueError, match="reference"):
        class_path_similarity(model, images, {"natural": images[:1]}, sources=sources, layers=LAYERS)
    with pytest.raises(fw.LayerNotFoundError):
        class_path_similarity(model, images, {"c": images[:1]}, sources=sources, layers=["blocks.9.9"])


def _fingerprint(module: torch.nn.Module):
    return (
        {k: v.clone() for k, v in module.state_dict().items()},
        [m.training for m in module.modules()],
        [p.requires_grad for p in module.parameters()],
        [(dict(m._forward_hooks), dict(m._forward_pre_hooks)) for m in module.modules()],
    )


def test_supernatural_protocol_on_distinct_photos(model, faces):
    before = _fingerprint(model.user_module)
    res = fw.supernatural(model, {"Windsor tie": faces}, lambdas=[0.0, 10.0], n_seeds=2, n_noise=2, **FAST)
    mean, cls = res.mean, res.classes["Windsor tie"]
    assert list(cls.curves) == [lambda_name(0.0), lambda_name(10.0), NOISE]
    assert cls.layers == [*model.block_layers, "logits"] and all(
        v.shape == (len(cls.layers),) for v in cls.curves.values()
    )
    assert cls.counts == {"natural": 4, "λ=0": 2, "λ=10": 2, NOISE: 2} and cls.n_sources == 4
    assert res.photos == {"Windsor tie": 4} and res.naturals == {"Windsor tie": 4}
    assert res.config.steps == 6 and res.config.seed == 0
    probs = res.probs["Windsor tie"]
    assert list(probs) == list(cls.curves) and all(0 <= p <= 1 for pair in probs.values() for p in pair)
    assert probs["λ=0"][0] == pytest.approx(probs["λ=10"][0], abs=1e-4)  # the same natural seeds,
    assert probs["λ=0"][0] > 0.2  # which the model calls the class
    assert probs[NOISE][0] < 0.05  # noise is not a Windsor tie
    # held at its (natural) seed, λ = 10 follows the class's natural images far more than noise does
    diff = mean.normalised(lambda_name(10.0))
    assert diff.mean() > mean.normalised(NOISE).mean() + 0.1, (diff, mean.normalised(NOISE))
    assert abs(diff.mean()) < 0.15  # and stays about as natural as a natural image
    assert np.isfinite(mean.natural).all() and (mean.natural > 0).all()
    assert "λ=10" in res.table() and res.to_dict()["mean"]["counts"]["natural"] == 1
    after = _fingerprint(model.user_module)
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0]) and before[1:] == after[1:]


def test_supernatural_keeps_only_views_the_model_calls_the_class(model, chelsea, coffee):
    with pytest.raises(ValueError, match="at least 2 photos it predicts"):
        supernatural(model, {"tabby": [coffee, fw.sample_image("rocket")]}, **FAST)
    with pytest.raises(ValueError, match="non-empty mapping"):
        supernatural(model, {}, **FAST)
    with pytest.raises(ValueError, match="n_seeds"):
        supernatural(model, {"tabby": [chelsea]}, n_seeds=0, **FAST)
