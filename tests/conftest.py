"""Shared fixtures: the real default model and real sample images (loaded once per session)."""

from __future__ import annotations

import pytest
import torch

import faccent_widget as fw

torch.set_num_threads(max(1, torch.get_num_threads()))


@pytest.fixture(scope="session")
def model() -> fw.Model:
    return fw.load_model()


@pytest.fixture(scope="session")
def chelsea() -> torch.Tensor:
    return fw.sample_image("chelsea")


@pytest.fixture(scope="session")
def coffee() -> torch.Tensor:
    return fw.sample_image("coffee")


@pytest.fixture(autouse=True)
def _lambda_cache_in_tmp(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The widget's on-disk λ mark cache goes to a fresh folder per test, never to ~/.cache."""
    monkeypatch.setenv("FACCENT_WIDGET_CACHE", str(tmp_path_factory.mktemp("lambda-cache")))
