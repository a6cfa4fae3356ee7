"""What a :class:`~faccent_widget.FaccentWidget` does, from Python or from its buttons: pick a target, start,
advance, stop and reset a run, the gallery batch, swap the photo, the λ mark, and the exports.

The state lives in the :class:`~faccent_widget.widget.session.Session`; this class keeps the traits in
step with it. The message routing is :mod:`faccent_widget.widget.panel`'s.
"""

from __future__ import annotations

import warnings
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch

from ..core.config import EngineConfig, check_setting
from ..core.derived_objectives import suppress
from ..core.engine import Accentuation
from ..core.model import Model
from ..core.objectives import Logit, Objective, resolve_objective
from ..images import ImageInput, load_image, to_png_bytes
from . import exports
from .extras import LambdaCalibrator, cached_lambda, decode_image
from .inputs import GALLERY_MODES, check_image_size, invalid_setting, plain_error, target_trait
from .judge import judge_numbers
from .session import Frame, Session
from .threads import browser_threads, limited_threads
from .traits import PanelTraits

__all__ = ["Playback"]

#: the requests that start a run, and those of a run already started (see ``Playback._browser_work``)
_NEW_RUN = ("start", "gallery")
_RUN_GOES_ON = ("chunk", "continue", "stop")


class Playback(PanelTraits):
    """The widget's actions on its :class:`Session` (the base of :class:`~faccent_widget.FaccentWidget`)."""

    #: compute the recommended λ mark in chunks when the browser asks (``calibrate`` messages)
    auto_lambda = True

    #: CPU threads for the work the browser asks for (chunks of steps, tiles, λ mark, exports): "auto"
    #: takes every core while the rest of the machine is idle (1-minute load average below half a core,
    #: this kernel's own share taken out), else leaves one core to the browser and the notebook server
    #: (on a busy 2-core machine: 1 thread); decided when a run starts and kept for the run (see
    #: :mod:`~faccent_widget.widget.threads`). An int sets the count, None keeps torch's own setting.
    browser_threads: int | str | None = "auto"

    #: the "auto" count of the last run started (its chunks, Stop and Continue use it, so its image does
    #: not depend on when the load moved); other requests decide for themselves
    _auto_threads: int | None = None

    #: what the stats row and status said for the single run when a gallery batch started (``step``,
    #: ``prob``, ``shown``, ``status``): put back when the batch finishes or is stopped
    _main_stats: dict[str, Any] | None = None

    # set by FaccentWidget.__init__
    _model: Model
    _session: Session
    _objective: Objective
    _ready: bool
    _chunk_budget_s: float
    _calibrator: LambdaCalibrator | None
    _auto_lam_layer: str | None
    _setting_target: bool
    _judge: Model | None
    _last_run: tuple[Any, ...] | None
    engine_config: EngineConfig
    true_index: int | None

    @property
    def result(self) -> Accentuation | None:
        """The finished single run's accentuation (None while it runs, after a reset or a new image)."""
        return self._session.result

    @property
    def gallery(self) -> list[Accentuation]:
        """The last finished gallery batch (one accentuation per target)."""
        return self._session.gallery

    def set_target(self, target: int | str | Objective) -> None:
        """Pick the target (class index/label, ``"layer:unit"`` or an objective); restarts a running run.

        A refused target (unknown class, layer or channel) raises and leaves the widget as it was."""
        objective = resolve_objective(self._model, target)
        tiles = self._tiles(objective) if self._ready else None  # may fail: nothing is changed yet
        self._objective = objective
        self._set_target_trait()
        self.seed_prob = self._seed_prob()
        self.prob = None
        self.shown = {}  # the last run's numbers were for the previous target
        if tiles is not None:
            self._show_tiles(*tiles)
        self._update_judge(seed_only=True)
        if self.running:
            self.start()
            return
        p = f": p {self.seed_prob:.3f} on the seed" if self.seed_prob is not None else ""
        self.status = f"target {self.target.get('label', '')}{p} — press Accentuate"
        self._check_settings()

    def start(self) -> None:
        """Start a fresh run for the current target and settings (replacing any run in progress)."""
        verb = "suppressing" if self.away else "accentuating"
        self._launch([self._objective], f"{verb} {self.target.get('label', '')}…")

    def _launch(self, targets: list[Any], status: str, gallery_mode: str | None = None) -> None:
        """Start the session's run on ``targets`` (suppressed when ``away``); nothing runs after an error."""
        objectives = [suppress(t) for t in targets] if self.away else list(targets)
        session = self._session
        main = self._main_stats
        if gallery_mode is None:
            main = None
        elif not (self.running and session.gallery_mode is not None):  # a batch replacing a batch keeps it
            main = self._main_run_stats()
        try:
            session.start(objectives, lam=self.lam, config=self.engine_config, gallery_mode=gallery_mode)
        except BaseException:
            self.running = False
            raise
        self._main_stats = main
        self.error = ""
        self.step = 0
        self.prob = None
        self.shown = {}
        self.resumable = False
        self.rerun_hint = ""
        self._last_run = self._run_settings() if gallery_mode is None else self._last_run
        self.running = True
        self.status = status

    def start_gallery(self, mode: str) -> None:
        """Accentuate several targets in one batch: "topk", "inhibited" or "predicted_vs_true" (the
        predicted class next to the true one; needs ``true_label``). "triage" is a deprecated name of it."""
        if mode == "triage":
            warnings.warn(
                "gallery mode 'triage' is deprecated; use 'predicted_vs_true'", DeprecationWarning, stacklevel=2
            )
            mode = "predicted_vs_true"
        if mode == "topk":
            targets = [t["index"] for t in self.top]
        elif mode == "inhibited":
            targets = [t["index"] for t in self.inhibited]
        elif mode == "predicted_vs_true":
            if self.true_index is None:
                raise ValueError("no true_label was given to the widget, so there is nothing to compare")
            targets = [self.top[0]["index"], self.true_index]
        else:
            raise ValueError(f"unknown gallery mode {mode!r}; use {', '.join(map(repr, GALLERY_MODES))}")
        self._launch(list(targets), f"accentuating {len(targets)} classes ({mode})…", gallery_mode=mode)

    def stop(self) -> None:
        """Stop asking for steps; the current image stays (and its numbers are shown). A stopped single
        run can go on with :meth:`resume` (the Continue button) while the settings stay the same."""
        was_running = self.running
        self.running = False
        session = self._session
        if session.gallery_mode is None and session.single_run is not None and session.result is None:
            self._show_numbers(None)
            self.resumable = was_running or self.resumable
            self.status = f"stopped at step {self.step} of {self.steps} — Continue goes on from here"
        elif was_running and session.gallery_mode is not None:
            self._show_main_stats(f"gallery stopped at step {self.step}")
        else:
            self.status = f"stopped at step {self.step}"

    def resume(self) -> None:
        """Go on with the stopped run from the step it stopped at (Continue); a ``ValueError`` when there
        is none to continue (none stopped, finished, or the settings changed since: press Accentuate)."""
        session = self._session
        run = session.single_run
        if run is None or run.done or session.run is not run or session.result is not None:
            raise ValueError("there is no stopped run to continue: press Accentuate to start one")
        if self._last_run != self._run_settings():
            raise ValueError("the settings changed since the run was stopped: press Accentuate to start anew")
        session.scrub_index = None
        self.error = ""
        self.shown = {}
        self.resumable = False
        self.running = True
        self.status = f"continuing from step {run.step_count}…"

    def reset(self) -> None:
        """Discard the run and show the seed again."""
        self._session.reset()
        self.running = False
        self.step = 0
        self.prob = None
        self.shown = {}
        self.resumable = False
        self.rerun_hint = ""
        self._last_run = None
        self._update_judge(seed_only=True)
        self.accent_png = to_png_bytes(self._session.display_seed)
        self.status = "reset"

    def advance(self, budget_s: float | None = None) -> Frame | None:
        """Run about ``budget_s`` seconds of steps (default: the device's chunk budget) and return the
        frame to show (None if idle)."""
        if not self.running:
            return None
        session = self._session
        frame = session.next_frame(self._chunk_budget_s if budget_s is None else budget_s, self.view, self.prob)
        if frame is None:
            return None
        self.step = frame.step
        self.prob = frame.prob
        if frame.done:
            self.running = False
            if session.gallery_mode is None:
                self.accent_png = to_png_bytes(frame.image)
                self._show_numbers(None)
                self.status = self._done_text()
            else:
                self._show_main_stats(f"gallery done: {len(session.gallery)} accentuations")
        return frame

    def _browser_work(self, request: str = "start") -> AbstractContextManager[None]:
        """The thread limit under which a browser ``request`` (a message type) runs (nothing to limit off
        the CPU). With "auto", a new run ("start", "gallery") decides its count and keeps it."""
        if self._model.device.type != "cpu" or self.browser_threads is None:
            return nullcontext()
        threads = self.browser_threads
        if threads == "auto":
            if request in _RUN_GOES_ON and self._auto_threads is not None:
                return limited_threads(self._auto_threads)
            count = browser_threads()
            if request in _NEW_RUN:
                self._auto_threads = count
            return limited_threads(count)
        if isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1:
            return limited_threads(threads)
        raise ValueError(f"browser_threads must be 'auto', a positive int or None, not {threads!r}")

    def run(self, steps: int | None = None) -> Accentuation:
        """Run an accentuation to completion from Python (scripts, CI); returns ``self.result``.

        On an error (or Ctrl-C) the run stops (``running`` False), ``status``/``error`` say why, and the
        exception is raised; the widget stays usable. It runs under the same CPU thread count as a run
        started in the browser (``browser_threads``), so both give the same image."""
        if steps is not None:
            self.steps = check_setting("steps", steps)
        try:
            with self._browser_work():
                self.start()
                while self.running:
                    self.advance(1.0)
        except KeyboardInterrupt:
            self.running = False
            self.status = f"interrupted at step {self.step}"
            raise
        except Exception as exc:
            self.running = False
            self.error = plain_error(exc)
            self.status = f"stopped at step {self.step}: the run failed (see the message above)"
            raise
        if self.result is None:  # pragma: no cover - a run always ends with a result
            raise RuntimeError("the run ended without a result")
        return self.result

    def set_image(self, img: ImageInput | bytes, *, true_label: int | str | None = None) -> None:
        """Swap the seed (anything ``load_image`` accepts, or an image file's bytes; at most 40 Mpx): new
        top-5, tiles and target, the run is discarded. A bad image raises and the current seed stays.

        ``true_label`` is the new image's true class; without it the previous image's true label is
        dropped (a warning and the status line say so)."""
        if isinstance(img, (bytes, bytearray, memoryview)):
            seed = decode_image(img)
        else:
            check_image_size(img)
            seed = load_image(img)
        dropped = self._swap_image(seed, true_label)
        if dropped:
            warnings.warn(dropped.lstrip("; "), UserWarning, stacklevel=2)

    def _swap_image(self, seed: torch.Tensor, true_label: int | str | None) -> str:
        """Show ``seed`` (checked and loaded) instead of the current one; returns the note to add to the
        status when the previous image's true label was dropped ("" otherwise)."""
        true_index = self._model.class_index(true_label) if true_label is not None else None
        session = self._session.with_image(seed)  # the reference set's maps are kept
        top = session.top(5)
        inhibited = session.inhibited(5)
        objective = resolve_objective(self._model, top[0]["index"])
        # nothing above touched the widget: from here on the new seed replaces the old one
        dropped = ""
        if self.true_index is not None and true_index is None:
            dropped = (
                f"; the true label {self._model.labels[self.true_index]!r} was for the previous image and is "
                "dropped: pass set_image(img, true_label=…) to compare predicted and true"
            )
        self.running = False
        self._session = session
        self.true_index = true_index
        self._objective = objective
        with self.hold_sync():
            self.top, self.inhibited = top, inhibited
            self._set_target_trait()
            self.seed_prob = self._seed_prob()
            self.prob = None
            self.step = 0
            self.snapshot_steps = []
            self.shown = {}
            self.resumable = False
            self.rerun_hint = ""
            self._last_run = None
            self.predicted_vs_true = self._predicted_vs_true_text()
            self.error = ""
            if self._ready:
                self.seed_png = to_png_bytes(session.display_seed)
                self.accent_png = self.seed_png
        self._refresh_tiles()
        self._update_judge(seed_only=True)
        self.send({"type": "image", "tile": "accent", "index": None}, [to_png_bytes(session.display_seed)])
        self.status = f"new image: predicted {top[0]['label']} ({top[0]['prob']:.2f}){dropped}"
        return dropped

    def snapshot_view(self, index: int, view: str | None = None) -> torch.Tensor | None:
        """Scrub position ``index`` (0 = the seed, then the run's snapshots) in ``view`` (default: the
        current view), or None when there is no run."""
        return self._session.snapshot(index, view or self.view)

    def panel_png(self) -> bytes:
        """PNG of the panel: seed | Grad-CAM | mask | accentuation (each tile at most 1024 px wide)."""
        label = str(self.target.get("label", ""))
        return exports.panel_png(self._session, self._objective, label, self.p1, self.p2, self.view)

    def gif(self, view: str | None = None) -> bytes:
        """Animated GIF of the run's snapshots, seed → accentuation, in ``view`` (default: the current
        one); at most ``exports.GIF_MAX_FRAMES`` frames, each at most 1024 px wide."""
        problem = self._invalid("view", view) if view is not None else ""
        if problem:
            raise ValueError(problem)
        return exports.gif(self._session, view or self.view)

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
            if cached is None:  # pragma: no cover - a finished calibration has a value or raised
                raise RuntimeError("the λ calibration ended without a value")
        self._auto_lam_layer = layer
        self.lam_recommended = min(max(cached, self.lam_min), self.lam_max)
        return True

    def _invalid(self, name: str, value: Any) -> str:
        current = {"lam_min": self.lam_min, "lam_max": self.lam_max, "p1": self.p1, "p2": self.p2}
        return invalid_setting(name, value, model=self._model, current=current)

    # ------------------------------------------------------------------ numbers, judge, settings
    def _show_numbers(self, index: int | None) -> None:
        """``shown`` := the numbers of scrub position ``index`` (None: the latest image), all at its step;
        the judge's p of that image with them."""
        numbers = self._session.numbers(index)
        self.shown = numbers
        self._update_judge(index=index, seed_only=not numbers)

    def _main_run_stats(self) -> dict[str, Any]:
        """The single run's stats row and status as the panel shows them now; a single run still going
        (about to be replaced by a gallery batch) as if stopped here."""
        session = self._session
        run = session.single_run
        status = self.status if run is not None else ""  # without a run the status was only a prompt
        shown = self.shown
        if self.running and session.gallery_mode is None and run is not None and session.result is None:
            shown = session.numbers(None)
            status = f"stopped at step {run.step_count} of {self.steps}"
        return {"step": self.step, "prob": self.prob, "shown": dict(shown), "status": status}

    def _show_main_stats(self, gallery_status: str) -> None:
        """After a gallery batch (done or stopped): the stats row and status say the single run's numbers
        again, as before the batch (the gallery's own numbers are in its captions)."""
        main, self._main_stats = self._main_stats, None
        if main is None:
            self.status = gallery_status
            return
        with self.hold_sync():
            self.step = main["step"]
            self.prob = main["prob"]
            self.shown = main["shown"]
        self.status = f"{gallery_status} (below); above: {main['status']}" if main["status"] else gallery_status

    def _update_judge(self, *, index: int | None = None, seed_only: bool = False) -> None:
        """``judge`` := the judge model's p(target) of the seed and (unless ``seed_only``) of the shown image."""
        if self._judge is None:
            return
        self.judge = judge_numbers(self._judge, self._session, self._objective, None if seed_only else index)

    def _run_settings(self) -> tuple[Any, ...]:
        """What makes a run: the target, λ, direction and the engine settings (not the view or the mask)."""
        return (self._objective.description, self.lam, self.away, self.engine_config)

    def _check_settings(self) -> None:
        """After a setting or the target changed with no run going: the hint (and no Continue) when they
        differ from the last run's, the status refreshed either way."""
        if self.running or self._last_run is None:
            return
        changed = self._last_run != self._run_settings()
        self.rerun_hint = "settings changed since the last run — press Accentuate" if changed else ""
        session = self._session
        stopped = session.single_run is not None and session.result is None and not session.single_run.done
        self.resumable = stopped and not changed and session.run is session.single_run
        if changed:
            self.status = self.rerun_hint
            self.shown = {}  # the stats line shows the new settings (e.g. "step 20 / 3"), not the old run's

    # ------------------------------------------------------------------ helpers
    def _refresh_tiles(self) -> None:
        if not self._ready:
            return
        self._show_tiles(*self._tiles(self._objective))

    def _tiles(self, objective: Objective) -> tuple[torch.Tensor, torch.Tensor]:
        return self._session.heat_and_mask(objective, self.p1, self.p2)

    def _show_tiles(self, heat: torch.Tensor, mask: torch.Tensor) -> None:
        self._session.mask = mask
        self.gradcam_png = to_png_bytes(heat)
        self.mask_png = to_png_bytes(mask)

    def _set_target_trait(self) -> None:
        self._setting_target = True
        try:
            self.target = target_trait(self._objective, self._model.labels)
        finally:
            self._setting_target = False

    def _seed_prob(self) -> float | None:
        if isinstance(self._objective, Logit):
            return float(self._session.probs[self._objective.index])
        return None

    def _predicted_vs_true_text(self) -> str:
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
        away = "away from " if self.away else ""
        if r.seed_score.prob is not None and r.score.prob is not None:
            label = self.target.get("label", "")
            text = f"done: {away}{label + ': ' if away else ''}p({label}) {r.seed_score.prob:.3f} → {r.score.prob:.3f}"
            if r.p_fell and not self.away:
                text += " ▼ p fell: try a smaller λ or more steps"
        else:
            text = f"done: {r.target} {r.seed_score.value:.2f} → {r.score.value:.2f}"
        return " ".join([text, _repeat_note(r, self._model), *r.notes])  # notes: e.g. "try λ = 0.1"


def _repeat_note(result: Accentuation, model: Model) -> str:
    """What the same image needs again: the random seed, and on a CPU the thread count (another count
    sums in another order, and over a run the images drift apart: measured 0.159 vs 0.180 after 8 steps)."""
    n = torch.get_num_threads()
    threads = f", {n} CPU thread{'s' if n != 1 else ''}" if model.device.type == "cpu" else ""
    return f"(random seed {result.rng_seed}{threads}: the same settings repeat this image)"
