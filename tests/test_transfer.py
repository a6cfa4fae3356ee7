"""Two more offline ImageNet models (EfficientNet-Lite1/2 from their wheels) and ``fw.transferability``:
accentuations made with the default model, judged by models that never saw the optimisation, against a
matched-strength gradient attack."""

from __future__ import annotations

import pytest
import torch

import faccent_widget as fw
from faccent_widget.validation.transfer import attack_to_gain

JUDGES = ("efficientnet_lite1", "efficientnet_lite2")


@pytest.fixture(scope="module")
def judges() -> list[fw.Model]:
    return [fw.load_model(name) for name in JUDGES]


@pytest.mark.parametrize("name,size", [("efficientnet_lite1", 240), ("efficientnet_lite2", 260)])
def test_lite_models_load_offline_at_their_size_and_predict_sample_images(name: str, size: int) -> None:
    model = fw.load_model(name)
    assert model.input_size == size and model.num_classes == 1000 and model.name == name
    images = fw.sample_images()
    # the classes the default model is sure of (p > 0.5 there) are these models' top-1 too
    for key, label in (("chelsea", "Egyptian cat"), ("coffee", "espresso"), ("camera", "tripod")):
        top = model.predict(images[key], k=1)[0]
        assert top[1] == label and top[2] > 0.3, (key, top)


def test_unknown_lite_size_lists_the_names() -> None:
    with pytest.raises(ValueError, match="efficientnet_lite1, efficientnet_lite2"):
        fw.load_model("efficientnet_lite9")


@pytest.fixture(scope="module")
def accentuations() -> tuple[fw.Model, list[fw.Accentuation]]:
    model = fw.load_model()
    images = fw.sample_images()
    results = []
    for key in ("chelsea", "coffee"):
        target = model.predict(images[key], k=2)[1][0]  # the 2nd most likely class
        results.append(fw.accentuate(model, images[key], target, preset="preview", steps=12, seed=0))
    return model, results


def test_accentuations_transfer_and_a_matched_attack_does_not(accentuations, judges) -> None:
    model, results = accentuations
    t = fw.transferability(model, results, judges)
    assert t.judges == list(JUDGES) and len(t.gain) == 2
    assert (t.gain > 0.2).all(), t.gain  # the optimised model's own gain
    # the attack is matched in strength: it reaches the same gain on the optimised model
    assert torch.allclose(torch.tensor(t.attack_gain), torch.tensor(t.gain), atol=0.1), (t.attack_gain, t.gain)
    # judges gain with the accentuation (measured ≈ 1.0–1.1 of the optimised gain), far less with the attack
    # (≈ 0.1–0.2) and the attack changes the photo less: the difference is what was drawn, not its size
    assert t.ratio() > 0.5 and t.ratio() > t.ratio(attack=True) + 0.3, t.table()
    assert t.attack_rmse.mean() < t.rmse.mean()
    table = t.table()
    assert "gradient attack" in table and "efficientnet_lite2" in table


def test_attack_reaches_the_asked_gain(judges) -> None:
    model = judges[0]
    seed = model.to_input(fw.sample_image("chelsea"))
    cls = model.class_index("tiger cat")
    before = model.logits(seed).log_softmax(-1)[0, cls]
    attacked = attack_to_gain(model, seed, [cls], [1.0])
    after = model.logits(model.to_input(attacked)).log_softmax(-1)[0, cls]
    assert 0.95 <= float(after - before) <= 1.15
    assert float(attacked.min()) >= 0 and float(attacked.max()) <= 1


def test_attack_lands_each_image_of_a_batch_on_its_gain(judges) -> None:
    # two images that need different numbers of steps go through one batch; each stops on its own gain
    model = judges[0]
    seeds = model.to_input([fw.sample_image("chelsea"), fw.sample_image("coffee")])
    classes = [model.class_index("tiger cat"), model.class_index("cup")]
    want = torch.tensor([0.5, 1.5])
    index = torch.tensor(classes)[:, None]
    before = model.logits(seeds).log_softmax(-1).gather(1, index)[:, 0]
    attacked = attack_to_gain(model, seeds, classes, want.tolist())
    after = model.logits(model.to_input(attacked)).log_softmax(-1).gather(1, index)[:, 0]
    gained = after - before
    assert ((gained >= want - 0.05) & (gained <= want + 0.15)).all(), gained
    # the larger gain needed the larger change
    rmse = (attacked - seeds).pow(2).mean(dim=(1, 2, 3)).sqrt()
    assert rmse[1] > rmse[0] > 0, rmse


def test_attack_stops_at_max_steps(judges) -> None:
    model = judges[0]
    seed = model.to_input(fw.sample_image("chelsea"))
    attacked = attack_to_gain(model, seed, [model.class_index("tiger cat")], [50.0], max_steps=1)
    change = (attacked - seed).abs()
    assert float(change.max()) <= 1 / 255 + 1e-6 and float(change.mean()) > 0.5 / 255
    assert torch.equal(attack_to_gain(model, seed, [0], [50.0], max_steps=0), seed)


def test_bad_inputs_are_refused_clearly(accentuations, judges) -> None:
    model, results = accentuations
    with pytest.raises(ValueError, match="at least one judge"):
        fw.transferability(model, results, [])
    with pytest.raises(ValueError, match="at least one accentuation"):
        fw.transferability(model, [], judges)
    nn = torch.nn
    five = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    small = fw.load_model(five, name="tiny")
    with pytest.raises(ValueError, match="judge 'tiny' has 5 classes"):
        fw.transferability(model, results, {"tiny": small})
    hidden = fw.accentuate(
        model, fw.sample_image("chelsea"), "blocks.2:3", steps=1, n_crops=1, input_size=64, canvas=64
    )
    with pytest.raises(ValueError, match="needs class targets"):
        fw.transferability(model, [hidden], judges)
