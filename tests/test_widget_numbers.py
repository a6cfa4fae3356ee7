"""One measure of each number, everywhere (issue 22, deliver 1/4/7; issue 24, deliver 5): p(target) of an
image is the model's softmax on its view of the full image (``core.scoring``), and the panel, the result
object, the gallery, the status line and the triage report say the same number for the same image; every
number follows the Snapshot slider; runs are reproducible; Continue after Stop; the settings hint; errors
once, in plain words; the judge model. Real default model, real sample images, tiny step counts."""

from __future__ import annotations

import pytest
import torch
from test_widget import chunk, make, run_to_done, send

import faccent_widget as fw
from faccent_widget.widget import exports, threads
from faccent_widget.widget.inputs import plain_error
from faccent_widget.widget.threads import browser_threads, limited_threads

TIGER_CAT = "tiger cat"


def _p(model: fw.Model, image: torch.Tensor, cls: int) -> float:
    return float(model.probabilities(image)[cls])


def close(p: float) -> object:
    """The same number measured on another CPU thread count (the panel's requests run on fewer threads
    than this test; see ``widget.threads``): equal up to float round-off."""
    return pytest.approx(p, rel=1e-5, abs=1e-7)


def test_one_number_for_the_seed_in_panel_result_gallery_status_and_triage(model, chelsea):
    cls = model.class_index(TIGER_CAT)
    truth = _p(model, chelsea, cls)
    w, rec = make(model, chelsea, steps=2)
    send(w, "ready")
    w.set_target(cls)
    # the panel: top-5 chips and the stats line
    assert [t["prob"] for t in w.top if t["index"] == cls] == [close(truth)]
    assert w.seed_prob == close(truth)
    # the result object, the status line and the numbers shown at the end
    result = w.run()
    assert result.seed_score.prob == close(truth)
    assert f"p({TIGER_CAT}) {truth:.3f} → {result.score.prob:.3f}" in w.status
    assert w.shown["seed_prob"] == close(truth) and w.shown["prob"] == result.score.prob
    assert result.score.prob == close(_p(model, result.image, cls))  # the accentuation measured the same way
    # the gallery
    send(w, "gallery", mode="topk")
    run_to_done(w, rec)
    items, _ = exports.gallery_message(w._session, w.p1, w.p2)
    assert [it["prob_before"] for it in items if it["index"] == cls] == [close(truth)]
    for it, res in zip(items, w.gallery):
        assert it["prob_before"] == close(_p(model, chelsea, it["index"]))
        assert it["prob_after"] == close(_p(model, res.image, it["index"]))
    # accentuate() on the same image, and the triage report's header and card
    assert fw.accentuate(model, chelsea, cls, steps=1, n_crops=2, input_size=96, canvas=96).seed_score.prob == close(
        truth
    )
    # what the screen says: the same three decimals in the stats line, the result and the gallery
    shown = {
        f"{p:.3f}"
        for p in (w.seed_prob, result.seed_score.prob, *(it["prob_before"] for it in items if it["index"] == cls))
    }
    assert len(shown) == 1
    report = fw.triage(model, [(chelsea, TIGER_CAT)], targets=("predicted", "true"), steps=1, n_crops=2, canvas=64)
    (item,) = list(report)
    assert abs(item.p_true - truth) < 1e-5  # the prediction pass batches: equal up to float round-off
    assert item.scores["true"]["seed_prob"] == item.p_true
    assert item.scores["predicted"]["seed_prob"] == item.p_predicted


def test_triage_card_says_the_header_number_and_flags_a_fall(model, chelsea, tmp_path):
    """The report's page renders from its data: the card's "toward X: p before → after" uses the header's
    number (the prediction pass's p of the full image), and a fall is flagged."""
    from faccent_widget.triage.page import page_data

    report = fw.triage(model, [(chelsea, TIGER_CAT)], targets=("predicted", "true"), steps=1, n_crops=2, canvas=64)
    (item,) = list(report)
    (row,) = page_data(report)["items"]
    assert row["p_true"] == item.p_true and row["scores"]["true"]["seed_prob"] == item.p_true
    assert row["p_predicted"] == item.p_predicted and row["scores"]["predicted"]["seed_prob"] == item.p_predicted
    for t in item.targets:
        s = item.scores[t]
        assert s["p_fell"] == (s["prob"] < s["seed_prob"])
    assert row["p_fell"] == any(item.scores[t]["p_fell"] for t in item.targets)
    page = report.to_html(tmp_path / "report.html").read_text()
    assert "'p fell'" in page  # the page's script shows the flag


