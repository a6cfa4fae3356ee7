"""FaccentWidget without a kernel: drive its message handlers directly and record what it sends.

``w._on_msg(w, {...}, [])`` is what the comm calls for a custom message from the browser; ``w.send``
is replaced by a recorder (ipywidgets' own tests do the same with a dummy comm). A few tests go through
``w._handle_msg`` (the comm's entry point) to check the real ipywidgets path as well. The model and the
seed are the real default model and a bundled sample image; runs are shortened with ``steps`` and small
engine overrides (``n_crops=2, input_size=96, canvas=96``).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import torch
import traitlets
from PIL import Image

import faccent_widget as fw
from faccent_widget.core.config import resolve_config
from faccent_widget.core.engine import Accentuation

PNG = b"\x89PNG\r\n\x1a\n"
JPEG = b"\xff\xd8\xff"
FAST = dict(n_crops=2, input_size=96, canvas=96)
TILE_TRAITS = ("seed_png", "gradcam_png", "mask_png", "accent_png")


class Recorder:
    """Stands in for ``widget.send``: keeps every (content, buffers) pair."""

    def __init__(self) -> None:
        self.sent: list[tuple[dict[str, Any], list[bytes]]] = []

    def __call__(self, content: dict[str, Any], buffers: Any = None) -> None:
        self.sent.append((content, [bytes(b) for b in (buffers or [])]))

    def of(self, kind: str) -> list[tuple[dict[str, Any], list[bytes]]]:
        return [(c, b) for c, b in self.sent if c.get("type") == kind]

    def clear(self) -> None:
        self.sent.clear()


def make(model: fw.Model, img: torch.Tensor, **kwargs: Any) -> tuple[fw.FaccentWidget, Recorder]:
    settings = {"steps": 4, **FAST, **kwargs}
    w = fw.FaccentWidget(model, img, **settings)
    rec = Recorder()
    w.send = rec  # type: ignore[method-assign]
    return w, rec


def send(w: fw.FaccentWidget, kind: str, **fields: Any) -> None:
    w._on_msg(w, {"type": kind, **fields}, [])


def chunk(w: fw.FaccentWidget, rec: Recorder, budget_ms: float = 1) -> tuple[dict[str, Any], list[bytes]]:
    """One chunk request; the widget must answer with exactly one message (a frame or an error)."""
    before = len(rec.sent)
    send(w, "chunk", budget_ms=budget_ms)
    replies = rec.sent[before:]
    # a finished gallery adds its `gallery` message right after the last frame
    frames = [r for r in replies if r[0]["type"] in ("frame", "error")]
    assert len(frames) == 1, replies
    return frames[0]


def run_to_done(w: fw.FaccentWidget, rec: Recorder, limit: int = 200) -> list[tuple[dict[str, Any], list[bytes]]]:
    frames = []
    for _ in range(limit):
        msg, bufs = chunk(w, rec)
        assert msg["type"] == "frame", msg
        frames.append((msg, bufs))
        if msg["done"]:
            return frames
    raise AssertionError("run did not finish")


@pytest.fixture
def widget(model, chelsea):
    return make(model, chelsea)


@pytest.fixture
def ready_widget(model, chelsea):
    w, rec = make(model, chelsea)
    send(w, "ready")
    rec.clear()
    return w, rec


# ---------------------------------------------------------------------------------------- construction
def test_construction_top5_default_layer_and_target(widget, model, chelsea):
    w, rec = widget
    expected = model.predict(chelsea, k=5)
    assert [t["index"] for t in w.top] == [p.index for p in expected]
    assert [t["label"] for t in w.top] == [p.label for p in expected]
    probs = [t["prob"] for t in w.top]
    assert probs == sorted(probs, reverse=True) and 0 < probs[0] <= 1
    assert len(w.inhibited) == 5 and max(t["prob"] for t in w.inhibited) <= min(probs)
    assert w.target == {"kind": "class", "index": w.top[0]["index"], "label": w.top[0]["label"]}
    assert w.seed_prob == pytest.approx(w.top[0]["prob"], rel=1e-5)
    assert w.reg_layer == w.default_reg_layer == model.default_reg_layer
    assert w.reg_layer in w.reg_layers and w.latent_layers
    assert w.lam_min < w.lam < w.lam_max
    assert w.lam_recommended is None or w.lam_min <= w.lam_recommended <= w.lam_max
    assert w.steps == 4 and w.preset == "preview" and w.device == "cpu"
    assert (w.running, w.step, w.error, w.predicted_vs_true, w.prob) == (False, 0, "", "", None)
    assert w.top[0]["label"] in w.status
    # images are sent only after the front end says it is ready
    assert all(getattr(w, t) == b"" for t in TILE_TRAITS)
    assert rec.sent == [] and w.result is None


def test_ready_fills_the_tiles_with_png(widget):
    w, rec = widget
    send(w, "ready")
    for trait in TILE_TRAITS:
        data = getattr(w, trait)
        assert data.startswith(PNG), trait
        assert Image.open(io.BytesIO(data)).size[0] > 0
    assert w.accent_png == w.seed_png  # the accentuation tile starts as the seed
    assert w.gradcam_png != w.seed_png and w.mask_png != w.seed_png
    assert w.error == "" and rec.of("error") == []
    assert "Accentuate" in w.status


def test_ready_through_the_comm_sends_images_as_binary_buffers(widget):
    """The real ipywidgets path: a custom message through ``_handle_msg``; images travel as buffers."""
    w, _ = widget
    out: list[tuple[tuple, dict]] = []
    w.comm.send = lambda *a, **k: out.append((a, k))
    w._handle_msg({"content": {"data": {"method": "custom", "content": {"type": "ready"}}}, "buffers": []})
    updates = [k for _, k in out if k["data"].get("method") == "update"]
    sent_paths = [p for k in updates for p in k["data"].get("buffer_paths", [])]
    assert ["seed_png"] in sent_paths and ["mask_png"] in sent_paths
    assert all(bytes(b).startswith(PNG) for k in updates for b in (k.get("buffers") or []))


# ---------------------------------------------------------------------------------------- runs
def test_start_and_chunks_until_done(ready_widget):
    w, rec = ready_widget
    w.steps = 6
    send(w, "start")
    assert w.running and w.step == 0 and w.result is None and rec.sent == []
    assert "accentuating" in w.status
    frames = run_to_done(w, rec)
    steps = [m["step"] for m, _ in frames]
    assert steps == sorted(set(steps)) and steps[-1] == 6 and len(frames) >= 2
    for msg, bufs in frames[:-1]:
        assert msg["done"] is False and msg["steps"] == 6 and msg["gallery"] is False
        assert len(bufs) == 1 and bufs[0].startswith(JPEG)
    last, bufs = frames[-1]
    assert last["done"] is True and len(bufs) == 1 and bufs[0].startswith(PNG)
    assert len(last["objective_history"]) == len(last["distance_history"]) == 6
    assert last["objective"] == pytest.approx(last["objective_history"][-1])
    assert 0 <= last["prob"] <= 1
    assert not w.running and w.step == 6
    assert isinstance(w.result, Accentuation) and w.result.image.shape[0] == 3
    assert w.prob == pytest.approx(w.result.score.prob)
    assert w.accent_png == bufs[0]
    assert w.status.startswith("done")
    # a chunk after the end still gets exactly one reply: a done frame without a buffer
    msg, bufs = chunk(w, rec)
    assert msg["done"] is True and bufs == [] and msg["step"] == 6 and w.step == 6


def test_stop_then_chunk_replies_done_without_advancing(ready_widget):
    w, rec = ready_widget
    w.steps = 30
    send(w, "start")
    msg, _ = chunk(w, rec)
    k = msg["step"]
    assert 1 <= k < 30 and w.running
    send(w, "stop")
    assert not w.running and w.step == k and str(k) in w.status
    for _ in range(2):
        msg, bufs = chunk(w, rec)
        assert msg["type"] == "frame" and msg["done"] is True and bufs == []
        assert msg["step"] == k and w.step == k and w._session.run.step_count == k
    # Accentuate again starts a fresh run from step 0
    send(w, "start")
    assert w.running and w.step == 0
    msg, _ = chunk(w, rec)
    assert 1 <= msg["step"] and not msg["done"]


def test_reset_shows_the_seed_again(ready_widget):
    w, rec = ready_widget
    seed_png = w.seed_png
    send(w, "start")
    chunk(w, rec)
    send(w, "reset")
    assert (w.running, w.step, w.prob, w.result) == (False, 0, None, None)
    assert w.accent_png.startswith(PNG) and w.accent_png == seed_png
    msg, bufs = chunk(w, rec)
    assert msg["done"] is True and bufs == []


@pytest.mark.parametrize("name", ["lam", "reg_layer", "steps", "preset"])
def test_setting_change_while_running_restarts_one_run(ready_widget, name):
    w, rec = ready_widget
    w.steps = 30
    send(w, "start")
    chunk(w, rec)
    old = w._session.run
    old_steps = old.step_count
    assert w.step == old_steps >= 1
    if name == "lam":
        w.lam = 2.5
    elif name == "reg_layer":
        w.reg_layer = next(layer for layer in w.reg_layers if layer != w.reg_layer)
    elif name == "steps":
        w.steps = 20
    else:
        w.preset = "paper"
    assert w.error == ""
    new = w._session.run
    assert new is not old and w.running and w.step == 0 and w.result is None
    if name == "lam":
        assert float(new.lams[0]) == pytest.approx(2.5)
    elif name == "reg_layer":
        assert new.reg_layer == w.reg_layer != old.reg_layer
    elif name == "steps":
        assert new.config.steps == 20
    msg, _ = chunk(w, rec)
    assert msg["step"] == new.step_count >= 1 and not msg["done"]
    assert old.step_count == old_steps  # the replaced run is never advanced again


def test_setting_change_when_idle_does_not_start_a_run(ready_widget):
    w, rec = ready_widget
    w.lam = 3.0
    w.steps = 7
    assert not w.running and w._session.run is None and w.error == ""
    msg, bufs = chunk(w, rec)
    assert msg["done"] is True and bufs == [] and w.step == 0


def test_view_and_percentiles_update_the_tiles(ready_widget):
    w, rec = ready_widget
    w.run(steps=3)
    masked, mask = w.accent_png, w.mask_png
    w.view = "diff"
    assert w.accent_png.startswith(PNG) and w.accent_png != masked
    w.view = "unmasked"
    assert w.accent_png != masked
    w.p1, w.p2 = 10.0, 60.0
    assert w.mask_png.startswith(PNG) and w.mask_png != mask and w.error == ""


# ---------------------------------------------------------------------------------------- targets
def test_set_target_by_index_message(ready_widget, model):
    w, rec = ready_widget
    gradcam = w.gradcam_png
    tabby = model.class_index("tabby")
    send(w, "set_target", index=tabby)
    assert w.target == {"kind": "class", "index": tabby, "label": "tabby"}
    assert w.seed_prob == pytest.approx(float(w._session.probs[tabby]))
    assert w.gradcam_png.startswith(PNG) and w.gradcam_png != gradcam
    assert rec.of("error") == [] and w.error == ""
    assert not w.running  # picking a target does not start a run
    send(w, "start")
    msg, bufs = chunk(w, rec)
    assert msg["type"] == "frame" and bufs[0].startswith(JPEG)


def test_set_target_while_running_restarts(ready_widget):
    w, rec = ready_widget
    w.steps = 30
    send(w, "start")
    chunk(w, rec)
    old = w._session.run
    send(w, "set_target", index=w.top[1]["index"])
    assert w.running and w.step == 0 and w._session.run is not old
    assert w.target["index"] == w.top[1]["index"]


def test_set_latent_message(ready_widget):
    w, rec = ready_widget
    layer = w.latent_layers[-1]
    send(w, "set_latent", layer=layer, channel=3)
    assert rec.of("error") == [] and w.error == ""
    assert w.target["kind"] == "latent" and w.target["layer"] == layer and w.target["channel"] == 3
    assert w.target["label"]
    assert w.seed_prob is None and w.gradcam_png.startswith(PNG)
    send(w, "start")
    frames = run_to_done(w, rec)
    assert frames[-1][0]["done"] and isinstance(w.result, Accentuation)
    assert w.status.startswith("done")


def test_search_results_echo_the_query(widget):
    w, rec = widget
    send(w, "search", query="tabby")
    ((msg, bufs),) = rec.of("search_results")
    assert msg["query"] == "tabby" and bufs == []
    assert msg["items"][0]["label"] == "tabby"
    assert all({"index", "label"} <= set(it) for it in msg["items"])
    rec.clear()
    send(w, "search", query=" cat ")
    ((msg, _),) = rec.of("search_results")
    assert msg["query"] == " cat " and msg["items"]
    assert all("cat" in it["label"].lower() for it in msg["items"])
    rec.clear()
    send(w, "search", query="zzzz-no-such-class")
    ((msg, _),) = rec.of("search_results")
    assert msg["items"] == []


# ---------------------------------------------------------------------------------------- errors
def test_error_path_keeps_the_widget_usable(ready_widget):
    w, rec = ready_widget
    target = dict(w.target)
    send(w, "set_target", index=5000)
    ((msg, bufs),) = rec.sent
    assert msg["type"] == "error" and msg["message"] and bufs == []
    assert w.error == msg["message"] and "5000" in w.error
    assert w.target == target and not w.running
    rec.clear()
    send(w, "start")
    assert w.error == ""  # a new run clears the error
    msg, bufs = chunk(w, rec)
    assert msg["type"] == "frame" and bufs and bufs[0].startswith(JPEG)
    assert w.step >= 1


def test_error_during_a_run_stops_it_and_next_chunk_gets_a_done_frame(ready_widget):
    w, rec = ready_widget
    w.steps = 30
    send(w, "start")
    chunk(w, rec)
    rec.clear()
    send(w, "set_latent", layer="no.such.layer", channel=0)
    ((msg, _),) = rec.sent
    assert msg["type"] == "error" and w.error and not w.running
    msg, bufs = chunk(w, rec)
    assert msg["type"] == "frame" and msg["done"] is True and bufs == []


@pytest.mark.parametrize("content", [{"type": "bogus"}, {}, {"type": "chunk", "budget_ms": "fast"}])
def test_bad_messages_answer_with_an_error(widget, content):
    w, rec = widget
    w._on_msg(w, content, [])
    ((msg, _),) = rec.sent
    assert msg["type"] == "error" and w.error == msg["message"]


@pytest.mark.parametrize(
    "name, value",
    [
        ("lam", -1.0),
        ("lam", float("inf")),
        ("steps", 0),
        ("steps", 100_000),
        ("p1", 99.0),
        ("p2", 10.0),
        ("reg_layer", "no.such.layer"),
        ("view", "sideways"),
        ("preset", "turbo"),
    ],
)
def test_refused_trait_values_revert_and_set_error(widget, name, value):
    w, rec = widget
    old = getattr(w, name)
    setattr(w, name, value)
    assert getattr(w, name) == old
    assert w.error
    # a valid value afterwards is accepted and clears the error
    good = {
        "lam": 0.3,
        "steps": 5,
        "p1": 40.0,
        "p2": 90.0,
        "reg_layer": w.reg_layers[0],
        "view": "diff",
        "preset": "paper",
    }[name]
    setattr(w, name, good)
    assert getattr(w, name) == good and w.error == ""


def test_lam_anywhere_inside_the_slider_bounds_is_accepted(widget):
    w, _ = widget
    for lam in (w.lam_min, w.lam_max, 10**-1.37, 10**1.99):
        w.lam = lam
        assert w.lam == pytest.approx(lam) and w.error == ""


def test_refused_value_from_the_browser_is_reverted_in_the_browser(widget):
    """Through the comm, as the browser sets traits: the revert is synced back as an update."""
    w, _ = widget
    out: list[dict[str, Any]] = []
    w.comm.send = lambda *a, **k: out.append(k["data"])
    w._handle_msg({"content": {"data": {"method": "update", "state": {"steps": 0}, "buffer_paths": []}}, "buffers": []})
    assert w.steps == 4 and "steps" in w.error
    updates = [d["state"] for d in out if d.get("method") == "update"]
    assert {"steps": 4} in updates and any("error" in u for u in updates)
    out.clear()
    w._handle_msg(
        {
            "content": {"data": {"method": "update", "state": {"p1": 30.0, "p2": 70.0}, "buffer_paths": []}},
            "buffers": [],
        }
    )
    assert (w.p1, w.p2, w.error) == (30.0, 70.0, "")


def test_the_browser_may_toggle_explain_and_presentation(widget):
    """The display toggles are the browser's to set (explain is on in a fresh panel); the images are not."""
    w, _ = widget
    assert (w.explain, w.presentation) == (True, False)
    state = {"explain": False, "presentation": True}
    w._handle_msg({"content": {"data": {"method": "update", "state": state, "buffer_paths": []}}, "buffers": []})
    assert (w.explain, w.presentation, w.error) == (False, True, "")
    # the Advanced "away from the target" checkbox is the browser's to set too
    w._handle_msg(
        {"content": {"data": {"method": "update", "state": {"away": True}, "buffer_paths": []}}, "buffers": []}
    )
    assert (w.away, w.error) == (True, "")
    w._handle_msg(
        {"content": {"data": {"method": "update", "state": {"running": True}, "buffer_paths": []}}, "buffers": []}
    )
    assert w.running is False and "running" in w.error


