"""Old public spellings keep working for a while, with a DeprecationWarning naming the new one."""

from __future__ import annotations

import pytest
import torch

import faccent_widget as fw


def test_model_view_is_to_input() -> None:
    model = fw.load_model()
    img = fw.sample_image("coffee")
    with pytest.warns(DeprecationWarning, match="use Model.to_input"):
        old = model.view(img)
    assert torch.equal(old, model.to_input(img)) and old.shape == (1, 3, 224, 224)


def test_panel_is_labelled_strip() -> None:
    tiles = [torch.rand(3, 20, 30), torch.rand(3, 20, 30)]
    with pytest.warns(DeprecationWarning, match="use labelled_strip"):
        old = fw.panel(tiles, ["a", "b"])
    assert old.size == fw.labelled_strip(tiles, ["a", "b"]).size
