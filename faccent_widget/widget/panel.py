"""``FaccentWidget``: one anywidget panel with seed, Grad-CAM, collective mask and live accentuation.

The browser drives the loop (see ``docs/widget-protocol.md``): it asks for a chunk of steps (its
``budget_ms`` is an upper bound; the device policy sets the length: 200 ms on CPUs, 60 ms on GPUs),
Python runs them and answers with one frame (JPEG bytes in a message buffer), the browser paints it and
asks again. No threads, so it behaves the same in JupyterLab, Notebook 7, VS Code and Colab, and the
kernel stays free between chunks. ``run()`` does the same from Python, headless.

This class holds the traits, routes the browser's messages and sends the replies; the state (seed, maps,
run, snapshots, results) is the :class:`~faccent_widget.widget.session.Session`'s, the exports are
:mod:`~faccent_widget.widget.exports`' and the checks of what comes in are :mod:`~faccent_widget.widget.inputs`'.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import traitlets
from torch import nn

from ..core.config import (
    DEFAULT_LAMBDA,
    PRESETS,
    EngineConfig,
    check_int,
    check_lambda,
    check_real,
    resolve_config,
)
from ..core.device_policy import device_policy
from ..core.model import Model, as_model
from ..core.objectives import Objective, resolve_objective
from ..images import ImageInput, to_jpeg_bytes, to_png_bytes
from . import exports
from .extras import LambdaCalibrator, cached_lambda, decode_image
from .inputs import GALLERY_MODES, check_image_size, plain_error, target_from_trait
from .judge import as_judge
from .playback import Playback
from .session import Session
from .traits import PanelTraits

__all__ = ["FaccentWidget"]

#: The traits whose changes go through ``_on_setting``.
_SETTINGS = (
    "lam",
    "reg_layer",
    "preset",
    "steps",
    "p1",
    "p2",
    "view",
    "lam_min",
    "lam_max",
    "lam_recommended",
    "away",
)


def _asset(name: str) -> Path:
    here = Path(__file__).resolve().parent.parent
    packaged = here / "static" / name
    return packaged if packaged.exists() else here.parent / "js" / name


def _request_id(content: dict[str, Any]) -> int | str | None:
    """The ``id`` a request carries (an int or a string), echoed in its reply; None when absent or odd."""
    rid = content.get("id")
    return rid if isinstance(rid, (int, str)) and not isinstance(rid, bool) else None


def _setting_text(name: str, value: Any) -> str:
    """The status line after a run setting changed, in words."""
    if name == "lam":
        return f"λ set to {value:.3g}"
    if name == "away":
        return "direction: away from the target" if value else "direction: toward the target"
    return f"{name.replace('reg_layer', 'layer kept close')} set to {value}"


class FaccentWidget(Playback):
    """Interactive feature accentuation of one image.

    Args:
        model: a :class:`~faccent_widget.Model` or a bare ``nn.Module`` (wrapped automatically).
        img: anything :func:`~faccent_widget.load_image` accepts (at most 40 Mpx, as uploads).
        labels: class names for a bare module.
        true_label: the image's true class (index or label) — enables the predicted-vs-true gallery.
        reference: images for collective mask normalisation (default: the bundled sample images).
        preset: a name from ``fw.PRESETS`` ("preview", "gpu", "paper"; default by device).
        device: run on this device (a private copy of the model if it lives elsewhere).
        judge: a second classifier (``Model`` or ``nn.Module`` of the same classes, wrapped like
            ``model`` and never changed): the stats line shows its p(target) of the seed and of the
            accentuation — does what one model learned to see convince another?
        **engine_overrides: any :func:`~faccent_widget.accentuate` setting (``n_crops``, ``lr``, …).
            ``seed`` (the random seed of the crops and noise) is 0 unless given: the same settings give
            the same accentuation in every kernel, after a Stop and a restart too.
    """

    _esm = _asset("widget.js")
    _css = _asset("widget.css")

    #: Traits the browser may set (the controls); the others are the kernel's to set (see ``set_state``).
    BROWSER_SETTABLE = (
        "lam",
        "reg_layer",
        "preset",
        "steps",
        "away",
        "p1",
        "p2",
        "view",
        "target",
        "explain",
        "presentation",
    )

    def __init__(
        self,
        model: nn.Module | Model,
        img: ImageInput,
        *,
        labels: Sequence[str] | None = None,
        true_label: int | str | None = None,
        reference: Sequence[ImageInput] | None = None,
        preset: str | None = None,
        device: str | torch.device | None = None,
        judge: nn.Module | Model | None = None,
        **engine_overrides: Any,
    ) -> None:
        adapter = as_model(model, labels=labels, device=device)
        judge_model = as_judge(judge, adapter, labels) if judge is not None else None
        if engine_overrides.get("seed") is None:
            engine_overrides["seed"] = 0  # reproducible: one image for one setting, in every kernel
        lam_given = engine_overrides.pop("lam", None)
        lam = DEFAULT_LAMBDA if lam_given is None else check_lambda(lam_given)
        config = resolve_config(preset, adapter.device, **engine_overrides)  # bad settings fail here, not later
        reg_layer = adapter.check_reg_layer(config.reg_layer)
        check_image_size(img)
        session = Session(adapter, img, reference=reference)
        top = session.top(5)
        super().__init__(
            top=top,
            inhibited=session.inhibited(5),
            preset=config.preset,
            presets=list(PRESETS),
            steps=config.steps,
            lam=lam,
            reg_layer=reg_layer,
            default_reg_layer=adapter.default_reg_layer,
            reg_layers=adapter.reg_layer_candidates,
            latent_layers=adapter.block_layers or adapter.map_layers,
            device=str(adapter.device),
        )
        self._model = adapter
        self._session = session
        self._chunk_budget_s = device_policy(adapter.device, model_dtype=adapter.dtype).chunk_budget_s
        self._overrides = {
            k: getattr(config, k)
            for k, v in engine_overrides.items()
            if k not in ("steps", "reg_layer") and v is not None
        }
        #: The one resolved engine configuration; trait changes replace fields of it.
        self.engine_config: EngineConfig = dataclasses.replace(config, reg_layer=reg_layer)
        self._objective: Objective = resolve_objective(adapter, top[0]["index"])
        self._ready = False
        self._reverting = False  # our own revert of a refused value is no new setting
        self._setting_target = False  # our own change of ``target`` is no request from outside
        self._request: int | str | None = None  # the id of the request being handled (echoed in replies)
        self._gallery_request: int | str | None = None  # the id of the gallery request (its final reply)
        self._calibrator: LambdaCalibrator | None = None
        self._auto_lam_layer: str | None = None
        self._judge = judge_model
        self._last_run: tuple[Any, ...] | None = None  # what made the last single run (see _check_settings)
        self.true_index = adapter.class_index(true_label) if true_label is not None else None
        self._set_target_trait()
        self.predicted_vs_true = self._predicted_vs_true_text()
        self.seed_prob = self._seed_prob()
        self._update_judge(seed_only=True)
        self.status = f"predicted {top[0]['label']} ({top[0]['prob']:.2f})"
        # observers are connected once the widget is complete (the constructor's values are no changes)
        self.observe(self._on_setting, names=list(_SETTINGS))
        self.observe(self._on_target, names=["target"])
        self.observe(self._sync_snapshots, names=["step", "running"])
        self.observe(self._redraw_on_view, names=["view"])
        self.observe(self._forget_auto_lambda, names=["reg_layer"])
        self.on_msg(self._on_msg)

    # ------------------------------------------------------------------ state
    @property
    def triage(self) -> str:
        """Deprecated name of :attr:`predicted_vs_true`."""
        warnings.warn(
            "FaccentWidget.triage is deprecated; use FaccentWidget.predicted_vs_true", DeprecationWarning, stacklevel=2
        )
        return self.predicted_vs_true

    @property
    def image(self) -> torch.Tensor:
        """The seed (3, H, W); assigning anything ``load_image`` accepts (or file bytes) swaps it."""
        return self._session.seed

    @image.setter
    def image(self, value: ImageInput | bytes) -> None:
        self.set_image(value)

    # ------------------------------------------------------------------ messages from the browser
    def _on_msg(self, _widget: Any, content: dict[str, Any], buffers: Sequence[bytes]) -> None:
        kind = content.get("type") if isinstance(content, dict) else None
        handlers: dict[str, Callable[[dict[str, Any], list[bytes]], None]] = {
            "ready": self._handle_ready,
            "start": lambda _m, _b: self.start(),
            "continue": lambda _m, _b: self.resume(),
            "chunk": self._handle_chunk,
            "stop": lambda _m, _b: self.stop(),
            "reset": lambda _m, _b: self.reset(),
            "set_target": self._handle_set_target,
            "set_latent": self._handle_set_latent,
            "search": self._handle_search,
            "gallery": self._handle_gallery,
            "download": self._handle_download,
            "scrub": self._handle_scrub,
            "calibrate": self._handle_calibrate,
            "load_image": self._handle_load_image,
            "export_gif": self._handle_export_gif,
        }
        handler = handlers.get(str(kind))
        if handler is None:
            self._fail(f"unknown message type {kind!r}")
            return
        self._request = _request_id(content)
        try:
            with self._browser_work(str(kind)):  # "auto": all cores on an idle machine, else all but one
                handler(content, [bytes(b) for b in (buffers or [])])
        except Exception as exc:  # shown in the panel; the widget stays usable
            if self.running:
                self.status = f"stopped at step {self.step}: see the message above"
            self.running = False
            self._fail(plain_error(exc))
        finally:
            self._request = None

    def _reply(self, content: dict[str, Any], buffers: Sequence[bytes] | None = None, rid: Any = None) -> None:
        """Send ``content``, with the id of the request being answered (``rid``, or the current one)."""
        rid = self._request if rid is None else rid
        self.send(content if rid is None else {**content, "id": rid}, list(buffers) if buffers else None)

    def _fail(self, message: str) -> None:
        """Show ``message`` once: in the error box (the ``error`` trait and its reply), not in the status."""
        self.error = message
        self._reply({"type": "error", "message": message})

    def _handle_ready(self, _msg: dict[str, Any], _buffers: list[bytes]) -> None:
        self._ready = True
        self.seed_png = to_png_bytes(self._session.display_seed)
        if not self.accent_png:
            self.accent_png = self.seed_png
        self.status = "computing Grad-CAM and the collective mask…"
        self._refresh_tiles()
        self.status = (
            f"predicted {self.top[0]['label']} ({self.top[0]['prob']:.2f}) — pick a target and press Accentuate"
        )

    def _handle_chunk(self, msg: dict[str, Any], _buffers: list[bytes]) -> None:
        requested = check_real(msg.get("budget_ms", 1000 * self._chunk_budget_s), "budget_ms", 0.0) / 1000.0
        frame = self.advance(max(0.02, min(requested, self._chunk_budget_s, 5.0)))
        if frame is None:
            self.send({"type": "frame", "step": self.step, "steps": self.steps, "done": True})
            return
        gallery = self._session.gallery_mode is not None
        payload = {
            "type": "frame",
            "step": frame.step,
            "steps": frame.steps,
            "objective": frame.objective,
            "distance": frame.distance,
            "prob": frame.prob,
            "done": frame.done,
            "objective_history": frame.objective_history,
            "distance_history": frame.distance_history,
            "gallery": gallery,
        }
        image = to_png_bytes(frame.image) if frame.done else to_jpeg_bytes(frame.image, quality=85)
        self.send(payload, [image])
        if frame.done and gallery:
            items, buffers = exports.gallery_message(self._session, self.p1, self.p2)
            content = {"type": "gallery", "mode": self._session.gallery_mode, "items": items}
            self._reply(content, buffers, rid=self._gallery_request)

    def _handle_set_target(self, msg: dict[str, Any], _buffers: list[bytes]) -> None:
        self.set_target(check_int(msg.get("index"), "index", 0))

    def _handle_set_latent(self, msg: dict[str, Any], _buffers: list[bytes]) -> None:
        layer, channel = msg.get("layer"), msg.get("channel")
        if not isinstance(layer, str):
            raise TypeError(f"layer must be a layer name (a string), got {layer!r}")
        self.set_target(f"{layer}:{check_int(channel, 'channel', 0)}")

    def _handle_search(self, msg: dict[str, Any], _buffers: list[bytes]) -> None:
        query = msg.get("query", "")
        if not isinstance(query, str):
            raise TypeError(f"query must be a string, got {query!r}")
        self._reply({"type": "search_results", "query": query, "items": self._session.search(query)})

    def _handle_gallery(self, msg: dict[str, Any], _buffers: list[bytes]) -> None:
        mode = msg.get("mode", "topk")
        if not isinstance(mode, str):
            raise TypeError(f"mode must be {', '.join(map(repr, GALLERY_MODES))}, got {mode!r}")
        self.start_gallery(mode)
        self._gallery_request = self._request

    def _handle_download(self, _msg: dict[str, Any], _buffers: list[bytes]) -> None:
        self._reply({"type": "download", "filename": "faccent_panel.png"}, [self.panel_png()])

    def _handle_export_gif(self, _msg: dict[str, Any], _buffers: list[bytes]) -> None:
        self._reply({"type": "download", "filename": f"faccent_{self.view}.gif"}, [self.gif()])

    def _handle_scrub(self, msg: dict[str, Any], _buffers: list[bytes]) -> None:
        index, step, image = self._session.scrub(int(msg["index"]), self.view)
        count = len(self._session.scrub_steps())
        if self.running and self._session.scrub_index is None:
            self.shown = {}  # back at the right end of a live run: its frames say the numbers
        else:
            self._show_numbers(index)
        reply = {"type": "scrub", "index": index, "step": step, "count": count, "numbers": self.shown}
        self._reply(reply, [to_png_bytes(image)])

    def _handle_calibrate(self, msg: dict[str, Any], _buffers: list[bytes]) -> None:
        try:
            done = self.calibrate_step(float(msg.get("budget_ms", 1000 * self._chunk_budget_s)) / 1000.0)
        except Exception as exc:  # the λ mark is a convenience: its failure is no panel error
            self._calibrator = None
            self._reply({"type": "calibration", "done": True, "value": None, "error": plain_error(exc)})
            return
        progress = 1.0 if done or self._calibrator is None else self._calibrator.progress
        self._reply({"type": "calibration", "done": done, "progress": progress, "value": self.lam_recommended})

    def _handle_load_image(self, msg: dict[str, Any], buffers: list[bytes]) -> None:
        if not buffers:
            raise ValueError("no file data arrived")
        name = str(msg.get("name", "") or "the file")
        try:
            seed = decode_image(buffers[0])
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}; the previous image stays") from None
        dropped = self._swap_image(seed, None)
        self.status = f"new image {name}: predicted {self.top[0]['label']} ({self.top[0]['prob']:.2f}){dropped}"

    # ------------------------------------------------------------------ trait validation and sync
    def set_state(self, sync_data: dict[str, Any]) -> None:
        """State from the browser. Values of the wrong type (``lam: null``, ``steps: 3.5``) and traits
        that are the kernel's to set (``top``, ``running``, the images, …) are refused: ``error`` says
        why and the kernel's value is sent back, so browser and kernel stay in sync. The rest goes
        through the usual validation (``_on_setting``, ``_on_target``)."""
        accepted: dict[str, Any] = {}
        refused: dict[str, str] = {}
        own = PanelTraits.class_own_traits(sync=True)
        for name, value in sync_data.items():
            if name in own and name not in self.BROWSER_SETTABLE:
                refused[name] = f"{name} is set by the kernel, not by the browser"
                continue
            if name in own:
                from_json = self.trait_metadata(name, "from_json", self._trait_from_json)
                try:
                    self.traits()[name]._validate(self, from_json(value, self))
                except traitlets.TraitError as exc:
                    refused[name] = f"refused {name}={value!r}: {exc}"
                    continue
            accepted[name] = value
        if accepted:
            super().set_state(accepted)
        if refused:
            self.error = "; ".join(refused.values())
            self.send_state(list(refused))  # the browser gets the kernel's values back

    def _on_setting(self, change: dict[str, Any]) -> None:
        if self._reverting:
            return  # our own revert of a refused value
        name, new, old = change["name"], change["new"], change["old"]
        problem = self._invalid(name, new)
        if problem:
            self.error = problem
            self._revert(name, old)
            return
        self.error = ""  # an accepted value clears the message about an earlier refused one
        previous = self.engine_config
        try:
            if name == "preset":
                self.engine_config = resolve_config(
                    new, self._model.device, **self._overrides, reg_layer=self.reg_layer
                )
                self.steps = self.engine_config.steps  # the new preset's steps (re-enters as a "steps" change)
            elif name in ("steps", "reg_layer"):
                self.engine_config = dataclasses.replace(self.engine_config, **{name: new})
            if name in ("p1", "p2"):
                self._refresh_tiles()
            elif name == "view":
                if self.result is not None:
                    self.accent_png = to_png_bytes(self._session.compose(self.result.image, self._session.mask, new))
            elif name in ("lam", "reg_layer", "preset", "steps", "away") and self.running:
                self.start()  # λ, layer, preset, steps or direction changed mid-run: restart cleanly
            elif name in ("lam", "reg_layer", "preset", "steps", "away"):
                self.status = _setting_text(name, new)  # fresh after every action; the hint replaces it
                self._check_settings()
        except Exception as exc:  # nothing half-applied: the old value and configuration come back
            self.engine_config = previous
            self._revert(name, old)
            self.running = False
            self._fail(plain_error(exc))

    def _on_target(self, change: dict[str, Any]) -> None:
        """``target`` set from outside (the browser, or ``w.target = …``): applied through
        :meth:`set_target` when it names a class index or a layer channel, else refused."""
        if self._setting_target:
            return
        try:
            self.set_target(target_from_trait(change["new"]))
        except Exception as exc:
            self._setting_target = True
            try:
                self.target = change["old"]
            finally:
                self._setting_target = False
            self.error = f"refused target {change['new']!r}: {exc}"

    def _revert(self, name: str, old: Any) -> None:
        self._reverting = True
        try:
            self.set_trait(name, old)
        finally:
            self._reverting = False

    def _sync_snapshots(self, change: dict[str, Any]) -> None:
        if change["name"] == "step" and change["new"] == 0 and self._session.gallery_mode is None:
            self._session.scrub_index = None  # a new run (or a reset) shows the live image again (a gallery keeps it)
        steps = self._session.scrub_steps()
        if steps != list(self.snapshot_steps):
            self.snapshot_steps = steps

    def _redraw_on_view(self, change: dict[str, Any]) -> None:
        """Redraw the accentuation in the new view when no frame is coming (after Stop, or while scrubbed)."""
        session = self._session
        if self._reverting or self._invalid("view", change["new"]):
            return
        if self.running and session.scrub_index is None:
            return  # the next frame comes in the new view
        image = session.shown(self.view)
        if image is None or not self._ready:
            return
        png = to_png_bytes(image)
        if session.scrub_index is None:
            self.accent_png = png
        self.send({"type": "image", "tile": "accent", "index": session.scrub_index}, [png])

    def _forget_auto_lambda(self, change: dict[str, Any]) -> None:
        if self._auto_lam_layer is not None and change["new"] != self._auto_lam_layer and not self._reverting:
            cached = cached_lambda(self._model, change["new"])
            self.lam_recommended = min(max(cached, self.lam_min), self.lam_max) if cached is not None else None
            self._auto_lam_layer = change["new"] if cached is not None else self._auto_lam_layer