# ---------------------------------------------------------------------------------------- galleries
def _run_gallery(w: fw.FaccentWidget, rec: Recorder, mode: str):
    send(w, "gallery", mode=mode)
    assert w.running and rec.of("error") == []
    for _ in range(200):
        msg, bufs = chunk(w, rec)
        assert msg["type"] == "frame" and msg["gallery"] is True
        if msg["done"]:
            break
        assert bufs[0].startswith(JPEG)
    else:
        raise AssertionError("gallery did not finish")
    assert bufs[0].startswith(PNG) and not w.running
    ((gallery, gbufs),) = rec.of("gallery")
    assert rec.sent[-1][0]["type"] == "gallery"  # right after the last frame
    return gallery, gbufs


def test_gallery_topk(widget):
    w, rec = widget
    w.steps = 3
    gallery, bufs = _run_gallery(w, rec, "topk")
    items = gallery["items"]
    n = len(items)
    assert n == 5 and len(bufs) == 3 * n  # masked, masks, unmasked
    assert all(it["role"] is None for it in items)
    assert [it["index"] for it in items] == [t["index"] for t in w.top]
    assert [it["label"] for it in items] == [t["label"] for t in w.top]
    assert all(0 <= it["prob_before"] <= 1 and 0 <= it["prob_after"] <= 1 for it in items)
    assert all(b.startswith(PNG) for b in bufs)
    assert len(w.gallery) == n and all(isinstance(a, Accentuation) for a in w.gallery)
    assert w.status.startswith("gallery done")
    # an ordinary run afterwards is not a gallery any more
    send(w, "start")
    msg, _ = chunk(w, rec)
    assert msg["gallery"] is False


