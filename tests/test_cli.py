"""The main-job command line."""

from __future__ import annotations

from PIL import Image

from faccent_widget.cli import main


def test_main_job_prints_top5_and_writes_panel(tmp_path, capsys):
    out = tmp_path / "panel.png"
    assert main(["coffee", "--steps", "3", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "1. espresso" in text
    assert "accentuating logit 968 (cup)" in text  # the 2nd most likely class
    assert "target probability:" in text and "->" in text and "ms/step" in text
    panel = Image.open(out)
    assert panel.width > 2.5 * panel.height  # seed | accentuation | difference


def test_main_job_latent_target(tmp_path, capsys):
    out = tmp_path / "p.png"
    assert main(["chelsea", "--target", "blocks.4:3", "--steps", "2", "--out", str(out)]) == 0
    assert "target activation:" in capsys.readouterr().out and out.exists()
