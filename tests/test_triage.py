"""Dataset triage: inputs and folder mapping, the run and its report, the store (resume after a kill,
settings refused), the HTML report's escaping, the notebook browser, and torchrun on CPU (gloo).

Real model (the default EfficientNet-Lite0) and real images (the bundled samples), tiny settings.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import numpy as np
import pytest
import torch
from test_engine import _FlattensWithView

import faccent_widget as fw
from faccent_widget.cli import main as cli_main
from faccent_widget.triage import (
    TriageInputError,
    TriageReport,
    TriageSettingsMismatch,
    build_demo_folder,
    load_class_map,
)
from faccent_widget.triage.cli import safe
from faccent_widget.triage.data import TriageImageError, as_triage_data
from faccent_widget.triage.decode import ImageTooLargeError, open_bounded
from faccent_widget.triage.distributed import shard
from faccent_widget.triage.page import page_data
from faccent_widget.triage.report import SCRIPT_HASH
from faccent_widget.triage.run import canvas_seed
from faccent_widget.triage.store import TriageStore, TriageStoreError, TriageStoreLocked

ROOT = Path(__file__).resolve().parents[1]
FAST = dict(steps=3, n_crops=2, input_size=96, canvas=96)
FAST_ARGS = ["--steps", "3", "--crops", "2", "--input-size", "96", "--canvas", "96", "--quiet"]
EVIL = "<img src=x onerror=alert(1)>"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _save(img: torch.Tensor, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fw.to_pil(img).save(path)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """14 images: the 7 labelled samples and their mirror images, 128 px (8 are mistakes of the model)."""
    return build_demo_folder(tmp_path_factory.mktemp("demo") / "images", variants=2, size=128)


@pytest.fixture(scope="module")
def single_run(model: fw.Model, demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> TriageReport:
    return fw.triage(model, demo_dir, out=tmp_path_factory.mktemp("single") / "out", batch_size=2, **FAST)


# --------------------------------------------------------------------------- inputs


def test_folder_maps_by_label_wnid_and_class_map(model: fw.Model, tmp_path: Path) -> None:
    img = fw.sample_image("rocket", size=64)
    for folder in ("tabby", "Egyptian_cat", "n03773504", "rocketry", "kitty"):  # n03773504 = missile
        _save(img, tmp_path / folder / "a.png")
    (tmp_path / "kitty" / "notes.txt").write_text("not an image")
    with pytest.raises(TriageInputError) as err:
        as_triage_data(tmp_path, model.labels)
    msg = str(err.value)
    assert "2 class folder(s)" in msg and "'kitty'" in msg and "'rocketry'" in msg and "'tabby'" not in msg

    data = as_triage_data(tmp_path, model.labels, class_map={"rocketry": "projectile", "kitty": 281})
    by_key = {s.key: model.labels[s.label] for s in data}
    assert by_key == {
        "Egyptian_cat/a.png": "Egyptian cat",
        "kitty/a.png": "tabby",
        "n03773504/a.png": "missile",
        "rocketry/a.png": "projectile",
        "tabby/a.png": "tabby",
    }
    assert data[0].load().shape == (3, 64, 96)


def test_class_map_files_and_their_errors(model: fw.Model, tmp_path: Path) -> None:
    text = tmp_path / "map.txt"
    text.write_text("# folder: label\nrocketry: missile\n\nkitty\t281\n")
    assert load_class_map(text) == {"rocketry": "missile", "kitty": "281"}
    js = tmp_path / "map.json"
    js.write_text(json.dumps({"rocketry": "missile", "kitty": 281}))
    assert load_class_map(js) == {"rocketry": "missile", "kitty": 281}
    bad = tmp_path / "bad.txt"
    bad.write_text("rocketry missile\n")
    with pytest.raises(TriageInputError, match="line 1"):
        load_class_map(bad)

    data_dir = tmp_path / "data"
    _save(fw.sample_image("rocket", size=48), data_dir / "rocketry" / "a.png")
    with pytest.raises(TriageInputError, match="close: 'missile'"):
        as_triage_data(data_dir, model.labels, class_map={"rocketry": "misile"})
    with pytest.raises(TriageInputError, match="not in .*'typo'"):
        as_triage_data(data_dir, model.labels, class_map={"rocketry": "missile", "typo": "tabby"})
    with pytest.raises(TriageInputError, match="not found"):
        as_triage_data(tmp_path / "nope", model.labels)
    (tmp_path / "empty" / "tabby").mkdir(parents=True)
    with pytest.raises(TriageInputError, match="no images"):
        as_triage_data(tmp_path / "empty", model.labels)


def test_pairs_datasets_and_limit(model: fw.Model) -> None:
    imgs = fw.sample_images(size=48)
    pairs = [(imgs["rocket"], "missile"), (imgs["coffee"], 967), (imgs["chelsea"], "tabby")]
    data = as_triage_data(pairs, model.labels)
    assert [s.label for s in data] == [657, 967, 281]
    with pytest.raises(TriageInputError, match="item 1: no model class named 'expresso'"):
        as_triage_data([(imgs["rocket"], "missile"), (imgs["coffee"], "expresso")], model.labels)

    class Toy(torch.utils.data.Dataset):
        classes = ["missile", "espresso"]

        def __len__(self) -> int:
            return 5

        def __getitem__(self, i: int):
            return imgs["rocket" if i % 2 == 0 else "coffee"], i % 2

    data = as_triage_data(Toy(), model.labels)
    assert [s.label for s in data] == [657, 967, 657, 967, 657]
    assert [s.index for s in data.select(2)] == [0, 2] and len(data.select(None)) == 5
    # a changed list is a different dataset (the store refuses to mix them)
    other = as_triage_data([(imgs["flower"], "missile"), *pairs[1:]], model.labels)
    assert other.digest() != as_triage_data(pairs, model.labels).digest()


def test_canvas_seed_and_shards() -> None:
    img = torch.rand(3, 427, 640)
    seed = canvas_seed(img, 96)
    assert seed.shape == (3, 96, 144)  # 96 × 143.9 → cropped to a multiple of 12
    assert canvas_seed(torch.rand(3, 100, 500), 96).shape == (3, 96, 192)  # at most 2 × canvas
    assert canvas_seed(torch.rand(3, 300, 200), 96).shape == (3, 144, 96)
    items = list(range(7))
    assert shard(items, 0, 2) == [0, 2, 4, 6] and shard(items, 1, 2) == [1, 3, 5]
    assert sorted(shard(items, 0, 3) + shard(items, 1, 3) + shard(items, 2, 3)) == items


# --------------------------------------------------------------------------- the run and its report


def test_triage_finds_the_models_mistakes_and_ranks_them(
    model: fw.Model, single_run: TriageReport, demo_dir: Path
) -> None:
    report = single_run
    truth = {p["key"]: p for p in report.predictions}
    assert len(truth) == 14
    mistakes = set()
    for key, row in truth.items():
        image = fw.load_image(demo_dir / key)
        assert model.predict(image, k=1)[0].index == row["predicted"], key  # same numbers as Model.predict
        assert row["true_label"] == key.split("/")[0]
        if row["predicted"] != row["true"]:
            mistakes.add(key)
    assert "missile/rocket_orig.jpg" in mistakes  # the rocket → drilling platform mistake is real
    assert {it.key for it in report} == mistakes and len(report) == report.summary["mistakes"]
    assert report.summary["accuracy"] == pytest.approx(1 - len(mistakes) / 14)
    margins = [it.p_predicted - it.p_true for it in report]
    assert margins == sorted(margins, reverse=True) and [it.rank for it in report] == list(range(1, len(report) + 1))
    by_conf = [it.p_predicted for it in report.ranked("confidence")]
    assert by_conf == sorted(by_conf, reverse=True)

    for item in report:
        seed, accents, masks = item.seed, item.accentuations, item.masks
        assert min(seed.shape[-2:]) == 96 and set(accents) == {"predicted", "true"}
        assert all(a.shape == seed.shape for a in accents.values())
        assert all(0 <= float(m.min()) and float(m.max()) <= 1 for m in masks.values())
        assert item.masked("true").shape == seed.shape
        assert item.scores["true"]["class"] == item.true_index
        assert item.scores["predicted"]["class"] == item.predicted_index
    # accentuating toward the true class raises its probability (3 steps: on average, clearly)
    gains = [it.scores["true"]["prob"] - it.scores["true"]["seed_prob"] for it in report]
    assert float(np.mean(gains)) > 0.02 and sum(g > 0 for g in gains) >= len(gains) - 1, gains
    fitted = report.normalizer
    assert fitted is not None and fitted.n_maps == 2 * len(report)


def test_rerun_resumes_and_changed_settings_are_refused(
    model: fw.Model, single_run: TriageReport, demo_dir: Path
) -> None:
    out = single_run.root
    stamps = {d.name: (d / "row.json").stat().st_mtime_ns for d in (out / "items").iterdir()}
    again = fw.triage(model, demo_dir, out=out, batch_size=2, **FAST)
    assert again.runs[-1]["predicted"] == 0 and again.runs[-1]["accentuated"] == 0  # nothing recomputed
    assert len(again.runs) == 2
    assert [it.key for it in again] == [it.key for it in single_run]
    assert {d.name: (d / "row.json").stat().st_mtime_ns for d in (out / "items").iterdir()} == stamps
    with pytest.raises(TriageSettingsMismatch, match=r"engine\.lam: 1\.0 → 2\.0"):
        fw.triage(model, demo_dir, out=out, lam=2.0, **FAST)
    with pytest.raises(TriageSettingsMismatch, match="targets"):
        fw.triage(model, demo_dir, out=out, targets=("predicted",), **FAST)
    with pytest.raises(TriageSettingsMismatch, match=r"engine\.steps: 3 → 4"):
        fw.triage(model, demo_dir, out=out, **{**FAST, "steps": 4})


def test_triage_in_memory_pairs_leaves_the_model_untouched(model: fw.Model) -> None:
    module = model.module
    before = {k: v.clone() for k, v in module.state_dict().items()}
    flags = [p.requires_grad for p in module.parameters()]
    module.train()
    imgs = fw.sample_images(size=96)
    report = fw.triage(model, [(imgs["rocket"], "missile"), (imgs["coffee"], "espresso")], targets="predicted", **FAST)
    assert module.training and [p.requires_grad for p in module.parameters()] == flags
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    module.eval()
    assert [it.predicted_label for it in report] == ["drilling platform"]
    assert set(report[0].accentuations) == {"predicted"}
    assert report.root.exists()  # a temporary store, alive as long as the report


def test_bad_arguments_are_named(model: fw.Model, demo_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="targets must be"):
        fw.triage(model, demo_dir, out=tmp_path / "a", targets=("predicted", "top5"))
    with pytest.raises(ValueError, match="rank_by must be one of"):
        fw.triage(model, demo_dir, out=tmp_path / "a", rank_by="loss")
    with pytest.raises(TypeError, match="unknown triage setting"):
        fw.triage(model, demo_dir, out=tmp_path / "a", step=3)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "thesis.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        fw.triage(model, demo_dir, out=tmp_path / "full", limit=1, **FAST)
    assert (tmp_path / "full" / "thesis.txt").read_text() == "keep me"
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["thesis.txt"]  # not even a lock file


# --------------------------------------------------------------------------- HTML and the browser


@pytest.fixture(scope="module")
def evil_report(model: fw.Model, tmp_path_factory: pytest.TempPathFactory) -> TriageReport:
    """A model whose 'missile' class is labelled with markup, and a folder named after it."""
    labels = list(model.labels)
    labels[657] = EVIL
    evil_model = fw.Model(
        model.module,
        labels=labels,
        mean=model.mean,
        std=model.std,
        input_size=model.input_size,
        name="<b>efficientnet</b>",
    )
    root = tmp_path_factory.mktemp("evil")
    _save(fw.sample_image("rocket", size=96), root / "data" / EVIL / "rocket.png")
    _save(fw.sample_image("coffee", size=96), root / "data" / "espresso" / "coffee.png")
    return fw.triage(evil_model, root / "data", out=root / "out", **FAST)


def test_html_report_escapes_labels_and_is_self_contained(evil_report: TriageReport, tmp_path: Path) -> None:
    assert [it.true_label for it in evil_report] == [EVIL]
    page = evil_report.to_html(tmp_path / "report.html").read_text(encoding="utf-8")
    assert EVIL not in page and "<b>efficientnet</b>" not in page
    assert "\\u003cimg src=x onerror=alert(1)\\u003e" in page and "&lt;b&gt;efficientnet&lt;/b&gt;" in page
    assert "<img " not in page  # every image is data, rendered by the page's script
    data = json.loads(page.split('<script type="application/json" id="triage-data">', 1)[1].split("</script>", 1)[0])
    (item,) = data["items"]
    assert item["true_label"] == EVIL and set(item["images"]) == {"seed", "predicted", "true"}
    assert all(src.startswith("data:image/jpeg;base64,") for src in item["images"].values())
    assert "http://" not in page and "https://" not in page and "default-src 'none'" in page


def test_browser_grid_detail_and_faccent_widget(evil_report: TriageReport) -> None:
    browser = evil_report.show(page_size=1)  # the triage's own model (with the markup label)
    assert browser.page_label.value == "page 1 / 1" and len(browser.cards) == 1
    cell = browser.grid.children[0]
    texts = [w.value for w in cell.children if isinstance(w, widgets.HTML)]
    assert any("true: &lt;img src=x onerror=alert(1)&gt; (" in t for t in texts)  # escaped: shown as text
    assert not any(EVIL in t for t in texts) and any("predicted: drilling platform (" in t for t in texts)
    assert browser.cards[0].description == "#1  open"
    header = browser.children[0].value
    assert EVIL not in header and "&lt;b&gt;efficientnet&lt;/b&gt;" in header
    browser.cards[0].click()
    assert browser.selected is evil_report[0] and browser.detail.layout.display == "flex"
    html_captions = [
        w.value
        for box in browser.detail.children
        if isinstance(box, widgets.HBox)
        for tile in box.children
        if isinstance(tile, widgets.VBox)
        for w in tile.children
        if isinstance(w, widgets.HTML)
    ]
    assert len(html_captions) == 7 and any("where: &lt;img src=x" in c for c in html_captions)  # + 2 changes
    assert not any(EVIL in c for c in html_captions)
    widget = browser.open_faccent()
    assert isinstance(widget, fw.FaccentWidget) and widget in browser.detail.children
    assert "drilling platform" in widget.predicted_vs_true and EVIL in widget.predicted_vs_true
    browser.close_detail()
    assert browser.detail.children == () and browser.selected is None


def test_open_in_faccent_widget_shows_the_reports_numbers(model: fw.Model, tmp_path: Path) -> None:
    """Issue 22, one measure: "Open in FaccentWidget" opens the full image from its file (not the smaller
    canvas seed), so the panel's p of the predicted class is the report's."""
    _save(fw.sample_image("chelsea", size=256), tmp_path / "data" / "tabby" / "chelsea.png")
    report = fw.triage(model, tmp_path / "data", out=tmp_path / "out", **FAST)
    (item,) = list(report)
    assert item.source is not None and item.source.name == "chelsea.png"
    browser = report.show(page_size=1)
    browser.cards[0].click()
    widget = browser.open_faccent()
    assert widget is not None
    (p_panel,) = [t["prob"] for t in widget.top if t["index"] == item.predicted_index]
    assert abs(p_panel - item.p_predicted) < 1e-5
    p_seed = float(model.probabilities(item.seed)[item.predicted_index])  # the canvas seed: another picture
    assert abs(p_seed - item.p_predicted) > 1e-3


# --------------------------------------------------------------------------- command line


def test_cli_user_errors_are_one_line_with_status_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    for folder in ("tabby", "kitty", "rocketry"):
        _save(fw.sample_image("chelsea", size=48), data / folder / "a.png")
    assert cli_main(["triage", str(data), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error:") and "'kitty'" in err and "'rocketry'" in err
    (tmp_path / "map.txt").write_text("kitty: tabby\nrocketry: nonsense\n")
    assert cli_main(["triage", str(data), "--out", str(tmp_path / "o"), "--class-map", str(tmp_path / "map.txt")]) == 2
    assert "no model class named 'nonsense'" in capsys.readouterr().err
    assert cli_main(["triage", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err
    assert cli_main(["triage"]) == 2
    assert "give an image folder" in capsys.readouterr().err
    assert cli_main(["triage", str(data), "--out", str(tmp_path / "o"), "--model", "lenet"]) == 2
    assert "unknown model 'lenet'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        cli_main(["triage", str(data), "--out", str(tmp_path / "o"), "--limit", "0"])
    assert exit_.value.code == 2


def test_cli_triage_with_class_map_writes_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    _save(fw.sample_image("rocket", size=96), data / "rockets" / "rocket.png")
    _save(fw.sample_image("coffee", size=96), data / "espresso" / "coffee.png")
    (tmp_path / "map.txt").write_text("rockets: missile\n")
    out = tmp_path / "out"
    assert cli_main(["triage", str(data), "--out", str(out), "--class-map", str(tmp_path / "map.txt"), *FAST_ARGS]) == 0
    text = capsys.readouterr().out
    assert "accuracy: 50.0% (1/2)" in text and "mistakes: 1" in text
    assert "rockets/rocket.png: true missile" in text and "predicted drilling platform" in text
    assert (out / "report.html").is_file() and (out / "index.json").is_file()
    assert (
        cli_main(
            [
                "triage",
                str(data),
                "--out",
                str(out),
                "--class-map",
                str(tmp_path / "map.txt"),
                *FAST_ARGS,
                "--steps",
                "5",
            ]
        )
        == 2
    )  # other settings: refused, one line
    assert "engine.steps: 3 → 5" in capsys.readouterr().err
    # CUDA graphs on or off do not change a result: the store resumes (nothing is redone)
    rerun = ["triage", str(data), "--out", str(out), "--class-map", str(tmp_path / "map.txt"), *FAST_ARGS]
    assert cli_main([*rerun, "--no-cuda-graphs"]) == 0
    assert "mistakes: 1" in capsys.readouterr().out


def _item_id(item: Any) -> str:
    return str(item.row["id"])


def _predictions(out: Path) -> list[dict]:
    return [row for f in sorted((out / "predictions").glob("*.json")) for row in json.loads(f.read_text())]


@pytest.mark.slow
def test_resume_after_kill_loses_and_repeats_nothing(model: fw.Model, demo_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "faccent_widget",
        "triage",
        str(demo_dir),
        "--out",
        str(out),
        *FAST_ARGS,
        "--steps",
        "8",
        "--batch-size",
        "1",
    ]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    items = out / "items"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if items.is_dir() and any((d / "row.json").is_file() for d in items.iterdir() if d.name[0] != "."):
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    finished = {d.name: (d / "row.json").stat().st_mtime_ns for d in items.iterdir() if d.name[0] != "."}
    run_ids = {name: json.loads((items / name / "row.json").read_text())["run_id"] for name in finished}
    total = len([p for p in _predictions(out) if p["predicted"] != p["true"]])
    assert 1 <= len(finished) < total and not (out / "index.json").exists()

    report = fw.triage(model, demo_dir, out=out, batch_size=1, **{**FAST, "steps": 8})
    names = sorted(d.name for d in items.iterdir())
    assert names == sorted(_item_id(it) for it in report) and len(names) == total  # no temporaries left
    assert len({it.index for it in report}) == len(report) == report.summary["mistakes"] == total
    for name, stamp in finished.items():  # finished items were not recomputed
        assert (items / name / "row.json").stat().st_mtime_ns == stamp
        assert json.loads((items / name / "row.json").read_text())["run_id"] == run_ids[name]
    new_ids = {json.loads((items / n / "row.json").read_text())["run_id"] for n in names if n not in finished}
    assert len(new_ids) == 1 and not new_ids & set(run_ids.values())
    assert report.runs[-1]["accentuated"] == total - len(finished) and report.runs[-1]["predicted"] == 0
    print(
        f"\n[resume] killed after {len(finished)}/{total} finished items; the rerun computed {total - len(finished)}, "
        f"kept {len(finished)} untouched, predicted 0 images again"
    )


@pytest.mark.slow
def test_torchrun_two_processes_match_one(demo_dir: Path, single_run: TriageReport, tmp_path: Path) -> None:
    out = tmp_path / "dist"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "faccent_widget",
        "triage",
        str(demo_dir),
        "--out",
        str(out),
        *FAST_ARGS,
        "--batch-size",
        "2",
    ]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("accuracy:") == 1  # only rank 0 reports
    dist = TriageReport.load(out)
    assert dist.runs[-1]["world_size"] == 2
    assert [p["predicted"] for p in dist.predictions] == [p["predicted"] for p in single_run.predictions]
    assert [it.key for it in dist] == [it.key for it in single_run]
    ranks = {json.loads((dist.root / "items" / _item_id(it) / "row.json").read_text())["rank"] for it in dist}
    assert ranks == {0, 1}  # both processes accentuated
    for a, b in zip(dist, single_run):
        for target in ("predicted", "true"):
            diff = (a.accentuations[target] - b.accentuations[target]).abs()
            assert float(diff.mean()) < 0.01 and float(diff.max()) < 0.25, (a.key, target)
            assert a.scores[target]["prob"] == pytest.approx(b.scores[target]["prob"], abs=0.05)


# --------------------------------------------------------------------------- one bad file (issue 25)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _bomb_png(path: Path) -> None:
    """A 200-byte PNG that claims 20000 × 20000 pixels (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 1, 0, 0, 0, 0)
    body = _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _png_chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