def test_gallery_inhibited(widget):
    w, rec = widget
    w.steps = 2
    gallery, bufs = _run_gallery(w, rec, "inhibited")
    assert [it["index"] for it in gallery["items"]] == [t["index"] for t in w.inhibited]
    assert len(bufs) == 15
    # the unmasked accentuations (the last five) are each run's own image, not the masked composite
    for res, data in zip(w.gallery, bufs[10:]):
        shown = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32) / 255.0
        own = res.image.permute(1, 2, 0).numpy()
        assert shown.shape == own.shape and np.abs(shown - own).max() < 1.5 / 255


def test_predicted_vs_true_with_a_wrong_true_label(model, chelsea):
    w, rec = make(model, chelsea, true_label="tabby", steps=3)
    pred = w.top[0]["label"]
    assert pred != "tabby"
    text = w.predicted_vs_true
    assert text.startswith(f"predicted {pred} (") and "true tabby (" in text
    with pytest.warns(DeprecationWarning, match="predicted_vs_true"):
        assert w.triage == text  # the old name still reads
    assert w.true_index == model.class_index("tabby")
    gallery, bufs = _run_gallery(w, rec, "predicted_vs_true")
    assert [it["label"] for it in gallery["items"]] == [pred, "tabby"]
    assert [it["role"] for it in gallery["items"]] == ["predicted", "true"]
    assert len(bufs) == 6 and all(b.startswith(PNG) for b in bufs)