def test_numbers_follow_the_snapshot_slider(model, chelsea):
    w, rec = make(model, chelsea, steps=6, snapshot_every=2)
    send(w, "ready")
    w.set_target(TIGER_CAT)
    result = w.run()
    cls = model.class_index(TIGER_CAT)
    assert w.snapshot_steps == [0, 2, 4, 6]
    rec.clear()
    send(w, "scrub", index=1)
    ((msg, _),) = rec.of("scrub")
    numbers = msg["numbers"]
    assert numbers == w.shown
    assert (numbers["step"], numbers["steps"], numbers["index"]) == (2, 6, 1)
    assert numbers["objective"] == float(result.history["objective"][1])
    assert numbers["distance"] == float(result.history["distance"][1])
    assert numbers["prob"] == close(_p(model, result.snapshot(0), cls))  # the snapshot's own p, not step 6's
    assert numbers["prob"] != w.prob
    # the top-5 re-scores the shown image, each class with its p on the seed
    top_probs = model.probabilities(result.snapshot(0)).topk(5)
    assert [t["index"] for t in numbers["top"]] == top_probs.indices.tolist()
    assert all(t["before"] == close(_p(model, chelsea, t["index"])) for t in numbers["top"])
    send(w, "scrub", index=0)
    assert (w.shown["step"], w.shown["prob"], w.shown["distance"]) == (0, w.seed_prob, 0.0)
    send(w, "scrub", index=3)
    assert (w.shown["step"], w.shown["prob"]) == (6, result.score.prob)
    assert w.shown["objective"] == float(result.history["objective"][-1])


def _stats(w: fw.FaccentWidget) -> tuple[object, ...]:
    """What the stats row is drawn from: the step, p(target) now and the numbers of the shown step."""
    return (w.step, w.prob, w.shown, w.steps)


def test_after_a_gallery_the_stats_row_and_status_are_the_single_runs_again(model, chelsea):
    """A top-k gallery writes its own step and p while it runs; once done (or stopped) the stats row, the
    numbers and the status say the single run's again, at the Snapshot slider's position."""
    w, rec = make(model, chelsea, steps=4, snapshot_every=2)
    send(w, "ready")
    w.set_target(TIGER_CAT)
    result = w.run()
    main, main_status = _stats(w), w.status
    assert w.shown["step"] == 4 and w.prob == result.score.prob
    send(w, "gallery", mode="topk")
    msg, _ = chunk(w, rec)
    assert msg["gallery"] and w.step == msg["step"] == 1 and w.shown == {}  # the batch's progress meanwhile
    run_to_done(w, rec)
    assert len(w.gallery) == 5
    assert _stats(w) == main
    assert w.status.startswith("gallery done: 5 accentuations") and main_status in w.status
    # scrubbed back to step 2: a gallery keeps the slider's position and its numbers
    send(w, "scrub", index=1)
    scrubbed = _stats(w)
    assert w.shown["step"] == 2
    send(w, "gallery", mode="inhibited")
    chunk(w, rec)
    send(w, "stop")  # stopped mid-batch: the same
    assert not w.running and _stats(w) == scrubbed and w._session.scrub_index == 1
    assert w.status.startswith("gallery stopped at step 1")
    # a gallery started while a single run goes: afterwards, that run's numbers where it stopped
    send(w, "start")
    msg, _ = chunk(w, rec)
    send(w, "gallery", mode="topk")
    run_to_done(w, rec)
    assert (w.step, w.shown["step"]) == (msg["step"], msg["step"])
    assert w.shown["prob"] == close(_p(model, w._session.current_accent(), model.class_index(TIGER_CAT)))
    assert f"stopped at step {msg['step']} of 4" in w.status


def test_same_settings_same_image_after_stop_restart_and_continue(model, chelsea, monkeypatch):
    """The widget's random seed is fixed (0 unless given): a Stop, a restart, λ calibration chunks in
    between, or a Continue change nothing in the final image; ``accentuate`` with the same settings agrees."""
    monkeypatch.setattr(threads, "other_load", lambda: 2.0)  # a steady load: every run decides the same count
    w, rec = make(model, chelsea, steps=5)
    send(w, "ready")
    w.set_target(TIGER_CAT)
    first = w.run().image.clone()
    send(w, "start")
    chunk(w, rec)
    send(w, "stop")
    w.calibrate_step(0.05)  # the λ mark's chunks run between two runs in a live panel
    send(w, "start")
    run_to_done(w, rec)
    assert torch.equal(w.result.image, first)
    # Continue after Stop goes on from the stopped step, to the same image
    send(w, "start")
    msg, _ = chunk(w, rec)
    stopped_at = msg["step"]
    send(w, "stop")
    assert w.resumable and 0 < stopped_at < 5 and w.shown["step"] == stopped_at
    send(w, "continue")
    frames = run_to_done(w, rec)
    assert frames[0][0]["step"] > stopped_at  # not from step 0
    assert torch.equal(w.result.image, first)
    panel_threads = browser_threads()  # the panel's runs, scripted or clicked, use this many CPU threads
    with limited_threads(panel_threads):
        again = fw.accentuate(model, chelsea, TIGER_CAT, steps=5, n_crops=2, input_size=96, canvas=96, seed=0)
    assert torch.equal(again.image, first)
    assert w.result.rng_seed == 0
    assert f"(random seed 0, {panel_threads} CPU thread" in w.status  # what a repeat needs