def _truncated_jpeg(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fw.to_pil(fw.sample_image("chelsea", size=128)).save(path, format="JPEG")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _bad_folder(root: Path) -> Path:
    """rocket (a mistake) and coffee (right), plus a truncated JPEG, a decompression bomb and a text file."""
    _save(fw.sample_image("rocket", size=96), root / "missile" / "rocket.png")
    _save(fw.sample_image("coffee", size=96), root / "espresso" / "coffee.png")
    _truncated_jpeg(root / "tabby" / "cut.jpg")
    _bomb_png(root / "tabby" / "bomb.png")
    (root / "espresso" / "notes.jpg").write_text("not an image")
    return root


def _stamps(out: Path) -> dict[str, int]:
    return {d.name: (d / "row.json").stat().st_mtime_ns for d in (out / "items").iterdir() if d.name[0] != "."}


def test_unreadable_images_are_skipped_listed_and_a_repaired_folder_keeps_the_work(
    model: fw.Model, tmp_path: Path
) -> None:
    data, out = _bad_folder(tmp_path / "data"), tmp_path / "out"
    report = fw.triage(model, data, out=out, targets="predicted", **FAST)
    reasons = {r["key"]: r["reason"] for r in report.skipped}
    assert set(reasons) == {"tabby/cut.jpg", "tabby/bomb.png", "espresso/notes.jpg"}
    assert "truncated" in reasons["tabby/cut.jpg"]
    assert reasons["tabby/bomb.png"].startswith("DecompressionBombError")
    assert "cannot identify image file" in reasons["espresso/notes.jpg"]
    assert report.summary["skipped"] == 3 and report.summary["items"] == 2 and len(report) == 1
    stored = json.loads((out / "index.json").read_text())["skipped"]
    assert {r["key"] for r in stored} == set(reasons)
    page = report.html()
    assert "Skipped: 3 file(s)" in page and "tabby/cut.jpg" in page and "DecompressionBombError" in page

    with pytest.raises(TriageImageError, match=r"cannot read image 'espresso/notes.jpg': UnidentifiedImageError"):
        fw.triage(model, data, out=tmp_path / "strict", targets="predicted", on_error="raise", **FAST)

    # repairing the folder is not a settings change: the rerun keeps every stored result
    stamps = _stamps(out)
    for bad in ("tabby/cut.jpg", "tabby/bomb.png", "espresso/notes.jpg"):
        (data / bad).unlink()
    again = fw.triage(model, data, out=out, targets="predicted", **FAST)
    assert again.runs[-1]["predicted"] == 0 and again.runs[-1]["accentuated"] == 0 and again.skipped == []
    assert _stamps(out) == stamps and [it.key for it in again] == [it.key for it in report]
    # an added file is predicted alone; a changed file is predicted again
    _save(fw.sample_image("chelsea", size=96), data / "tabby" / "chelsea.png")
    time.sleep(0.01)
    _save(fw.sample_image("coffee", size=80), data / "espresso" / "coffee.png")
    third = fw.triage(model, data, out=out, targets="predicted", **FAST)
    assert third.runs[-1]["predicted"] == 2 and third.summary["items"] == 3
    assert [p["key"] for p in third.predictions] == ["espresso/coffee.png", "missile/rocket.png", "tabby/chelsea.png"]
    assert [p["index"] for p in third.predictions] == [0, 1, 2]


def test_unreadable_folders_and_links_are_reported_not_recounted(model: fw.Model, tmp_path: Path) -> None:
    root = tmp_path / "val"
    _save(fw.sample_image("chelsea", size=48), root / "tabby" / "a.png")
    _save(fw.sample_image("rocket", size=48), root / "missile" / "b.png")
    (root / "missile" / "loop").symlink_to(root / "missile")  # a loop
    (root / "missile" / "up").symlink_to(root)  # the root again, under 'missile'
    (root / "espresso").symlink_to(root)  # a class folder that is the root
    (root / "lynx").symlink_to(root / "tabby")  # a class folder that is another class
    data = as_triage_data(root, model.labels)
    assert [s.key for s in data] == ["missile/b.png", "tabby/a.png"]  # nothing counted twice
    problems = {p.key: p.reason for p in data.problems}
    assert set(problems) == {"espresso/", "missile/up/", "missile/loop/", "lynx/"}
    assert "link to the image folder itself" in problems["espresso/"] and "already scanned" in problems["lynx/"]
    report = fw.triage(model, root, out=tmp_path / "out", targets="predicted", **FAST)
    assert {r["key"] for r in report.skipped} == set(problems)
    with pytest.raises(TriageImageError, match="cannot read 'espresso/'"):
        fw.triage(model, root, out=tmp_path / "strict", on_error="raise", **FAST)


def _without_root_powers(cmd: list[str]) -> list[str]:
    """``cmd`` run so that chmod 000 applies (root reads such files unless it drops its DAC capabilities)."""
    if os.geteuid() != 0:
        return cmd
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: chmod 000 cannot be made to apply")
    caps = "-dac_override,-dac_read_search"
    return [setpriv, f"--bounding-set={caps}", f"--inh-caps={caps}", *cmd]


def test_cli_permission_denied_files_and_folders_are_listed_or_fatal_with_strict(tmp_path: Path) -> None:
    root = tmp_path / "val"
    _save(fw.sample_image("rocket", size=96), root / "missile" / "rocket.png")
    _save(fw.sample_image("coffee", size=96), root / "espresso" / "coffee.png")
    _save(fw.sample_image("chelsea", size=96), root / "tabby" / "chelsea.png")
    _save(fw.sample_image("coffee", size=96), root / "espresso" / "locked.png")
    (root / "espresso" / "locked.png").chmod(0)
    (root / "tabby").chmod(0)
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    base = [sys.executable, "-m", "faccent_widget", "triage", str(root), *FAST_ARGS, "--targets", "predicted"]
    try:
        done = subprocess.run(
            _without_root_powers([*base, "--out", str(tmp_path / "out")]),
            env=_env(),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert "skipped: 2 file(s) or folder(s)" in done.stdout
        assert "tabby/: folder not readable (Permission denied)" in done.stdout
        assert "espresso/locked.png: PermissionError" in done.stdout
        strict = subprocess.run(
            _without_root_powers([*base, "--out", str(tmp_path / "strict"), "--strict"]),
            env=_env(),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert strict.returncode == 2 and "Traceback" not in strict.stderr
        assert strict.stderr.strip().count("\n") == 0 and "cannot read 'tabby/'" in strict.stderr
        denied = subprocess.run(
            _without_root_powers([*base, "--out", str(readonly / "out")]),
            env=_env(),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert denied.returncode == 2 and "Traceback" not in denied.stderr, denied.stderr[-2000:]
        assert denied.stderr.strip().count("\n") == 0 and "Permission denied" in denied.stderr
    finally:
        (root / "tabby").chmod(0o755)
        readonly.chmod(0o755)


def test_a_second_run_into_a_folder_in_use_is_refused(
    model: fw.Model, demo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    with TriageStore(out).locked():
        with pytest.raises(TriageStoreLocked, match=rf"another triage is writing to {out} \(pid {os.getpid()} on "):
            fw.triage(model, demo_dir, out=out, limit=1, **FAST)
        assert cli_main(["triage", str(demo_dir), "--out", str(out), "--limit", "1", *FAST_ARGS]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: another triage is writing to") and "\n" not in err
        assert not (out / "items").exists()  # nothing touched
    report = fw.triage(model, demo_dir, out=out, limit=1, targets="predicted", **FAST)  # released
    assert report.summary["items"] == 1


# --------------------------------------------------------------------------- reliability round 3 (issue 25)

ESCAPES = "\x1b]0;pwned\x07\x1b[2J"


def test_cli_non_utf8_and_escape_file_names_are_triaged_and_printed_inert(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    _save(fw.sample_image("coffee", size=96), data / "espresso" / "coffee.png")
    (data / "missile").mkdir()
    rocket = fw.to_png_bytes(fw.sample_image("rocket", size=96))
    Path(os.fsdecode(os.fsencode(data / "missile") + b"/r\xe9cket.png")).write_bytes(rocket)  # Latin-1 name
    (data / "missile" / f"{ESCAPES}.png").write_bytes(rocket)
    out = tmp_path / "out"
    assert cli_main(["triage", str(data), "--out", str(out), "--targets", "predicted", *FAST_ARGS]) == 0
    text = capsys.readouterr().out
    assert "missile/r\\xe9cket.png: true missile" in text  # shown escaped, not a crash
    assert "missile/\\x1b]0;pwned\\x07\\x1b[2J.png: true missile" in text
    assert "\x1b" not in text and "\x07" not in text
    keys = {p["key"] for p in TriageReport.load(out).predictions}
    assert keys == {"espresso/coffee.png", "missile/r\\xe9cket.png", f"missile/{ESCAPES}.png"}
    assert safe("tab\tby\u202egnp.exe\x9b") == "tab\\x09by\\u202egnp.exe\\x9b"  # C1 and bidi too


def test_cli_device_model_and_unreadable_image_errors_are_one_line_with_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    _save(fw.sample_image("rocket", size=64), data / "missile" / "rocket.png")
    _truncated_jpeg(data / "tabby" / "cut.jpg")
    base = ["triage", str(data), "--out", str(tmp_path / "out"), *FAST_ARGS]
    cases = [
        (["--device", "banana"], "unknown device 'banana'; use cpu, cuda, cuda:N or mps"),
        (["--strict"], "cannot read image 'tabby/cut.jpg': OSError: image file is truncated"),
    ]
    if not torch.cuda.is_available():
        cases.append((["--device", "cuda"], "device 'cuda': CUDA is not available on this machine"))
    weights = Path(torch.hub.get_dir()) / "checkpoints" / "resnet18-f37072fd.pth"
    if not weights.exists():
        cases.append((["--model", "resnet18"], "pretrained weights for 'resnet18' are not cached"))
    for extra, text in cases:
        assert cli_main([*base, *extra]) == 2, extra
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "Traceback" not in err and text in err, (extra, err)
    assert not (tmp_path / "out" / "index.json").exists()


def test_a_deleted_or_damaged_file_in_the_store_is_noticed(model: fw.Model, tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    _save(fw.sample_image("rocket", size=96), data / "missile" / "rocket.png")
    report = fw.triage(model, data, out=out, targets="predicted", **FAST)
    item = report.root / "items" / _item_id(report[0])
    (item / "predicted.png").unlink()
    again = fw.triage(model, data, out=out, targets="predicted", **FAST)
    assert again.runs[-1]["accentuated"] == 1 and (item / "predicted.png").is_file()
    assert again.runs[-1]["predicted"] == 0
    (out / "index.json").write_text('{"format": "faccent-widget/tri')
    with pytest.raises(TriageStoreError, match=r"the triage index .*index.json is damaged \(JSONDecodeError"):
        TriageReport.load(out)
    (out / "triage.json").write_text("{not json")
    with pytest.raises(TriageStoreError, match=r"the triage manifest .*triage.json is damaged"):
        fw.triage(model, data, out=out, targets="predicted", **FAST)


def test_a_label_the_model_repeats_must_be_given_by_index(model: fw.Model, tmp_path: Path) -> None:
    labels = list(model.labels)
    labels[282] = labels[281]  # "tabby" twice
    image = fw.sample_image("chelsea", size=48)
    with pytest.raises(TriageInputError, match=r"item 0: 'tabby' matches 2 model classes .*indices 281, 282"):
        as_triage_data([(image, "tabby")], labels)
    assert as_triage_data([(image, 282)], labels)[0].label == 282
    _save(image, tmp_path / "tabby" / "a.png")
    with pytest.raises(TriageInputError, match=r"class folder 'tabby': 'tabby' matches 2 .*'tabby: 281'"):
        as_triage_data(tmp_path, labels)
    assert as_triage_data(tmp_path, labels, class_map={"tabby": 282})[0].label == 282


def test_html_report_allows_only_its_own_script_by_hash(evil_report: TriageReport) -> None:
    import base64
    import hashlib

    page = evil_report.html()
    csp = page.split('http-equiv="Content-Security-Policy" content="', 1)[1].split('"', 1)[0]
    assert "unsafe-inline" not in csp.split("script-src", 1)[1] and f"script-src '{SCRIPT_HASH}'" in csp
    scripts = [chunk.split("</script>", 1)[0] for chunk in page.split("<script>")[1:]]
    assert len(scripts) == 1
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    assert SCRIPT_HASH == f"sha256-{digest}"  # the browser runs it; any other inline script is refused


def test_large_images_are_decoded_reduced_and_huge_ones_refused(model: fw.Model, tmp_path: Path) -> None:
    big = tmp_path / "val" / "tabby" / "big.jpg"
    big.parent.mkdir(parents=True)
    fw.to_pil(fw.sample_image("chelsea", size=64)).resize((3000, 2000)).save(big, quality=85)
    reduced = open_bounded(big, 224)
    assert reduced.size == (750, 500)  # DCT scaling by 1/4: the shorter side stays ≥ 2 × 224
    assert open_bounded(big).size == (3000, 2000)
    huge = tmp_path / "val" / "tabby" / "huge.png"
    ihdr = struct.pack(">IIBBBBB", 9000, 8000, 8, 2, 0, 0, 0)  # 72 Mpx: under Pillow's bomb limit
    huge.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IEND", b""))
    with pytest.raises(ImageTooLargeError, match="9000 × 8000 = 72 Mpx; triage reads images up to 64 Mpx"):
        open_bounded(huge)
    data = as_triage_data(tmp_path / "val", model.labels)
    assert data[0].load(min_side=224).shape == (3, 500, 750)


@pytest.mark.slow
def test_a_second_process_into_a_folder_in_use_is_refused_and_the_first_finishes(
    demo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = ["triage", str(demo_dir), "--out", str(out), *FAST_ARGS, "--batch-size", "1"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "faccent_widget", *args], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None and not (out / "triage.json").is_file():
            time.sleep(0.02)
        assert proc.poll() is None, "the first run ended before the second could start"
        assert cli_main(args) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: another triage is writing to {out} (pid {proc.pid} on ") and "\n" not in err
        _, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr.decode()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    report = TriageReport.load(out)
    assert report.summary["accentuated"] == report.summary["mistakes"] == len(report) > 0
    assert [r["run_id"] for r in report.runs] == [report.runs[0]["run_id"]]  # one run wrote the store


# --------------------------------------------------------------------------- label issues and exemplars

LABEL_FAST = dict(steps=1, n_crops=1, input_size=64, canvas=64)


@pytest.fixture(scope="module")
def flipped(model: fw.Model, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A folder of the samples in 4 variants, each labelled with the model's own top-1 (correct by
    construction), then 4 labels flipped: 3 to another class of the folder, 1 to "goldfish" (a class
    with no correctly classified image). Triaged once with cleanlab, 2 exemplars per target."""
    src = build_demo_folder(tmp_path_factory.mktemp("aug") / "src", variants=4, size=128)
    root = tmp_path_factory.mktemp("flipped") / "images"
    files = sorted(src.rglob("*.jpg"))
    top1 = {}
    for f in files:
        with torch.no_grad():
            probs = model.logits(model.to_input(fw.load_image(f))).softmax(-1)[0]
        top1[f] = model.labels[int(probs.argmax())]
    classes = sorted(set(top1.values()))
    assert len(classes) >= 3
    picks = [files[i] for i in (0, len(files) // 3, 2 * len(files) // 3, len(files) - 1)]
    flips: dict[str, str] = {}
    for f in files:
        label = top1[f]
        if f in picks[:3]:
            label = next(c for c in classes if c != top1[f] and sum(v == c for v in top1.values()) >= 2)
        elif f == picks[3]:
            label = "goldfish"
        dest = root / label / f.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, dest)
        if label != top1[f]:
            flips[f"{label}/{f.name}"] = top1[f]
    out = tmp_path_factory.mktemp("flipped-out") / "out"
    report = fw.triage(model, root, out=out, targets="predicted", batch_size=4, exemplars=2, **LABEL_FAST)
    return {"root": root, "out": out, "report": report, "flips": flips}


def _ranked_keys(report: TriageReport) -> list[str]:
    preds = report.predictions
    return [p["key"] for p in sorted(preds, key=lambda p: (-p["label_issue"], p["index"]))]


def test_label_issue_score_ranks_flipped_labels_first_and_is_a_sort_key(flipped: dict[str, Any]) -> None:
    report, flips = flipped["report"], flipped["flips"]
    assert len(flips) == 4 and report.summary["mistakes"] == 4  # only the flipped ones are mistakes
    assert report.index["label_issues"]["method"] == "cleanlab"
    assert "out-of-sample" in report.index["label_issues"]["caveat"]
    assert set(_ranked_keys(report)[:4]) == set(flips)  # above every correctly labelled item
    flagged = {p["key"] for p in report.predictions if p["likely_label_error"]}
    assert set(flips) <= flagged and len(flagged) <= len(flips) + 2
    by_issue = report.ranked("label_issue")
    scores = [it.label_issue for it in by_issue]
    assert scores == sorted(scores, reverse=True) and all(s is not None and s > 0.5 for s in scores)
    assert "label-issue score (likely label errors first)" in by_issue.html()
    data = page_data(by_issue)
    assert data["rank_by"] == "label_issue"  # the in-page sort starts at the report's order
    assert [d["likely_label_error"] for d in data["items"]] == [it.likely_label_error for it in by_issue]
    shown = [d["label_issue"] for d in data["items"]]
    assert shown == sorted(shown, reverse=True) and len(shown) == len(by_issue)


def test_label_issue_fallback_without_cleanlab_on_resume(
    model: fw.Model, flipped: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("cleanlab", "cleanlab.filter", "cleanlab.rank"):
        monkeypatch.setitem(sys.modules, name, None)  # a real import failure
    with pytest.raises(ImportError, match=r"pip install 'faccent-widget\[label-issues\]'"):
        fw.triage(model, flipped["root"], out=flipped["out"], label_issues="cleanlab", targets="predicted")
    before = sorted(p.name for p in (flipped["out"] / "predictions").iterdir())
    with pytest.warns(UserWarning, match=r"cleanlab is not installed.*faccent-widget\[label-issues\]"):
        report = fw.triage(
            model, flipped["root"], out=flipped["out"], targets="predicted", batch_size=4, exemplars=2, **LABEL_FAST
        )
    assert sorted(p.name for p in (flipped["out"] / "predictions").iterdir()) == before  # resumed: nothing redone
    info = report.index["label_issues"]
    assert info["method"] == "self-confidence" and "pip install" in info["note"]
    assert set(_ranked_keys(report)[:4]) == set(flipped["flips"])
    for p in report.predictions:  # the fallback score is 1 − p(given label) among the folder's classes
        assert 0.0 <= p["label_issue"] <= 1.0
    assert {p["key"] for p in report.predictions if p["likely_label_error"]} >= set(flipped["flips"])
    # exemplars survive the resume unchanged
    assert [it.exemplars for it in report.ranked("index")] == [it.exemplars for it in flipped["report"].ranked("index")]
    assert "self-confidence" in report.html() and "pip install" in report.html()


def test_exemplars_are_nearest_correct_items_of_the_class_by_cosine(flipped: dict[str, Any]) -> None:
    report = flipped["report"]
    store = TriageStore(flipped["out"])
    feats = store.prediction_arrays("features")
    preds = {p["id"]: p for p in report.predictions}
    assert len(feats) == len(preds) and all(v.dtype == np.float16 and v.ndim == 1 for v in feats.values())
    assert report.index["exemplars"] == {"k": 2, "layer": "global_pool"}
    empty_seen = False
    for item in report:
        row = preds[item.row["id"]]
        for target, cls in (("predicted", item.predicted_index), ("true", item.true_index)):
            pool = [p for p in preds.values() if p["true"] == cls and p["predicted"] == cls]
            q = torch.tensor(feats[row["id"]], dtype=torch.float32)
            sims = {
                p["id"]: float(torch.cosine_similarity(q, torch.tensor(feats[p["id"]], dtype=torch.float32), dim=0))
                for p in pool
            }
            expect = sorted(sims, key=lambda i: (-sims[i], preds[i]["index"]))[:2]
            got = item.exemplars[target]
            assert [e["id"] for e in got] == expect
            assert all(abs(e["similarity"] - sims[e["id"]]) < 1e-3 for e in got)
            assert all(preds[e["id"]]["true"] == preds[e["id"]]["predicted"] == cls for e in got)
            assert all(img is not None for _, img in item.exemplar_images(target))
            empty_seen |= not got
    assert empty_seen  # the "goldfish" item: no correctly classified image of its class


def test_exemplars_are_shown_in_the_html_report_and_browser(flipped: dict[str, Any]) -> None:
    report = flipped["report"]
    data = page_data(report)
    assert len(data["items"]) == len(report)
    for row, item in zip(data["items"], report):
        for target in ("predicted", "true"):
            expect = [e["key"] for e in item.exemplars[target]]
            assert [e["key"] for e in row["exemplars"][target]] == expect
            assert all(data["exemplar_images"][e["id"]].startswith("data:image/jpeg") for e in row["exemplars"][target])
    browser = report.show(page_size=len(report))
    browser.select(0)
    texts = [w.value for w in browser.detail.children if isinstance(w, widgets.Label)]
    texts += [
        w.children[0].value
        for w in browser.detail.children
        if isinstance(w, widgets.HBox) and w.children and isinstance(w.children[0], widgets.Label)
    ]
    assert any(t.startswith(f"correct {report[0].predicted_label} in your data") for t in texts)
    assert any("label-issue score" in t for t in texts)


def test_cli_label_issues_cleanlab_missing_is_one_line_with_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "cleanlab", None)  # a real import failure
    status = cli_main(["triage", "--demo", "--out", str(tmp_path / "out"), "--label-issues", "cleanlab", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1
    assert "cleanlab" in err and "pip install 'faccent-widget[label-issues]'" in err
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_prediction_pass_is_channels_last_where_the_model_allows_it(model: fw.Model) -> None:
    """The default model predicts channels-last (the faster layout on the CPU) with the same top-5 as a
    plain forward; a model whose forward ``.view``s a conv output falls back to the plain layout."""
    imgs = fw.sample_images(size=96)
    pairs = [(imgs["rocket"], "missile"), (imgs["coffee"], "espresso"), (imgs["chelsea"], "tabby")]
    report = fw.triage(model, pairs, targets="predicted", **FAST)
    with torch.no_grad():
        plain = model.logits(model.to_input([img for img, _ in pairs])).softmax(-1)
    for item, probs in zip(report.predictions, plain):
        assert item["top5"][0][0] == int(probs.argmax())
        assert abs(item["p_predicted"] - float(probs.max())) < 1e-4

    torch.manual_seed(0)
    old = fw.Model(_FlattensWithView().eval(), input_size=32, labels=[f"c{i}" for i in range(5)])
    with pytest.raises(RuntimeError):  # the reason for the fallback: .view on a channels-last conv output
        old.module(torch.rand(2, 3, 32, 32).contiguous(memory_format=torch.channels_last))
    small = fw.triage(
        old, [(imgs["rocket"], 1), (imgs["coffee"], 2)], targets="predicted", **{**FAST, "canvas": 32, "input_size": 32}
    )
    assert len(small.predictions) == 2