@pytest.mark.parametrize("true_label", ["top1-label", "top1-index"])
def test_predicted_vs_true_with_the_correct_true_label_is_empty(model, chelsea, true_label):
    top1 = model.predict(chelsea, k=1)[0]
    w, _ = make(model, chelsea, true_label=top1.label if true_label == "top1-label" else top1.index)
    assert w.predicted_vs_true == "" and w.true_index == top1.index


def test_predicted_vs_true_without_true_label_is_an_error(widget):
    w, rec = widget
    send(w, "gallery", mode="predicted_vs_true")
    ((msg, _),) = rec.sent
    assert msg["type"] == "error" and "true_label" in msg["message"] and not w.running


# ---------------------------------------------------------------------------------------- download, run
def test_download_sends_the_panel_png(ready_widget):
    w, rec = ready_widget
    send(w, "download")
    ((msg, bufs),) = rec.sent
    assert msg["type"] == "download" and msg["filename"].endswith(".png")
    assert len(bufs) == 1 and bufs[0].startswith(PNG)
    img = Image.open(io.BytesIO(bufs[0]))
    assert img.size[0] == 1024 and img.size[1] < 1400  # slide-ready: titled, four tiles in a 2 × 2 grid
    # after a run too
    w.run(steps=2)
    rec.clear()
    send(w, "download")
    ((msg, bufs),) = rec.sent
    assert bufs[0].startswith(PNG)


