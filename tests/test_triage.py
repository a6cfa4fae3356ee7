"""Dataset triage: inputs and folder mapping, the run and its report, the store (resume after a kill,
settings refused), the HTML report's escaping, the notebook browser, and torchrun on CPU (gloo).

Real model (the default EfficientNet-Lite0) and real images (the bundled samples), tiny settings.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import ipywidgets as widgets
import numpy as np
import pytest
import torch

import faccent_widget as fw
from faccent_widget.cli import main as cli_main
from faccent_widget.triage import (
    TriageInputError,
    TriageReport,
    TriageSettingsMismatch,
    build_demo_folder,
    load_class_map,
)
from faccent_widget.triage.data import as_triage_data
from faccent_widget.triage.distributed import shard
from faccent_widget.triage.run import canvas_seed

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
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and "&lt;b&gt;efficientnet&lt;/b&gt;" in page
    assert page.count("<img ") == 5  # seed + mask and accentuation for each target
    assert "http://" not in page and "https://" not in page and "default-src 'none'" in page
    srcs = [chunk.split('"', 1)[0] for chunk in page.split(' src="')[1:]]
    assert srcs and all(s.startswith("data:image/jpeg;base64,") for s in srcs)


def test_browser_grid_detail_and_faccent_widget(evil_report: TriageReport) -> None:
    browser = evil_report.show(page_size=1)  # the triage's own model (with the markup label)
    assert browser.page_label.value == "page 1 / 1" and len(browser.cards) == 1
    cell = browser.grid.children[0]
    assert cell.children[1].value == f"true: {EVIL}"  # a Label: shown as text
    assert cell.children[2].value.startswith("predicted: drilling platform (")
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
    assert len(html_captions) == 5 and any("where: &lt;img src=x" in c for c in html_captions)
    assert not any(EVIL in c for c in html_captions)
    widget = browser.open_faccent()
    assert isinstance(widget, fw.FaccentWidget) and widget in browser.detail.children
    assert "drilling platform" in widget.triage and EVIL in widget.triage
    browser.close_detail()
    assert browser.detail.children == () and browser.selected is None


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
            if items.is_dir() and any((d / "row.json").is_file() for d in items.iterdir() if d.name.isdigit()):
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    finished = {d.name: (d / "row.json").stat().st_mtime_ns for d in items.iterdir() if d.name.isdigit()}
    run_ids = {name: json.loads((items / name / "row.json").read_text())["run_id"] for name in finished}
    total = len([p for p in _predictions(out) if p["predicted"] != p["true"]])
    assert 1 <= len(finished) < total and not (out / "index.json").exists()

    report = fw.triage(model, demo_dir, out=out, batch_size=1, **{**FAST, "steps": 8})
    names = sorted(d.name for d in items.iterdir())
    assert names == sorted(f"{it.index:08d}" for it in report) and len(names) == total  # no temporaries left
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
    ranks = {json.loads((dist.root / "items" / f"{it.index:08d}" / "row.json").read_text())["rank"] for it in dist}
    assert ranks == {0, 1}  # both processes accentuated
    for a, b in zip(dist, single_run):
        for target in ("predicted", "true"):
            diff = (a.accentuations[target] - b.accentuations[target]).abs()
            assert float(diff.mean()) < 0.01 and float(diff.max()) < 0.25, (a.key, target)
            assert a.scores[target]["prob"] == pytest.approx(b.scores[target]["prob"], abs=0.05)
