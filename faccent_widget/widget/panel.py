"""``FaccentWidget``: one anywidget panel with seed, Grad-CAM, collective mask and live accentuation.

The browser drives the loop (see ``docs/widget-protocol.md``): it asks for a chunk of steps (its
``budget_ms`` is an upper bound; the device policy sets the length: 200 ms on CPUs, 60 ms on GPUs),
Python runs them and answers with one frame (JPEG bytes in a message buffer), the browser paints it and
asks again. No threads, so it behaves the same in JupyterLab, Notebook 7, VS Code and Colab, and the
kernel stays free between chunks. ``run()`` does the same from Python, headless.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anywidget
import numpy as np
import torch
import traitlets
from torch import nn

from ..core.compositing import panel
from ..core.config import (
    DEFAULT_LAMBDA,
    LAMBDA_MAX,
    LAMBDA_SLIDER,
    PRESETS,
    EngineConfig,
    check_int,
    check_lambda,
    check_real,
    check_setting,
    resolve_config,
)
from ..core.device_policy import device_policy
from ..core.engine import Accentuation
from ..core.masks import DEFAULT_P1, DEFAULT_P2
from ..core.model import Model, as_model
from ..core.objectives import Channel, Logit, Objective, resolve_objective
from ..images import ImageInput, load_image, resize_image, to_jpeg_bytes, to_png_bytes
from .extras import LambdaCalibrator, cached_lambda, decode_image, gif_bytes
from .session import VIEWS, Frame, Session

__all__ = ["FaccentWidget"]


def _asset(name: str) -> Path:
    here = Path(__file__).resolve().parent.parent
    packaged = here / "static" / name
    return packaged if packaged.exists() else here.parent / "js" / name


class FaccentWidget(anywidget.AnyWidget):
    """Interactive feature accentuation of one image.

    Args:
        model: a :class:`~faccent_widget.Model` or a bare ``nn.Module`` (wrapped automatically).
        img: anything :func:`~faccent_widget.load_image` accepts.
        labels: class names for a bare module.
        true_label: the image's true class (index or label) — enables the triage view.
        reference: images for collective mask normalisation (default: the bundled sample images).
        preset: a name from ``fw.PRESETS`` ("preview", "gpu", "paper"; default by device).
        device: run on this device (a private copy of the model if it lives elsewhere).
        **engine_overrides: any :func:`~faccent_widget.accentuate` setting (``n_crops``, ``lr``, …).
    """

    _esm = _asset("widget.js")
    _css = _asset("widget.css")

    top: traitlets.List[Any] = traitlets.List([]).tag(sync=True)
    inhibited: traitlets.List[Any] = traitlets.List([]).tag(sync=True)
    target = traitlets.Dict({}).tag(sync=True)
    lam = traitlets.Float(DEFAULT_LAMBDA).tag(sync=True)
    lam_min = traitlets.Float(LAMBDA_SLIDER[0]).tag(sync=True)
    lam_max = traitlets.Float(LAMBDA_SLIDER[1]).tag(sync=True)
    lam_recommended = traitlets.Float(None, allow_none=True).tag(sync=True)
    reg_layer = traitlets.Unicode("").tag(sync=True)
    reg_layers: traitlets.List[Any] = traitlets.List([]).tag(sync=True)
    default_reg_layer = traitlets.Unicode("").tag(sync=True)
    latent_layers: traitlets.List[Any] = traitlets.List([]).tag(sync=True)
    preset = traitlets.Unicode("preview").tag(sync=True)
    presets = traitlets.List(list(PRESETS)).tag(sync=True)
    steps = traitlets.Int(40).tag(sync=True)
    p1 = traitlets.Float(DEFAULT_P1).tag(sync=True)
    p2 = traitlets.Float(DEFAULT_P2).tag(sync=True)
    view = traitlets.Unicode("masked").tag(sync=True)
    seed_png = traitlets.Bytes(b"").tag(sync=True)
    gradcam_png = traitlets.Bytes(b"").tag(sync=True)
    mask_png = traitlets.Bytes(b"").tag(sync=True)
    accent_png = traitlets.Bytes(b"").tag(sync=True)
    running = traitlets.Bool(False).tag(sync=True)
    step = traitlets.Int(0).tag(sync=True)
    seed_prob = traitlets.Float(None, allow_none=True).tag(sync=True)
    prob = traitlets.Float(None, allow_none=True).tag(sync=True)
    status = traitlets.Unicode("").tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)
    triage = traitlets.Unicode("").tag(sync=True)
    device = traitlets.Unicode("cpu").tag(sync=True)
    snapshot_steps: traitlets.List[Any] = traitlets.List([]).tag(sync=True)

    _reverting = False
    _setting_target = False

    #: Traits the browser may set (the controls); the others are the kernel's to set (see ``set_state``).
    BROWSER_SETTABLE = ("lam", "reg_layer", "preset", "steps", "p1", "p2", "view", "target")

    #: compute the recommended λ mark in chunks when the browser asks (``calibrate`` messages)
    auto_lambda = True
    _calibrator: LambdaCalibrator | None = None
    _auto_lam_layer: str | None = None
    _single_run: Any = None
    _scrub_index: int | None = None
    _last_buffers: list[bytes] = []

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
        **engine_overrides: Any,
    ) -> None:
        adapter = as_model(model, labels=labels, device=device)
        lam_given = engine_overrides.pop("lam", None)
        lam = DEFAULT_LAMBDA if lam_given is None else check_lambda(lam_given)
        config = resolve_config(preset, adapter.device, **engine_overrides)  # bad settings fail here, not later
        reg_layer = adapter.check_reg_layer(config.reg_layer)
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
        self._mask = torch.ones(1, 1)
        self._ready = False
        self._gallery_mode: str | None = None
        self.result: Accentuation | None = None
        self.gallery: list[Accentuation] = []
        self.true_index = adapter.class_index(true_label) if true_label is not None else None
        self._set_target_trait()
        self.triage = self._triage_text()
        self.seed_prob = self._seed_prob()
        self.status = f"predicted {top[0]['label']} ({top[0]['prob']:.2f})"
        self.on_msg(self._on_msg)

    # ------------------------------------------------------------------ messages from the browser
    def _on_msg(self, _widget: Any, content: dict[str, Any], buffers: Sequence[bytes]) -> None:
        kind = content.get("type") if isinstance(content, dict) else None
        handler = {
            "ready": self._handle_ready,
            "start": self._handle_start,
            "chunk": self._handle_chunk,
            "stop": self._handle_stop,
            "reset": self._handle_reset,
            "set_target": self._handle_set_target,
            "set_latent": self._handle_set_latent,
            "search": self._handle_search,
            "gallery": self._handle_gallery,
            "download": self._handle_download,
            "scrub": self._handle_scrub,
            "calibrate": self._handle_calibrate,
            "load_image": self._handle_load_image,
            "export_gif": self._handle_export_gif,
        }.get(str(kind))
        if handler is None:
            self._fail(f"unknown message type {kind!r}")
            return
        self._last_buffers = [bytes(b) for b in (buffers or [])]
        try:
            handler(content)
        except Exception as exc:  # shown in the panel; the widget stays usable
            self.running = False
            self._fail(f"{type(exc).__name__}: {exc}")

    def _fail(self, message: str) -> None:
        self.error = message
        self.status = "error: " + message
        self.send({"type": "error", "message": message})

    def _handle_ready(self, _msg: dict[str, Any]) -> None:
        self._ready = True
        self.seed_png = to_png_bytes(self._session.display_seed)
        if not self.accent_png:
            self.accent_png = self.seed_png
        self.status = "computing Grad-CAM and the collective mask…"
        self._refresh_tiles()
        self.status = (
            f"predicted {self.top[0]['label']} ({self.top[0]['prob']:.2f}) — pick a target and press Accentuate"
        )

    def _handle_start(self, _msg: dict[str, Any]) -> None:
        self.start()

    def _handle_chunk(self, msg: dict[str, Any]) -> None:
        requested = check_real(msg.get("budget_ms", 1000 * self._chunk_budget_s), "budget_ms", 0.0) / 1000.0
        frame = self.advance(max(0.02, min(requested, self._chunk_budget_s, 5.0)))
        if frame is None:
            self.send({"type": "frame", "step": self.step, "steps": self.steps, "done": True})
            return
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
            "gallery": self._gallery_mode is not None,
        }
        image = to_png_bytes(frame.image) if frame.done else to_jpeg_bytes(frame.image, quality=85)
        self.send(payload, [image])
        if frame.done and self._gallery_mode is not None:
            self._send_gallery()

    def _handle_stop(self, _msg: dict[str, Any]) -> None:
        self.stop()

    def _handle_reset(self, _msg: dict[str, Any]) -> None:
        self.reset()

    def _handle_set_target(self, msg: dict[str, Any]) -> None:
        self.set_target(check_int(msg.get("index"), "index", 0))

    def _handle_set_latent(self, msg: dict[str, Any]) -> None:
        layer, channel = msg.get("layer"), msg.get("channel")
        if not isinstance(layer, str):
            raise TypeError(f"layer must be a layer name (a string), got {layer!r}")
        self.set_target(f"{layer}:{check_int(channel, 'channel', 0)}")

    def _handle_search(self, msg: dict[str, Any]) -> None:
        query = msg.get("query", "")
        if not isinstance(query, str):
            raise TypeError(f"query must be a string, got {query!r}")
        self.send({"type": "search_results", "query": query, "items": self._session.search(query)})

    def _handle_gallery(self, msg: dict[str, Any]) -> None:
        mode = msg.get("mode", "topk")
        if not isinstance(mode, str):
            raise TypeError(f"mode must be 'topk', 'inhibited' or 'triage', got {mode!r}")
        self.start_gallery(mode)

    def _handle_download(self, _msg: dict[str, Any]) -> None:
        self.send({"type": "download", "filename": "faccent_panel.png"}, [self.panel_png()])

    # ------------------------------------------------------------------ public Python API
    def set_target(self, target: int | str | Objective) -> None:
        """Pick the target (class index/label, ``"layer:unit"`` or an objective); restarts a running run.

        A refused target (unknown class, layer or channel) raises and leaves the widget as it was."""
        objective = resolve_objective(self._model, target)
        tiles = self._tiles(objective) if self._ready else None  # may fail: nothing is changed yet
        self._objective = objective
        self._set_target_trait()
        self.seed_prob = self._seed_prob()
        self.prob = None
        if tiles is not None:
            self._show_tiles(*tiles)
        if self.running:
            self.start()

    def start(self) -> None:
        """Start a fresh run for the current target and settings (replacing any run in progress)."""
        self._gallery_mode = None
        try:
            self._session.start([self._objective], lam=self.lam, config=self.engine_config)
        except BaseException:
            self.running = False
            raise
        self.result = None
        self.error = ""
        self.step = 0
        self.running = True
        self.status = f"accentuating {self.target.get('label', '')}…"

    def start_gallery(self, mode: str) -> None:
        """Accentuate several targets in one batch: "topk", "inhibited" or "triage" (predicted vs true)."""
        if mode == "topk":
            targets = [t["index"] for t in self.top]
        elif mode == "inhibited":
            targets = [t["index"] for t in self.inhibited]
        elif mode == "triage":
            if self.true_index is None:
                raise ValueError("no true_label was given to the widget, so there is nothing to compare")
            targets = [self.top[0]["index"], self.true_index]
        else:
            raise ValueError(f"unknown gallery mode {mode!r}; use 'topk', 'inhibited' or 'triage'")
        try:
            self._session.start(targets, lam=self.lam, config=self.engine_config)
        except BaseException:
            self.running = False
            raise
        self._gallery_mode = mode
        self.gallery = []
        self.error = ""
        self.step = 0
        self.running = True
        self.status = f"accentuating {len(targets)} classes ({mode})…"

    def stop(self) -> None:
        """Stop asking for steps; the current image stays."""
        self.running = False
        self.status = f"stopped at step {self.step}"

    def reset(self) -> None:
        """Discard the run and show the seed again."""
        self._session.run = None
        self.running = False
        self.step = 0
        self.prob = None
        self.result = None
        self.accent_png = to_png_bytes(self._session.display_seed)
        self.status = "reset"

    def advance(self, budget_s: float | None = None) -> Frame | None:
        """Run about ``budget_s`` seconds of steps (default: the device's chunk budget) and return the
        frame to show (None if idle)."""
        session = self._session
        if not self.running or session.run is None:
            return None
        states = session.advance(self._chunk_budget_s if budget_s is None else budget_s)
        run = session.run
        last = states[-1] if states else None
        done = run.done
        self.step = run.step_count
        if self._gallery_mode is not None:
            image = self._gallery_strip(last.image if last is not None else run.current_image())
            prob = None
        else:
            accent = (last.image if last is not None else run.current_image())[0].clamp(0, 1).cpu()
            image = session.view(accent, self._mask, self.view)
            prob = session.current_prob() if done or run.step_count % 5 == 0 or len(states) > 1 else self.prob
            self.prob = prob
        history = run.history
        # one device→host copy per chunk for the whole sparkline (item 0), not one per step
        curves = torch.stack([torch.stack((o[0], d[0])) for o, d in history]).tolist() if history else []
        objective = [c[0] for c in curves]
        distance = [c[1] for c in curves]
        if done:
            self.running = False
            if self._gallery_mode is None:
                self.result = session.results[0]
                self.prob = self.result.score.prob
                self.accent_png = to_png_bytes(image)
                self.status = self._done_text()
            else:
                self.gallery = list(session.results)
                self.status = f"gallery done: {len(self.gallery)} accentuations"
        return Frame(
            self.step,
            run.config.steps,
            image,
            objective[-1] if objective else math.nan,
            distance[-1] if distance else math.nan,
            self.prob,
            done,
            objective,
            distance,
        )

    def run(self, steps: int | None = None) -> Accentuation:
        """Run an accentuation to completion from Python (scripts, CI); returns ``self.result``.

        On an error (or Ctrl-C) the run stops (``running`` False), ``status``/``error`` say why, and the
        exception is raised; the widget stays usable."""
        if steps is not None:
            self.steps = check_setting("steps", steps)
        try:
            self.start()
            while self.running:
                self.advance(1.0)
        except KeyboardInterrupt:
            self.running = False
            self.status = f"interrupted at step {self.step}"
            raise
        except Exception as exc:
            self.running = False
            self.error = f"{type(exc).__name__}: {exc}"
            self.status = "error: " + self.error
            raise
        if self.result is None:  # pragma: no cover - a run always ends with a result
            raise RuntimeError("the run ended without a result")
        return self.result

    def panel_png(self) -> bytes:
        """PNG of the panel: seed | Grad-CAM | mask | accentuation."""
        heat, mask = self._session.heat_and_mask(self._objective, self.p1, self.p2)
        accent = self.result.image if self.result is not None else self._session.display_seed
        label = self.target.get("label", "")
        strip = panel(
            [self._session.display_seed, heat, mask, self._session.view(accent, mask, self.view)],
            ["seed", f"Grad-CAM: {label}", "mask (collective)", f"accentuation ({self.view})"],
            height=256,
        )
        return to_png_bytes(strip)

    # ------------------------------------------------------------------ trait validation
    def set_state(self, sync_data: dict[str, Any]) -> None:
        """State from the browser. Values of the wrong type (``lam: null``, ``steps: 3.5``) and traits
        that are the kernel's to set (``top``, ``running``, the images, …) are refused: ``error`` says
        why and the kernel's value is sent back, so browser and kernel stay in sync. The rest goes
        through the usual validation (``_on_setting``, ``_on_target``)."""
        accepted: dict[str, Any] = {}
        refused: dict[str, str] = {}
        own = FaccentWidget.class_own_traits(sync=True)
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

    @traitlets.observe(
        "lam", "reg_layer", "preset", "steps", "p1", "p2", "view", "lam_min", "lam_max", "lam_recommended"
    )
    def _on_setting(self, change: dict[str, Any]) -> None:
        if not hasattr(self, "_session") or self._reverting:
            return  # constructor defaults, or our own revert of a refused value
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
                    self.accent_png = to_png_bytes(self._session.view(self.result.image, self._mask, new))
            elif name in ("lam", "reg_layer", "preset", "steps") and self.running:
                self.start()  # λ, layer, preset or steps changed mid-run: restart cleanly
        except Exception as exc:  # nothing half-applied: the old value and configuration come back
            self.engine_config = previous
            self._revert(name, old)
            self.running = False
            self._fail(f"{type(exc).__name__}: {exc}")

    @traitlets.observe("target")
    def _on_target(self, change: dict[str, Any]) -> None:
        """``target`` set from outside (the browser, or ``w.target = …``): applied through
        :meth:`set_target` when it names a class index or a layer channel, else refused."""
        if not hasattr(self, "_session") or self._setting_target:
            return
        try:
            self.set_target(_target_from_trait(change["new"]))
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

    def _invalid(self, name: str, value: Any) -> str:
        """'' if ``value`` is acceptable for trait ``name``, else the message saying why not (the engine
        settings are checked by :mod:`faccent_widget.core.config`, the one place they are defined)."""
        try:
            if name in ("lam", "lam_recommended"):
                if value is not None or name == "lam":
                    check_lambda(value)
            elif name in ("lam_min", "lam_max"):
                lo, hi = (value, self.lam_max) if name == "lam_min" else (self.lam_min, value)
                check_real(value, name, 0.0, LAMBDA_MAX, lo_open=True)  # a log-scale slider: > 0
                if not lo < hi:
                    return f"the λ slider needs lam_min < lam_max, got lam_min={lo!r}, lam_max={hi!r}"
            elif name == "reg_layer":
                check_setting(name, value)
                if value not in self._model.layer_names or not self._model.layout(value).is_activation:
                    return f"unknown regularisation layer {value!r}; pick one from the list"
            elif name in ("preset", "steps"):
                check_setting(name, value)
            elif name in ("p1", "p2"):
                check_real(value, name, 0.0, 100.0)
                p1, p2 = (value, self.p2) if name == "p1" else (self.p1, value)
                if not p1 < p2:
                    return f"mask percentiles need 0 ≤ p1 < p2 ≤ 100, got p1={p1}, p2={p2}"
            elif name == "view" and value not in VIEWS:
                return f"view must be one of {', '.join(VIEWS)}, got {value!r}"
        except (TypeError, ValueError) as exc:
            return str(exc)
        return ""

    # ------------------------------------------------------------------ helpers
    def _refresh_tiles(self) -> None:
        if not self._ready:
            return
        self._show_tiles(*self._tiles(self._objective))

    def _tiles(self, objective: Objective) -> tuple[torch.Tensor, torch.Tensor]:
        return self._session.heat_and_mask(objective, self.p1, self.p2)

    def _show_tiles(self, heat: torch.Tensor, mask: torch.Tensor) -> None:
        self._mask = mask
        self.gradcam_png = to_png_bytes(heat)
        self.mask_png = to_png_bytes(mask)

    def _set_target_trait(self) -> None:
        obj = self._objective
        if isinstance(obj, Logit):
            value = {"kind": "class", "index": obj.index, "label": self._model.labels[obj.index]}
        elif isinstance(obj, Channel):
            value = {"kind": "latent", "layer": obj.layer, "channel": obj.unit, "label": obj.description}
        else:
            value = {"kind": "latent", "label": obj.description}
        self._setting_target = True
        try:
            self.target = value
        finally:
            self._setting_target = False

    def _seed_prob(self) -> float | None:
        if isinstance(self._objective, Logit):
            return float(self._session.probs[self._objective.index])
        return None

    def _triage_text(self) -> str:
        if self.true_index is None:
            return ""
        pred = self.top[0]
        if pred["index"] == self.true_index:
            return ""
        true_p = float(self._session.probs[self.true_index])
        return (
            f"predicted {pred['label']} ({pred['prob']:.2f}) — "
            f"true {self._model.labels[self.true_index]} ({true_p:.2f})"
        )

    def _done_text(self) -> str:
        r = self.result
        if r is None:
            return ""
        if r.seed_score.prob is not None and r.score.prob is not None:
            return f"done: {self.target.get('label', '')} {r.seed_score.prob:.3f} → {r.score.prob:.3f}"
        return f"done: {r.target} {r.seed_score.value:.2f} → {r.score.value:.2f}"

    def _gallery_strip(self, images: torch.Tensor) -> torch.Tensor:
        strip = panel(list(images.clamp(0, 1).cpu()), None, height=160)
        return torch.from_numpy(np.array(strip)).permute(2, 0, 1).float() / 255.0

    def _send_gallery(self) -> None:
        items, accents, masks = [], [], []
        for res, obj in zip(self.gallery, self._session.gallery_targets):
            _, mask = self._session.heat_and_mask(obj, self.p1, self.p2)
            label = self._model.labels[obj.index] if isinstance(obj, Logit) else obj.description
            items.append(
                {
                    "label": label,
                    "index": getattr(obj, "index", None),
                    "prob_before": res.seed_score.prob,
                    "prob_after": res.score.prob,
                }
            )
            accents.append(to_png_bytes(self._session.view(res.image, mask, "masked")))
            masks.append(to_png_bytes(mask))
        self.send({"type": "gallery", "mode": self._gallery_mode, "items": items}, accents + masks)

    # ------------------------------------------------------------------ scrub, redraw, λ mark, own photo, GIF
    def _handle_scrub(self, msg: dict[str, Any]) -> None:
        steps = list(self.snapshot_steps)
        if not steps:
            raise ValueError("there are no snapshots to scrub through yet: press Accentuate first")
        index = max(0, min(int(msg["index"]), len(steps) - 1))
        # the right end is "the latest image": the current candidate (after a Stop it can be newer than the
        # last snapshot), and a later view change redraws that, like an unscrubbed panel
        self._scrub_index = None if index == len(steps) - 1 else index
        current = self._current_accent() if self._scrub_index is None else None
        image = self._session.view(current, self._mask, self.view) if current is not None else self.snapshot_view(index)
        assert image is not None
        self.send({"type": "scrub", "index": index, "step": steps[index], "count": len(steps)}, [to_png_bytes(image)])

    def _handle_calibrate(self, msg: dict[str, Any]) -> None:
        try:
            done = self.calibrate_step(float(msg.get("budget_ms", 1000 * self._chunk_budget_s)) / 1000.0)
        except Exception as exc:  # the λ mark is a convenience: its failure is no panel error
            self._calibrator = None
            self.send({"type": "calibration", "done": True, "value": None, "error": f"{type(exc).__name__}: {exc}"})
            return
        progress = 1.0 if done or self._calibrator is None else self._calibrator.progress
        self.send({"type": "calibration", "done": done, "progress": progress, "value": self.lam_recommended})

    def _handle_load_image(self, msg: dict[str, Any]) -> None:
        if not self._last_buffers:
            raise ValueError("no file data arrived")
        name = str(msg.get("name", "") or "the file")
        try:
            self.set_image(self._last_buffers[0])
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}; the previous image stays") from None
        self.status = f"new image {name}: predicted {self.top[0]['label']} ({self.top[0]['prob']:.2f})"

    def _handle_export_gif(self, _msg: dict[str, Any]) -> None:
        self.send({"type": "download", "filename": f"faccent_{self.view}.gif"}, [self.gif()])

    @traitlets.observe("step", "running")
    def _sync_snapshots(self, change: dict[str, Any]) -> None:
        if not hasattr(self, "_session"):
            return
        if change["name"] == "step" and change["new"] == 0:
            self._scrub_index = None  # a new run (or a reset) shows the live image again
        steps = self._scrub_source()[0]
        if steps != list(self.snapshot_steps):
            self.snapshot_steps = steps

    @traitlets.observe("view")
    def _redraw_on_view(self, change: dict[str, Any]) -> None:
        """Redraw the accentuation in the new view when no frame is coming (after Stop, or while scrubbed)."""
        if not hasattr(self, "_session") or self._reverting or self._invalid("view", change["new"]):
            return
        if self.running and self._scrub_index is None:
            return  # the next frame comes in the new view
        if self._scrub_index is not None:
            image = self.snapshot_view(self._scrub_index)
        else:
            current = self._current_accent()
            image = self._session.view(current, self._mask, self.view) if current is not None else None
        if image is None or not self._ready:
            return
        png = to_png_bytes(image)
        if self._scrub_index is None:
            self.accent_png = png
        self.send({"type": "image", "tile": "accent", "index": self._scrub_index}, [png])

    def _live_single_run(self) -> Any:
        """The single (non-gallery) run whose snapshots the panel scrubs: a gallery run keeps the last one."""
        run = self._session.run
        if run is None:
            self._single_run = None
        elif not self._session.gallery_targets:
            self._single_run = run
        return self._single_run

    def _scrub_source(self) -> tuple[list[int], Any]:
        """(steps of the scrub positions, position → (3, H, W) image); position 0 is the seed."""
        run = self._live_single_run()
        if run is None:  # reset, or a new image: nothing to scrub (even while ``result`` is being cleared)
            return [], None
        if self.result is not None:
            snaps, steps = self.result.snapshots, list(self.result.snapshot_steps)
            hw = tuple(self.result.image.shape[-2:])

            def get(k: int) -> torch.Tensor:
                return snaps[k - 1].float() / 255.0
        else:
            steps, hw = list(run.snapshot_steps), (run.h, run.w)

            def get(k: int) -> torch.Tensor:
                return run.snapshots[k - 1][0].float().cpu() / 255.0

        seed = resize_image(self._session.seed, (int(hw[0]), int(hw[1])))
        return [0, *steps], (lambda k: seed if k == 0 else get(k))

    def _current_accent(self) -> torch.Tensor | None:
        if self.result is not None:
            return self.result.image
        run = self._live_single_run()
        return run.current_image()[0].cpu() if run is not None else None

    def snapshot_view(self, index: int, view: str | None = None) -> torch.Tensor | None:
        """Scrub position ``index`` (0 = the seed, then the run's snapshots) in ``view`` (default: the
        current view), or None when there is no run."""
        steps, get = self._scrub_source()
        if not steps:
            return None
        k = max(0, min(int(index), len(steps) - 1))
        return self._session.view(get(k), self._mask, view or self.view)

    def calibrate_step(self, budget_s: float) -> bool:
        """One chunk of the automatic λ calibration (small budget, cached per model and layer); True when
        ``lam_recommended`` is final. A λ mark set by the user is kept."""
        layer = self.reg_layer
        if not self.auto_lambda or (self.lam_recommended is not None and self._auto_lam_layer in (None, layer)):
            return True
        cached = cached_lambda(self._model, layer)
        if cached is None:
            if self._calibrator is None or self._calibrator.reg_layer != layer:
                self._calibrator = LambdaCalibrator(self._model, layer)
            if not self._calibrator.advance(max(0.02, min(budget_s, self._chunk_budget_s))):
                return False
            cached = self._calibrator.recommended
            self._calibrator = None
        assert cached is not None
        self._auto_lam_layer = layer
        self.lam_recommended = min(max(cached, self.lam_min), self.lam_max)
        return True

    @traitlets.observe("reg_layer")
    def _forget_auto_lambda(self, change: dict[str, Any]) -> None:
        if self._auto_lam_layer is not None and change["new"] != self._auto_lam_layer and not self._reverting:
            cached = cached_lambda(self._model, change["new"])
            self.lam_recommended = min(max(cached, self.lam_min), self.lam_max) if cached is not None else None
            self._auto_lam_layer = change["new"] if cached is not None else self._auto_lam_layer

    def set_image(self, img: ImageInput | bytes) -> None:
        """Swap the seed (anything ``load_image`` accepts, or an image file's bytes): new top-5, tiles and
        target, the run is discarded. A bad image raises and the current seed stays."""
        seed = decode_image(img) if isinstance(img, (bytes, bytearray, memoryview)) else load_image(img)
        old = self._session
        session = Session(self._model, seed, reference=old._reference_inputs)
        session._reference = old._reference  # same reference set (its maps are cached with the seed's, per target)
        top = session.top(5)
        inhibited = session.inhibited(5)
        objective = resolve_objective(self._model, top[0]["index"])
        # nothing above touched the widget: from here on the new seed replaces the old one
        self.running = False
        self._session = session
        self._gallery_mode = None
        self._single_run = None
        self._scrub_index = None
        self.result = None
        self.gallery = []
        self.true_index = None
        self._objective = objective
        with self.hold_sync():
            self.top, self.inhibited = top, inhibited
            self._set_target_trait()
            self.seed_prob = self._seed_prob()
            self.prob = None
            self.step = 0
            self.snapshot_steps = []
            self.triage = ""
            self.error = ""
            if self._ready:
                self.seed_png = to_png_bytes(session.display_seed)
                self.accent_png = self.seed_png
        self._refresh_tiles()
        self.send({"type": "image", "tile": "accent", "index": None}, [to_png_bytes(session.display_seed)])
        self.status = f"new image: predicted {top[0]['label']} ({top[0]['prob']:.2f})"

    @property
    def image(self) -> torch.Tensor:
        """The seed (3, H, W); assigning anything ``load_image`` accepts (or file bytes) swaps it."""
        return self._session.seed

    @image.setter
    def image(self, value: ImageInput | bytes) -> None:
        self.set_image(value)

    def gif(self, view: str | None = None) -> bytes:
        """Animated GIF of the run's snapshots, seed → accentuation, in ``view`` (default: the current one)."""
        problem = self._invalid("view", view) if view is not None else ""
        if problem:
            raise ValueError(problem)
        steps, _ = self._scrub_source()
        if len(steps) < 2:
            raise ValueError("there is nothing to animate yet: run an accentuation first")
        frames = [self.snapshot_view(k, view) for k in range(len(steps))]
        return gif_bytes([f for f in frames if f is not None])

    def save(self, path: str | Path, view: str | None = None) -> Path:
        """Write ``x.png`` (the panel: seed | Grad-CAM | mask | accentuation) or ``x.gif`` (the animation)."""
        out = Path(path)
        suffix = out.suffix.lower()
        if suffix == ".gif":
            data = self.gif(view)
        elif suffix == ".png":
            data = self.panel_png()
        else:
            raise ValueError(
                f"save() writes .png (the panel) or .gif (the animation), not {out.suffix or 'no suffix'!r}"
            )
        out.write_bytes(data)
        return out


def _target_from_trait(value: Any) -> int | str:
    """A ``target`` trait value → what :meth:`FaccentWidget.set_target` takes (class index or
    ``"layer:channel"``), or a clear error."""
    if not isinstance(value, dict):
        raise TypeError(f"target must be a dict like {{'kind': 'class', 'index': 3}}, got {type(value).__name__}")
    kind = value.get("kind")
    if kind == "class":
        return check_int(value.get("index"), "target index", 0)
    if kind == "latent" and "layer" in value:
        layer = value.get("layer")
        if not isinstance(layer, str):
            raise TypeError(f"target layer must be a layer name, got {layer!r}")
        return f"{layer}:{check_int(value.get('channel'), 'target channel', 0)}"
    raise ValueError("target must be {'kind': 'class', 'index': i} or {'kind': 'latent', 'layer': name, 'channel': c}")