def test_run_headless_returns_the_result(widget):
    w, rec = widget
    result = w.run(steps=3)
    assert isinstance(result, Accentuation) and result is w.result
    assert (w.steps, w.step, w.running) == (3, 3, False)
    assert len(result.history["objective"]) == 3
    assert result.seed_score.prob is not None and result.score.prob is not None
    assert w.accent_png.startswith(PNG) and rec.sent == []
    with pytest.raises(ValueError):
        w.run(steps=0)
    assert w.steps == 3


# ---------------------------------------------------------------------------------------- user's model
def _model_state(module: torch.nn.Module) -> list[Any]:
    return [
        [(n, m.training) for n, m in module.named_modules()],
        [(n, p.requires_grad) for n, p in module.named_parameters()],
        [
            (
                n,
                len(m._forward_hooks),
                len(m._forward_pre_hooks),
                len(m._backward_hooks),
                len(getattr(m, "_backward_pre_hooks", {})),
            )
            for n, m in module.named_modules()
        ],
        {k: v.clone() for k, v in module.state_dict().items()},
    ]


def test_users_model_is_unchanged(chelsea):
    model = fw.load_model()
    net = model.user_module
    # a user's model in an unusual state: training mode and one frozen parameter
    net.train()
    first = next(net.parameters())
    first.requires_grad_(False)
    before = _model_state(net)
    w, rec = make(model, chelsea, steps=3)
    send(w, "ready")
    send(w, "start")
    chunk(w, rec)
    assert _model_state(net)[:3] == before[:3]  # also between chunks
    run_to_done(w, rec)
    send(w, "set_latent", layer=w.latent_layers[-1], channel=1)
    send(w, "start")
    chunk(w, rec)
    send(w, "stop")
    w.steps = 2
    _run_gallery(w, rec, "topk")
    send(w, "download")
    w.run(steps=2)
    after = _model_state(net)
    assert after[:3] == before[:3]
    assert after[3].keys() == before[3].keys()
    assert all(torch.equal(after[3][k], before[3][k]) for k in before[3])  # weights and BN statistics
    assert rec.of("error") == []


