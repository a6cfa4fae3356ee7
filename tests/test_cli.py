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


def test_main_job_suppress_and_caricature(tmp_path, capsys):
    out = tmp_path / "s.png"
    assert main(["coffee", "--target", "espresso", "--suppress", "--steps", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "accentuating suppress logit 967 (espresso)" in text and "target probability:" in text
    assert main(["coffee", "--caricature", "blocks.3.0", "--steps", "2", "--out", str(out)]) == 0
    assert "accentuating caricature at blocks.3.0" in capsys.readouterr().out
    assert main(["coffee", "--caricature", "blocks.3.0", "--suppress", "--out", str(out)]) == 2
    assert "--caricature LAYER replaces --target and --suppress" in capsys.readouterr().err
    assert main(["coffee", "--caricature", "blocks.99", "--out", str(out)]) == 2
    assert "unknown layer 'blocks.99'" in capsys.readouterr().err
