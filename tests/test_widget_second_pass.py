"""The widget's second pass, without a kernel: scrub, redraw after Stop, gallery vs main tile, the λ mark
computed in chunks, your own photo, GIF export (helpers from ``test_widget``)."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image
from test_widget import JPEG, PNG, chunk, make, run_to_done, send

import faccent_widget as fw
from faccent_widget.widget import extras

GIF = b"GIF89a"


@pytest.fixture
def ready(model, chelsea):
    w, rec = make(model, chelsea, steps=6)
    send(w, "ready")
    rec.clear()
    return w, rec


def _file_bytes(img: torch.Tensor, fmt: str = "JPEG") -> bytes:
    arr = (img.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt)
    return buf.getvalue()


def _png_size(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


# ---------------------------------------------------------------------------------------- scrub
def test_snapshot_steps_grow_during_a_run_and_start_with_the_seed(ready):
    w, rec = ready
    assert w.snapshot_steps == []
    send(w, "start")
    chunk(w, rec)
    during = list(w.snapshot_steps)
    assert during[0] == 0 and during == sorted(during) and during[-1] <= w.step
    run_to_done(w, rec)
    assert w.snapshot_steps[0] == 0 and w.snapshot_steps[-1] == 6
    assert w.snapshot_steps[1:] == w.result.snapshot_steps
    send(w, "reset")
    assert w.snapshot_steps == []


def test_scrub_sends_the_snapshot_in_the_current_view(ready):
    w, rec = ready
    send(w, "start")
    run_to_done(w, rec)
    rec.clear()
    send(w, "scrub", index=0)
    ((msg, bufs),) = rec.of("scrub")
    assert (msg["index"], msg["step"], msg["count"]) == (0, 0, len(w.snapshot_steps))
    assert bufs[0].startswith(PNG)
    seed_frame = bufs[0]
    send(w, "scrub", index=1)
    msg, bufs = rec.of("scrub")[-1]
    assert msg["step"] == w.snapshot_steps[1] and bufs[0] != seed_frame
    # out-of-range indices are clamped to the last snapshot (the final image)
    send(w, "scrub", index=999)
    msg, last = rec.of("scrub")[-1]
    assert msg["index"] == len(w.snapshot_steps) - 1 and msg["step"] == 6
    # the diff view of the seed is flat grey: the scrubbed frame follows the view
    w.view = "diff"
    send(w, "scrub", index=0)
    grey = Image.open(io.BytesIO(rec.of("scrub")[-1][1][0])).convert("L")
    assert grey.getextrema()[1] - grey.getextrema()[0] <= 2


def test_scrub_without_a_run_is_an_error_and_the_widget_stays_usable(ready):
    w, rec = ready
    send(w, "scrub", index=0)
    assert rec.of("error") and "Accentuate" in w.error
    send(w, "start")
    assert chunk(w, rec)[0]["type"] == "frame"


def test_scrub_live_during_a_run(ready):
    w, rec = ready
    w.steps = 12
    send(w, "start")
    chunk(w, rec)
    chunk(w, rec)
    send(w, "scrub", index=0)
    assert rec.of("scrub")[-1][0]["step"] == 0 and w._session.scrub_index == 0
    # while scrubbed back, a view change redraws the scrubbed frame (no run frame will show it)
    rec.clear()
    w.view = "unmasked"
    ((msg, bufs),) = rec.of("image")
    assert msg["index"] == 0 and bufs[0].startswith(PNG)


# ---------------------------------------------------------------------------------------- redraw after Stop
def test_view_change_after_a_mid_run_stop_redraws(ready):
    w, rec = ready
    w.steps = 30
    send(w, "start")
    chunk(w, rec)
    chunk(w, rec)
    send(w, "stop")
    before = w.accent_png
    rec.clear()
    w.view = "diff"
    ((msg, bufs),) = rec.of("image")
    assert msg["tile"] == "accent" and bufs[0].startswith(PNG)
    assert w.accent_png == bufs[0] != before
    diff = bufs[0]
    w.view = "unmasked"
    assert rec.of("image")[-1][1][0] not in (diff, before)
    # the redrawn image is the stopped candidate, not the seed
    seed = Image.open(io.BytesIO(w.seed_png)).convert("RGB")
    shown = Image.open(io.BytesIO(rec.of("image")[-1][1][0])).convert("RGB").resize(seed.size)
    assert shown.tobytes() != seed.tobytes()


def test_view_change_while_running_waits_for_the_next_frame(ready):
    w, rec = ready
    w.steps = 30
    send(w, "start")
    chunk(w, rec)
    rec.clear()
    w.view = "diff"
    assert rec.of("image") == []


def test_a_refused_view_does_not_redraw(ready):
    w, rec = ready
    send(w, "start")
    run_to_done(w, rec)
    rec.clear()
    w.view = "sideways"
    assert w.view == "masked" and rec.of("image") == [] and "view" in w.error


# ---------------------------------------------------------------------------------------- gallery vs main tile
def test_gallery_leaves_the_main_tile_and_the_single_run_alone(ready):
    w, rec = ready
    w.steps = 3
    send(w, "start")
    run_to_done(w, rec)
    single = w.result
    accent = w.accent_png
    steps = list(w.snapshot_steps)
    send(w, "gallery", mode="topk")
    frames = run_to_done(w, rec)
    assert all(m["gallery"] is True for m, _ in frames)
    assert rec.of("gallery")
    assert w.accent_png == accent and w.result is single and w.snapshot_steps == steps
    # scrubbing still goes through the single run, not the gallery batch
    send(w, "scrub", index=len(steps) - 1)
    img = rec.of("scrub")[-1][1][0]
    assert _png_size(img) == _png_size(w.accent_png)


# ---------------------------------------------------------------------------------------- λ mark
@pytest.fixture
def tiny_calibration(monkeypatch):
    monkeypatch.setitem(extras.AUTO_CALIBRATION, "n_images", 1)
    monkeypatch.setitem(extras.AUTO_CALIBRATION, "steps", 2)
    monkeypatch.setitem(extras.AUTO_CALIBRATION, "lambdas", (0.0, 0.1, 1.0, 10.0, 1000.0))
    monkeypatch.setitem(extras.AUTO_CALIBRATION, "input_size", 64)
    monkeypatch.setitem(extras.AUTO_CALIBRATION, "canvas", 64)
    extras._LAMBDA_CACHE.clear()
    yield
    extras._LAMBDA_CACHE.clear()


def test_lambda_mark_is_computed_in_chunks_and_cached_per_model(ready, tiny_calibration, model, chelsea):
    w, rec = ready
    assert w.lam_recommended is None
    replies = []
    for _ in range(50):
        send(w, "calibrate", budget_ms=1)
        replies.append(rec.of("calibration")[-1][0])
        if replies[-1]["done"]:
            break
    assert len(replies) >= 5  # one task (a run of 2 steps) per 1 ms chunk at least: it was cut up
    assert all(not r["done"] for r in replies[:-1]) and replies[-1]["done"]
    progress = [r["progress"] for r in replies]
    assert progress == sorted(progress)
    assert w.lam_min <= w.lam_recommended <= w.lam_max
    assert replies[-1]["value"] == w.lam_recommended
    assert extras.cached_lambda(w._model, w.reg_layer) == pytest.approx(w.lam_recommended)
    # a second panel on the same model gets it at once, without running anything
    w2, rec2 = make(model, chelsea)
    send(w2, "calibrate", budget_ms=1)
    assert rec2.of("calibration")[-1][0]["done"] and w2.lam_recommended == w.lam_recommended
    assert w2._calibrator is None


def test_lambda_mark_set_by_the_user_is_kept(ready, tiny_calibration):
    w, rec = ready
    w.lam_recommended = 3.0
    send(w, "calibrate", budget_ms=1)
    assert rec.of("calibration")[-1][0] == {"type": "calibration", "done": True, "progress": 1.0, "value": 3.0}
    assert w._calibrator is None


def test_lambda_calibration_can_be_turned_off_and_a_run_can_interleave(ready, tiny_calibration):
    w, rec = ready
    send(w, "calibrate", budget_ms=1)
    assert rec.of("calibration")[-1][0]["done"] is False
    send(w, "start")  # a run between calibration chunks is not disturbed
    msg, bufs = chunk(w, rec)
    assert msg["type"] == "frame" and bufs[0].startswith(JPEG)
    w.auto_lambda = False
    send(w, "calibrate", budget_ms=1)
    assert rec.of("calibration")[-1][0]["done"] is True and w.lam_recommended is None


# ---------------------------------------------------------------------------------------- your own photo
def test_load_image_message_swaps_the_seed(ready, coffee):
    w, rec = ready
    send(w, "start")
    chunk(w, rec)
    old_seed_png = w.seed_png
    rec.clear()
    w._on_msg(w, {"type": "load_image", "name": "coffee.jpg"}, [_file_bytes(coffee)])
    assert w.error == "" and rec.of("error") == []
    assert w.top[0]["label"] == "espresso" and w.target["label"] == "espresso"
    assert w.seed_png.startswith(PNG) and w.seed_png != old_seed_png and w.accent_png == w.seed_png
    assert (w.running, w.step, w.result, w.snapshot_steps) == (False, 0, None, [])
    assert rec.of("image") and "coffee.jpg" in w.status
    msg, bufs = chunk(w, rec)  # the old run is gone
    assert msg["done"] is True and bufs == []


@pytest.mark.parametrize("payload", [b"", b"not an image at all", PNG + b"\x00" * 20])
def test_a_bad_file_is_a_clear_error_and_the_old_seed_stays(ready, payload):
    w, rec = ready
    top, seed_png, seed = list(w.top), w.seed_png, w.image
    w._on_msg(w, {"type": "load_image", "name": "holiday.png"}, [payload])
    assert "holiday.png" in w.error and "previous image stays" in w.error
    assert w.top == top and w.seed_png == seed_png and w.image is seed
    send(w, "start")
    assert chunk(w, rec)[0]["type"] == "frame"


def test_load_image_without_bytes_is_an_error(ready):
    w, rec = ready
    w._on_msg(w, {"type": "load_image", "name": "x.png"}, [])
    assert "no file data" in w.error


def test_image_property_from_python(ready, coffee, chelsea):
    w, rec = ready
    w.image = coffee
    assert torch.equal(w.image, fw.load_image(coffee)) and w.top[0]["label"] == "espresso"
    w.image = _file_bytes(chelsea, "PNG")
    assert w.top[0]["label"] == "Egyptian cat"
    with pytest.raises(TypeError):
        w.image = 42
    assert w.top[0]["label"] == "Egyptian cat"


# ---------------------------------------------------------------------------------------- export
def test_gif_export_from_the_button_and_from_python(ready, tmp_path):
    w, rec = ready
    with pytest.raises(ValueError, match="nothing to animate"):
        w.gif()
    send(w, "export_gif")
    assert "nothing to animate" in w.error
    send(w, "start")
    run_to_done(w, rec)
    rec.clear()
    w.view = "diff"
    send(w, "export_gif")
    ((msg, bufs),) = rec.of("download")
    assert msg["filename"] == "faccent_diff.gif" and bufs[0].startswith(GIF)
    gif = Image.open(io.BytesIO(bufs[0]))
    assert gif.n_frames == len(w.snapshot_steps)  # seed, then every snapshot
    gif.seek(0)
    first = gif.convert("L")
    assert first.getextrema()[1] - first.getextrema()[0] <= 4  # diff of the seed: flat grey
    path = w.save(tmp_path / "run.gif", view="masked")
    assert path.read_bytes().startswith(GIF) and Image.open(path).n_frames == len(w.snapshot_steps)
    assert w.save(tmp_path / "panel.png").read_bytes().startswith(PNG)
    with pytest.raises(ValueError, match=".png"):
        w.save(tmp_path / "x.jpg")
    with pytest.raises(ValueError, match="view"):
        w.gif(view="sideways")


def test_scrub_to_the_right_end_after_stop_shows_the_latest_candidate_and_follows_view_changes(ready):
    w, rec = ready
    w.steps = 30
    send(w, "start")
    chunk(w, rec)
    chunk(w, rec)
    send(w, "stop")
    last = len(w.snapshot_steps) - 1
    send(w, "scrub", index=0)
    send(w, "scrub", index=last)
    assert w._session.scrub_index is None
    rec.clear()
    w.view = "diff"
    ((msg, bufs),) = rec.of("image")
    assert msg["index"] is None and w.accent_png == bufs[0]
