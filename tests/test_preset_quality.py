"""benchmarks/preset_quality.py: candidate parsing, and a tiny run on two sample images (CPU-sized)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("preset_quality", ROOT / "benchmarks" / "preset_quality.py")
pq = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pq)  # type: ignore[union-attr]

TINY = "preset=preview,steps=2,n_crops=2,input_size=64,canvas=64"


def test_parse_candidate():
    name, s = pq.parse_candidate("fast:steps=60,n_crops=16,canvas=320,input_size=224,noise=0.02,crop_range=0.1/0.9")
    assert name == "fast"
    assert s == {
        "steps": 60,
        "n_crops": 16,
        "canvas": 320,
        "input_size": 224,
        "noise": 0.02,
        "crop_range": (0.1, 0.9),
        "preset": "paper",
    }
    assert pq.parse_candidate("preview") == ("preview", {"preset": "preview"})
    assert pq.parse_candidate("x:preset=preview,autocast=false,param=maco")[1] == {
        "preset": "preview",
        "autocast": False,
        "param": "maco",
    }
    for bad, message in (("x:steps", "not key=value"), (":steps=3", "no name"), ("x:preset=turbo", "unknown preset")):
        with pytest.raises(ValueError, match=message):
            pq.parse_candidate(bad)


def test_groups_by_shape():
    shapes = [(512, 770), (512, 512), (512, 767), (600, 512), (512, 768)]
    assert pq.groups_by_shape(shapes) == [[0, 2, 4], [1], [3]]


@pytest.mark.slow
def test_tiny_run_writes_table_figure_and_json(tmp_path, capsys):
    fig, out = tmp_path / "q.png", tmp_path / "q.json"
    argv = [
        "--device",
        "cpu",
        "--images",
        "chelsea",
        "astronaut",
        "--candidate",
        f"a:{TINY}",
        "--candidate",
        f"b:{TINY},noise=0.02",
        "--baseline",
        "a",
        "--figure",
        str(fig),
        "--json",
        str(out),
    ]
    assert pq.main(argv) == 0
    text = capsys.readouterr().out
    assert "candidate" in text and "targets:" in text
    report = json.loads(out.read_text())
    assert set(report["candidates"]) == {"a", "b"} and report["images"] == ["chelsea", "astronaut"]
    for cand in report["candidates"].values():
        assert len(cand["images"]) == 2 and cand["batches"] == 2  # different aspect ratios: two batches
        assert 0 < cand["mean_rmse"] < 0.2 and cand["seconds"] > 0
        assert all(abs(m["gain"]) < 5 and m["canvas"][0] == 64 for m in cand["images"])
    assert report["candidates"]["b"]["settings"]["noise"] == 0.02
    sheet = Image.open(fig)
    assert sheet.height > sheet.width / 3  # two rows of seed + two candidates