# ---------------------------------------------------------------------------------------- router and state (issue 20)
def test_replies_echo_the_request_id(ready_widget):
    w, rec = ready_widget
    w._on_msg(w, {"type": "search", "query": "tab", "id": 7}, [])
    assert rec.sent[-1][0]["type"] == "search_results" and rec.sent[-1][0]["id"] == 7
    w._on_msg(w, {"type": "scrub", "index": 0, "id": 8}, [])  # no run yet: an error that answers request 8
    assert rec.sent[-1][0]["type"] == "error" and rec.sent[-1][0]["id"] == 8
    w._on_msg(w, {"type": "download", "id": "d1"}, [])
    assert rec.sent[-1][0]["type"] == "download" and rec.sent[-1][0]["id"] == "d1"
    send(w, "search", query="tab")  # without an id, none comes back
    assert "id" not in rec.sent[-1][0]
    w._on_msg(w, {"type": "search", "query": "tab", "id": [1]}, [])  # an id that is no int or string is ignored
    assert "id" not in rec.sent[-1][0]


def test_the_gallery_reply_carries_the_gallery_request_id(model, chelsea):
    w, rec = make(model, chelsea, steps=2, reference=[chelsea])
    send(w, "ready")
    w._on_msg(w, {"type": "gallery", "mode": "topk", "id": 41}, [])
    while w.running:
        chunk(w, rec)
    ((msg, _),) = rec.of("gallery")
    assert msg["id"] == 41 and msg["mode"] == "topk"
    assert all("id" not in m for m, _ in rec.of("frame"))  # chunks carry no id


