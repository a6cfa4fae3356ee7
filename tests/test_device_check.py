"""The device check's CI form: ``benchmarks/device_check.py --device cpu --quick`` in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = {"environment", "sync", "correctness", "speed", "graphs", "floor", "widget", "fp16", "gallery", "triage"}


@pytest.mark.slow
def test_device_check_quick_on_cpu(tmp_path):
    out = tmp_path / "device_check.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "device_check.py"),
            "--device",
            "cpu",
            "--quick",
            "--json",
            str(out),
            "--time-limit",
            "3000",  # every section runs, however loaded the machine
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    report = json.loads(out.read_text())
    sections = report["sections"]
    assert set(sections) == SECTIONS
    for name, rec in sections.items():
        assert rec["ok"], f"{name}: {rec.get('error') or rec.get('skipped')}\n{rec.get('traceback', '')}"
        assert rec["seconds"] >= 0

    env_rec = sections["environment"]
    assert env_rec["device"] == "cpu" and env_rec["torch"] and "reason" in env_rec["policies"]["efficientnet_lite0"]
    assert sections["sync"]["auto"]["ok"] and sections["sync"]["auto"]["error"] == ""
    corr = sections["correctness"]
    assert corr["within_tolerance"] and len(corr["objective_rel_diff"]) == corr["steps"] == 2
    rows = sections["speed"]["rows"]
    assert {r["preset"] for r in rows} == set(env_rec["presets"]) and all(r["ms_per_step"] > 0 for r in rows)
    assert all(r["seconds_per_accentuation"] > 0 and r["peak_mb"] is None for r in rows)  # no GPU memory on a CPU
    widget = sections["widget"]
    assert (
        widget["steps"] == 3 and widget["chunks"] >= 1 and widget["chunks_per_s"] > 0 and widget["steps_per_chunk"] >= 1
    )
    assert widget["chunk_budget_s"] == pytest.approx(0.2) and widget["device_shown"] == "cpu"
    assert 0 < widget["first_frame_s"] < 600
    fp16 = sections["fp16"]
    assert fp16["runs"]["fp16"]["history_finite"] and fp16["runs"]["fp16"]["nonfinite_gradients_dropped"] == 0
    assert fp16["gradient_fidelity"]["fp16_scaled"]["cosine_vs_fp32"] > 0.9
    gallery = sections["gallery"]
    assert len(gallery["targets"]) == gallery["k"] == 2 and gallery["batched_s"] > 0 and gallery["singles_s"] > 0
    graphs = sections["graphs"]  # the emulating backend on a CPU: graphed runs equal eager ones bit for bit
    assert graphs["mode"].startswith("emulated") and len(graphs["cases"]) == 4
    assert all(c["equal"] and c["replays"] > 0 and c["fell_back"] is None for c in graphs["cases"].values())
    floor = sections["floor"]["rows"]
    assert {r["preset"] for r in floor} == set(env_rec["presets"])
    assert all(r["floor_ms"] > 0 and r["eager_ms_per_step"] > 0 and r["graphed_ms_per_step"] is None for r in floor)
    triage = sections["triage"]
    assert triage["images"] == 7 and triage["report_whole"] and triage["accentuated"] == triage["mistakes"]
    assert "== summary" in proc.stdout and "speed" in proc.stdout