def test_settings_changed_hint_and_no_continue_after_a_change(model, chelsea):
    w, rec = make(model, chelsea, steps=5)
    send(w, "ready")
    send(w, "start")
    chunk(w, rec)
    send(w, "stop")
    assert w.resumable and w.rerun_hint == ""
    w.lam = 0.5
    assert "settings changed since the last run" in w.rerun_hint and not w.resumable
    assert w.status == w.rerun_hint
    rec.clear()
    send(w, "continue")
    ((err, _),) = rec.of("error")
    assert "settings changed" in err["message"] and not w.running
    w.lam = fw.DEFAULT_LAMBDA  # back to the run's settings: Continue is offered again
    assert w.rerun_hint == "" and w.resumable
    w.set_target(TIGER_CAT)
    assert w.rerun_hint and TIGER_CAT in w.target["label"]


def test_status_is_fresh_after_each_action_and_errors_show_once_in_plain_words(model, chelsea):
    w, rec = make(model, chelsea, steps=2)
    send(w, "ready")
    w.set_target(TIGER_CAT)
    assert w.status.startswith(f"target {TIGER_CAT}: p {w.seed_prob:.3f} on the seed")
    w.lam = 0.7
    assert w.status == "λ set to 0.7"
    before = w.status
    w._on_msg(w, {"type": "load_image", "name": "not_an_image.jpg"}, [b"this is no image"])
    assert "not_an_image.jpg" in w.error and "object at 0x" not in w.error and "Error" not in w.error
    assert w.status == before  # the message is in the error box only, once
    assert plain_error(ValueError("cannot identify image file <_io.BytesIO object at 0x7f8b2c>")) == (
        "cannot identify image file"
    )
    assert plain_error(KeyError("index")) == "index"
    assert plain_error(RuntimeError("boom")) == "boom (RuntimeError)"


def test_judge_scores_seed_and_accentuation_and_is_left_alone(model, chelsea):
    judge_module = fw.load_model("efficientnet_lite1")
    state = {k: v.clone() for k, v in judge_module.module.state_dict().items()}
    training = judge_module.module.training
    w, rec = make(model, chelsea, steps=2, judge=judge_module)
    cls = model.class_index(TIGER_CAT)
    w.set_target(cls)
    assert w.judge["name"] == judge_module.name and w.judge["prob"] is None
    assert w.judge["seed_prob"] == close(_p(judge_module, chelsea, cls))
    result = w.run()
    assert w.judge["prob"] == close(_p(judge_module, result.image, cls))
    send(w, "scrub", index=0)
    assert w.judge["prob"] == w.judge["seed_prob"]
    assert judge_module.module.training == training
    assert all(torch.equal(v, state[k]) for k, v in judge_module.module.state_dict().items())
    nn = torch.nn
    bad = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    try:
        fw.FaccentWidget(model, chelsea, judge=bad)
    except ValueError as exc:
        assert "same classes" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("a judge of other classes was accepted")


def test_lambda_mark_is_cached_on_disk_per_model_and_layer(model, chelsea, monkeypatch, tmp_path):
    """A λ mark computed in one kernel is shown at once in the next (a fresh process: the in-memory cache
    is emptied here); keyed by model weights and layer; the env var moves or turns off the cache."""
    from faccent_widget.widget import extras, lambda_cache

    tiny = {**extras.AUTO_CALIBRATION, "n_images": 1, "lambdas": (0.01, 1.0, 100.0), "steps": 3, "canvas": 64}
    tiny["input_size"] = 64
    monkeypatch.setattr(extras, "AUTO_CALIBRATION", tiny)
    monkeypatch.setenv(lambda_cache.CACHE_ENV, str(tmp_path))
    layer = model.default_reg_layer
    extras._LAMBDA_CACHE.pop(model.module, None)
    w, _ = make(model, chelsea)
    while not w.calibrate_step(5.0):
        pass
    value = w.lam_recommended
    assert value is not None and (tmp_path / "lambda.json").is_file()
    extras._LAMBDA_CACHE.pop(model.module, None)  # as a new kernel
    fresh, _ = make(model, chelsea)
    assert fresh.calibrate_step(0.01) and fresh.lam_recommended == value and fresh._calibrator is None
    assert lambda_cache.load_lambda(model, "blocks.1", tiny) is None  # another layer: not this value
    other = fw.load_model("efficientnet_lite1")
    assert lambda_cache.load_lambda(other, layer, tiny) is None  # another model
    monkeypatch.setenv(lambda_cache.CACHE_ENV, "off")
    assert lambda_cache.cache_file() is None and lambda_cache.load_lambda(model, layer, tiny) is None
    monkeypatch.delenv(lambda_cache.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert lambda_cache.cache_file() == tmp_path / "xdg" / "faccent-widget" / "lambda.json"
    extras._LAMBDA_CACHE.pop(model.module, None)
