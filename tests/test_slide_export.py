"""The slide-ready PNG (``compositing.titled_sheet`` and the widget's Download PNG): at most 1024 px wide,
with a title, the target, p before → after, λ, a legend, and text tall enough for a slide."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

import faccent_widget as fw
from faccent_widget.core.compositing import SHEET_MAX_WIDTH, SHEET_TEXT_PX, titled_sheet


def _ink_rows(img: Image.Image, box: tuple[int, int, int, int]) -> int:
    """How many pixel rows of ``box`` hold dark text."""
    a = np.asarray(img.crop(box).convert("L"))
    return int((a < 110).any(axis=1).sum())


def test_titled_sheet_is_slide_sized_with_readable_text() -> None:
    tiles = [torch.rand(3, 300, 451), torch.rand(3, 300, 451), torch.rand(300, 451), torch.rand(3, 900, 300)]
    sheet = titled_sheet(
        tiles,
        ["photo", "accentuation", "Grad-CAM", "a portrait"],
        title="Feature accentuation: Hg",
        subtitle="p(tiger cat) 0.09 → 0.83 · λ = 0.22",
        colourbar=("less", "more"),
        swatches=[((0, 0, 0), "photo kept"), ((255, 255, 255), "change shown")],
    )
    assert sheet.size[0] == SHEET_MAX_WIDTH and sheet.size[1] < 1400
    # the title's glyphs ("H" to the tail of "g") span well over 20 px; the subtitle's over 16
    assert _ink_rows(sheet, (24, 20, 600, 70)) >= 28
    assert _ink_rows(sheet, (24, 68, 600, 100)) >= 0.75 * SHEET_TEXT_PX
    # a very long title is shortened to the width, never wider than the sheet
    long = titled_sheet([torch.rand(3, 50, 50)], ["x"], title="x" * 500, width=400)
    assert long.size[0] == 400
    with pytest.raises(ValueError, match="captions"):
        titled_sheet([torch.rand(3, 8, 8)], [], title="t")
    with pytest.raises(ValueError, match="width"):
        titled_sheet([torch.rand(3, 8, 8)], ["a"], title="t", width=4000)


def test_download_png_names_target_p_and_lambda(model, chelsea) -> None:
    w = fw.FaccentWidget(model, chelsea, steps=2, lam=0.5)
    w.set_target(w.top[1]["index"])
    before = Image.open(io.BytesIO(w.panel_png()))
    assert before.size[0] == 1024
    result = w.run(steps=2)
    after = Image.open(io.BytesIO(w.panel_png()))
    assert after.size[0] == 1024 and after.size[1] < 1400
    assert np.abs(np.asarray(before, np.float32) - np.asarray(after, np.float32)).max() > 0  # the result shows
    assert result.lam == pytest.approx(0.5)
    # the title band and the legend line hold text; the title is big
    assert _ink_rows(after, (24, 20, 700, 70)) >= 24
    assert _ink_rows(after, (24, after.size[1] - 60, 1000, after.size[1] - 10)) >= 0.75 * SHEET_TEXT_PX