def test_frames_compose_with_the_runs_canvas_seed_without_resizing(ready_widget, monkeypatch):
    from faccent_widget.widget import session as session_mod

    w, rec = ready_widget
    send(w, "start")
    run = w._session.run
    calls = []
    real = session_mod.resize_image
    monkeypatch.setattr(session_mod, "resize_image", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    for view in ("masked", "diff"):
        w.view = view
        chunk(w, rec)
    send(w, "scrub", index=0)
    assert calls == []  # the seed at the canvas size is the one the run holds, not resized per frame
    assert torch.equal(w._session.seed_at((run.h, run.w)), run.seeds[0].cpu())


def test_session_compose_and_the_deprecated_view(ready_widget):
    w, _ = ready_widget
    session = w._session
    accent = torch.rand(3, 24, 32)
    assert torch.equal(session.compose(accent, session.mask, "unmasked"), accent)
    with pytest.warns(DeprecationWarning, match="compose"):
        diff = session.view(accent, session.mask, "diff")
    assert torch.equal(diff, session.compose(accent, session.mask, "diff"))


def test_the_deprecated_triage_gallery_mode_still_works(model, chelsea):
    w, _ = make(model, chelsea, true_label="tabby", steps=2, reference=[chelsea])
    with pytest.warns(DeprecationWarning, match="predicted_vs_true"):
        w.start_gallery("triage")
    assert w.running and w._session.gallery_mode == "predicted_vs_true"
    w.stop()


def test_a_photo_swap_reuses_the_reference_maps(ready_widget, chelsea):
    w, rec = ready_widget
    old = w._session
    ref_maps = old.maps(w._objective)[1]
    w.image = chelsea.flip(-1)
    new = w._session
    assert new is not old and new.references is old.references
    assert new.maps(w._objective)[1] is ref_maps  # not computed again
    assert not torch.equal(new.seed, old.seed) and w.gradcam_png


# ---------------------------------------------------------------------------------------- bounded (issue 25)
def test_snapshots_and_gif_frames_are_capped(model, chelsea, monkeypatch):
    from faccent_widget.widget import exports, session

    # a 2000-step run at snapshot_every=2 kept 1001 snapshots; now at most MAX_SNAPSHOTS (+ the seed)
    cfg = resolve_config("preview", "cpu", steps=2000)
    assert cfg.snapshot_every == 2 and 2000 // session.snapshot_every(cfg) <= session.MAX_SNAPSHOTS
    picked = exports.frame_indices(1001)
    assert len(picked) == exports.GIF_MAX_FRAMES and picked[0] == 0 and picked[-1] == 1000
    # the same rules on a real run, with small budgets
    monkeypatch.setattr(session, "MAX_SNAPSHOTS", 3)
    monkeypatch.setattr(exports, "GIF_MAX_FRAMES", 3)
    w, _ = make(model, chelsea, steps=8, snapshot_every=1, reference=[chelsea])
    w.run()
    assert w.result.snapshot_steps == [3, 6, 8] and w.snapshot_steps == [0, 3, 6, 8]
    gif = Image.open(io.BytesIO(w.gif()))
    assert gif.n_frames == 3  # 4 scrub positions thinned to 3: the seed and the final image kept


@pytest.mark.parametrize("shape", [(3, 1, 2000), (3, 2000, 1)])
def test_exports_of_thin_images_are_bounded(model, chelsea, tmp_path, shape):
    w, _ = make(model, torch.rand(*shape), steps=2, reference=[chelsea])
    w.run()
    png = Image.open(w.save(tmp_path / "x.png"))
    assert png.width * png.height < 2_000_000  # it was 246 Mpx for 1 × 2000
    gif = Image.open(w.save(tmp_path / "x.gif"))  # it raised OverflowError
    assert max(gif.size) <= 1024 and gif.n_frames >= 2


def test_images_over_40_mpx_are_refused_on_every_path(model, chelsea):
    import numpy as np

    big = np.zeros((6000, 8000, 3), np.uint8)  # 48 Mpx: uploads of it were refused, w.image took it
    with pytest.raises(ValueError, match=r"too large \(8000×6000 = 48 Mpx; at most 40 Mpx\)"):
        fw.FaccentWidget(model, big, steps=2, **FAST)
    w, _ = make(model, chelsea, reference=[chelsea])
    with pytest.raises(ValueError, match="too large"):
        w.image = big
    with pytest.raises(ValueError, match="too large"):
        w.image = torch.zeros(1, 1, 1).expand(3, 8000, 6000)  # (no memory behind it)
    assert torch.equal(w.image, chelsea)  # the current seed stays


def test_a_new_image_says_that_the_true_label_is_dropped_or_takes_a_new_one(model, chelsea):
    w, _ = make(model, chelsea, true_label="tabby", reference=[chelsea])
    assert w.predicted_vs_true
    with pytest.warns(UserWarning, match="true label 'tabby' was for the previous image"):
        w.image = chelsea.flip(-1)
    assert w.true_index is None and w.predicted_vs_true == "" and "true label 'tabby'" in w.status
    w.set_image(chelsea, true_label="tabby")
    assert w.true_index == model.class_index("tabby") and w.predicted_vs_true.endswith(")")


# ------------------------------------------------------------------ away from the target (issue 24), notes (issue 25)


def test_away_suppresses_the_target_and_restores_cleanly(model, chelsea):
    w, rec = make(model, chelsea, steps=6)
    label = w.target["label"]
    w.away = True
    result = w.run()
    assert result.target.startswith("suppress logit") and label in result.target
    assert result.score.value > result.seed_score.value  # −logit rose: the class was pushed down
    assert result.score.prob is not None and result.score.prob < result.seed_score.prob
    assert w.status.startswith(f"done: away from {label}")
    with pytest.raises(traitlets.TraitError):  # a Bool trait: refused, the old value stays
        w.away = "yes"  # type: ignore[assignment]
    assert w.away is True
    w.away = False
    assert not w.run().target.startswith("suppress")


def test_away_gallery_masks_by_the_class_and_names_it(model, chelsea):
    w, rec = make(model, chelsea, steps=2)
    w.away = True
    w.start_gallery("topk")
    run_to_done(w, rec)
    (msg, _), *_ = rec.of("gallery")
    assert all(item["label"].startswith("away from ") for item in msg["items"])


def test_a_run_that_cannot_move_says_so_in_the_status(model):
    framed = torch.ones(3, 96, 96)
    framed[:, :8] = framed[:, -8:] = 0
    # the engine's own case (tests/test_engine.py): λ = 1000, random seed 0 (Adam takes full-size first steps
    # whatever λ, so how far a pixel strays before the regulariser pulls it back depends on the crops)
    w, _ = make(model, framed, steps=10, n_crops=2, input_size=64, canvas=64, seed=0)
    w.set_target("espresso")
    w.lam = 1000.0
    result = w.run()
    assert result.notes, (float((result.image - result.seed).abs().max()), result.seed_score, result.score)
    assert "Try a smaller λ" in w.status and result.notes[0] in w.status
