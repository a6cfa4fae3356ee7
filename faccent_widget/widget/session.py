"""Widget-independent state of one FaccentWidget: the seed, its predictions, its attribution tiles, the
run in progress and its playback (snapshots, scrub position, results of the single run and of the
gallery).

The images and numbers the panel shows are computed here; :mod:`faccent_widget.widget.panel` holds
the settings, turns browser messages into calls of this class and chooses what to send back. Keeping
this apart makes it testable without a kernel or a browser.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..accentuate import start_run
from ..core.attribution import attribution_maps
from ..core.compositing import difference_image, heatmap_overlay, masked_accentuation
from ..core.config import EngineConfig
from ..core.engine import Accentuation, AccentuationRun, StepState
from ..core.masks import CollectiveNormalizer
from ..core.model import Model
from ..core.objectives import Logit, Objective
from ..core.scoring import target_class
from ..images import ImageInput, canvas_size, load_image, resize_image
from .exports import gallery_strip
from .reference import ReferenceMaps

__all__ = ["Session", "Frame", "VIEWS", "MAPS_CACHE_SIZE", "MAX_SNAPSHOTS"]

VIEWS = ("masked", "unmasked", "diff")
#: Attribution maps (seed and reference set) are kept for this many targets, least recently used
#: dropped first (one entry of the default model is about 1.5 MiB).
MAPS_CACHE_SIZE = 16
#: A widget run keeps at most this many snapshots (the scrub positions after the seed): longer runs take
#: one every ``ceil(steps / MAX_SNAPSHOTS)`` steps instead of the preset's ``snapshot_every``.
MAX_SNAPSHOTS = 120


@dataclass
class Frame:
    """What one chunk reports back to the browser."""

    step: int
    steps: int
    image: torch.Tensor  # (3, H, W) in [0, 1], already in the requested view (or a gallery strip)
    objective: float
    distance: float
    prob: float | None
    done: bool
    objective_history: list[float] = field(default_factory=list)
    distance_history: list[float] = field(default_factory=list)


def snapshot_every(config: EngineConfig, budget: int | None = None) -> int:
    """``config.snapshot_every``, raised so that a run of ``config.steps`` keeps at most ``budget``
    (default ``MAX_SNAPSHOTS``) snapshots."""
    cap = MAX_SNAPSHOTS if budget is None else budget
    return max(int(config.snapshot_every), math.ceil(int(config.steps) / max(1, cap)))


class Session:
    """Seed image, target maps, reference set, the run in progress and its playback state.

    Args:
        model: the wrapped model.
        image: the seed (anything :func:`~faccent_widget.load_image` accepts).
        reference: images for collective mask normalisation (default: the bundled sample images).
        mask_size: the shorter side of the shown tiles.
    """

    def __init__(
        self,
        model: Model,
        image: ImageInput,
        *,
        reference: Sequence[ImageInput] | None = None,
        mask_size: int = 256,
        _references: ReferenceMaps | None = None,
    ) -> None:
        self.model = model
        #: the reference set and its maps per target (shared with the sessions made by ``with_image``)
        self.references = _references if _references is not None else ReferenceMaps(model, reference, MAPS_CACHE_SIZE)
        self.mask_size = mask_size
        self.seed = load_image(image)
        # the shown tiles: shorter side mask_size, longer side capped (thin images stay bounded)
        self.display_seed = resize_image(
            self.seed, canvas_size((int(self.seed.shape[-2]), int(self.seed.shape[-1])), mask_size)
        )
        #: the seed at each size it is composed at (the display size, the canvas of the last run)
        self._seeds: dict[tuple[int, int], torch.Tensor] = {_hw(self.display_seed): self.display_seed}
        #: target description → (seed map (H, W), reference maps (N, h, w)); an LRU of MAPS_CACHE_SIZE
        self._maps: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self.probs = model.probabilities(self.seed)
        # ---- playback
        self.run: AccentuationRun | None = None
        #: (run, objective, distance): the sparkline copied to the host so far (see :meth:`_curves`)
        self._curve_cache: tuple[AccentuationRun, list[float], list[float]] | None = None
        #: the targets of the gallery batch in progress ([] for a single run)
        self.gallery_targets: list[Objective] = []
        #: "topk", "inhibited" or "predicted_vs_true" while a gallery batch is the current run, else None
        self.gallery_mode: str | None = None
        #: the results of the current run once it is done
        self.results: list[Accentuation] = []
        #: the finished single run's accentuation (None while it runs, after a reset, for a new seed)
        self.result: Accentuation | None = None
        #: the last finished gallery batch
        self.gallery: list[Accentuation] = []
        #: the single (non-gallery) run whose snapshots are scrubbed: a gallery batch keeps the last one
        self.single_run: AccentuationRun | None = None
        #: the scrub position shown instead of the latest image (None = follow the run)
        self.scrub_index: int | None = None
        #: the collective mask of the current target at the display size (set with the tiles)
        self.mask: torch.Tensor = torch.ones(1, 1)
        #: (run id, scrub position) → the model's probabilities on that image (see :meth:`numbers`)
        self._rescored: dict[tuple[int, int], torch.Tensor] = {}

    def with_image(self, image: ImageInput) -> Session:
        """A session for another seed with the same model and reference set: the reference maps already
        computed are reused (a photo swap computes only the new seed's maps)."""
        return Session(self.model, image, mask_size=self.mask_size, _references=self.references)

    # ------------------------------------------------------------------ predictions
    def top(self, k: int = 5) -> list[dict[str, Any]]:
        """The ``k`` most likely classes (fewer when the model has fewer than ``k``)."""
        values, idx = self.probs.topk(min(k, self.probs.numel()))
        return [self._entry(int(i), float(v)) for v, i in zip(values, idx)]

    def inhibited(self, k: int = 5) -> list[dict[str, Any]]:
        """The ``k`` least likely classes (fewer when the model has fewer than ``k``)."""
        values, idx = self.probs.topk(min(k, self.probs.numel()), largest=False)
        return [self._entry(int(i), float(v)) for v, i in zip(values, idx)]

    def _entry(self, index: int, prob: float) -> dict[str, Any]:
        return {"index": index, "label": self.model.labels[index], "prob": prob}

    def search(self, query: str, limit: int = 12) -> list[dict[str, Any]]:
        """Classes whose label contains ``query`` (prefix matches first, then by probability)."""
        q = query.strip().lower()
        if not q:
            return []
        hits = [i for i, lab in enumerate(self.model.labels) if q in lab.lower()]
        hits.sort(key=lambda i: (not self.model.labels[i].lower().startswith(q), -float(self.probs[i])))
        return [{"index": i, "label": self.model.labels[i]} for i in hits[:limit]]

    # ------------------------------------------------------------------ attribution tiles
    def reference(self) -> torch.Tensor:
        """The reference images at the model's input (N, 3, h, w)."""
        return self.references.images()

    def _source(self, objective: Objective) -> str:
        return "gradcam" if isinstance(objective, Logit) or objective.spatial_layer is None else "activation"

    def maps(self, objective: Objective) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw attribution of the seed (H, W) and of the reference set (N, h, w), cached per target
        (the ``MAPS_CACHE_SIZE`` most recently used targets; the reference maps per widget)."""
        key = objective.description
        if key in self._maps:
            self._maps.move_to_end(key)
            return self._maps[key]
        source = self._source(objective)
        seed_map = attribution_maps(self.model, self.model.to_input(self.seed), objective, source=source)[0]
        ref_maps = self.references.maps(objective, source, MAPS_CACHE_SIZE)
        self._maps[key] = (seed_map, ref_maps)
        while len(self._maps) > MAPS_CACHE_SIZE:
            self._maps.popitem(last=False)
        return seed_map, ref_maps

    def heat_and_mask(self, objective: Objective, p1: float, p2: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(heatmap overlay image, collective mask (H, W) in [0, 1]) at the display size."""
        seed_map, ref_maps = self.maps(objective)
        h, w = self.display_seed.shape[-2:]
        raw = resize_image(seed_map[None].expand(3, -1, -1), (h, w))[0]
        heat = heatmap_overlay(self.display_seed, raw.clamp_min(0), alpha=0.55, normalize=True)
        mask = CollectiveNormalizer(p1, p2).fit(ref_maps)(raw)
        return heat, torch.as_tensor(mask).float()

    # ------------------------------------------------------------------ runs
    def start(
        self, targets: Sequence[Any], *, lam: float, config: EngineConfig, gallery_mode: str | None = None
    ) -> AccentuationRun:
        """Start a new run (replacing any other): one target, or a batch for the gallery (``gallery_mode``
        names it). At most ``MAX_SNAPSHOTS`` snapshots are kept (see :func:`snapshot_every`)."""
        self.run = None
        self.single_run = None if gallery_mode is None else self.single_run
        self.gallery_mode = None
        self.gallery_targets = []
        self.results = []
        self._rescored = {}
        every = snapshot_every(config)
        if every != config.snapshot_every:
            config = dataclasses.replace(config, snapshot_every=every)
        run = start_run(self.model, self.seed, list(targets), lam=lam, config=config)
        self.run = run
        self._remember_seed(run.seeds[0].detach().cpu())  # the canvas-sized seed the run already holds
        self.gallery_mode = gallery_mode
        self.gallery_targets = list(run.objectives) if gallery_mode is not None else []
        if gallery_mode is None:
            self.single_run = run
            self.result = None
            self.scrub_index = None
        else:
            self.gallery = []
        return run

    def reset(self) -> None:
        """Discard the run (and what is scrubbed): the panel shows the seed again."""
        self.run = None
        self.single_run = None
        self.result = None
        self.gallery_mode = None
        self.gallery_targets = []
        self.scrub_index = None

    def advance(self, budget_s: float) -> list[StepState]:
        """Run steps for about ``budget_s`` seconds (at least one).

        On a GPU the steps are queued asynchronously, so the clock alone would let the host queue many
        steps ahead of the device and the frame would come long after the budget. Here at most one step
        is in flight: before the clock is read, the step before the last one is waited for (outside the
        step itself, which stays free of host syncs).
        """
        run = self.run
        if run is None or run.done:
            return []
        states = []
        in_flight: Any = None
        t0 = time.perf_counter()
        while not run.done:
            states.append(run.step())
            if in_flight is not None:
                in_flight.synchronize()
            in_flight = _step_marker(run.device)
            if time.perf_counter() - t0 >= budget_s:
                break
        if run.done:
            self.results = run.result()
            if self.gallery_mode is None:
                self.result = self.results[0]
            else:
                self.gallery = list(self.results)
        return states

    def next_frame(self, budget_s: float, view: str, prob: float | None) -> Frame | None:
        """Advance the run for about ``budget_s`` seconds and return the frame to show (None without a
        run): the accentuation in ``view`` (a strip of the batch for a gallery). ``prob`` is the last
        known target probability, re-measured every 5 steps, after a chunk of several steps and at the end."""
        run = self.run
        if run is None:
            return None
        states = self.advance(budget_s)
        current = states[-1].image if states else run.current_image()
        if self.gallery_mode is not None:
            image = gallery_strip(current)
        else:
            image = self.compose(current[0].clamp(0, 1).cpu(), self.mask, view)
            if self.result is not None:
                prob = self.result.score.prob
            elif run.step_count % 5 == 0 or len(states) > 1:
                prob = self.current_prob()
        objective, distance = self._curves(run)
        return Frame(
            run.step_count,
            run.config.steps,
            image,
            objective[-1] if objective else math.nan,
            distance[-1] if distance else math.nan,
            prob,
            run.done,
            objective,
            distance,
        )

    def _curves(self, run: AccentuationRun) -> tuple[list[float], list[float]]:
        """The sparkline of item 0 so far: (objective, distance) per step. One device→host copy per chunk,
        of the steps new since the last frame only (a frame's cost does not grow with the step count)."""
        cache = self._curve_cache
        if cache is None or cache[0] is not run:
            cache = self._curve_cache = (run, [], [])
        _, objective, distance = cache
        new = run.history[len(objective) :]
        if new:
            values = torch.stack([torch.stack((o[0], d[0])) for o, d in new]).tolist()
            objective.extend(v[0] for v in values)
            distance.extend(v[1] for v in values)
        return list(objective), list(distance)

    def current_prob(self) -> float | None:
        """Target probability of the current candidate (item 0) on the un-augmented image."""
        if self.run is None:
            return None
        score = self.run.evaluate(self.run.current_image()[:1])[0]
        return score.prob

    # ------------------------------------------------------------------ the numbers of what is shown
    def numbers(self, index: int | None = None) -> dict[str, Any]:
        """The numbers of scrub position ``index`` (None: the latest image) of the single run, all *at
        that step*: ``index``, ``step``, ``steps``, ``prob`` (p(target) of that image, see
        :mod:`faccent_widget.core.scoring`), ``seed_prob``, ``objective`` and ``distance`` (the run's
        values at that step), ``p_fell`` and ``top`` (the 5 most likely classes of that image, each with
        its ``before`` on the seed). ``{}`` without a single run."""
        run = self.single_run
        steps = self.scrub_steps()
        if run is None or not steps:
            return {}
        last = len(steps) - 1
        k = last if index is None else max(0, min(int(index), last))
        step = max(steps[k], run.step_count) if k == last else steps[k]
        probs = self.probs if step == 0 else self._probs_at(k, last)  # the latest image may be past the seed
        cls = target_class(run.objectives[0])
        seed_prob = float(self.probs[cls]) if cls is not None else None
        prob = float(probs[cls]) if cls is not None else None
        if step == 0:
            objective, distance = run.seed_scores[0].value, 0.0
        else:
            objective, distance = self._history_at(run, step)
        values, idx = probs.topk(min(5, probs.numel()))
        top = [{**self._entry(int(i), float(v)), "before": float(self.probs[int(i)])} for v, i in zip(values, idx)]
        fell = prob is not None and seed_prob is not None and prob < seed_prob
        return {
            "index": k,
            "count": len(steps),
            "step": int(step),
            "steps": int(run.config.steps),
            "prob": prob,
            "seed_prob": seed_prob,
            "objective": objective,
            "distance": distance,
            "p_fell": fell,
            "top": top,
        }

    def _probs_at(self, k: int, last: int) -> torch.Tensor:
        """The model's probabilities on scrub position ``k`` (the latest image at ``last``), kept per run."""
        run = self.single_run
        if run is None:  # pragma: no cover - numbers() checks
            raise ValueError("no run")
        latest = k == last
        key = (id(run), -run.step_count if latest else k)
        if key not in self._rescored:
            image = self.current_accent() if latest else self.scrub_image(k)
            if image is None:  # pragma: no cover - a single run always has an image
                raise RuntimeError("the run has no image to score")
            self._rescored[key] = self.model.probabilities(image)
        return self._rescored[key]

    @staticmethod
    def _history_at(run: AccentuationRun, step: int) -> tuple[float, float]:
        """(objective, distance) of item 0 at ``step`` (1-based)."""
        objective, distance = run.history[min(step, len(run.history)) - 1]
        return float(objective[0]), float(distance[0])

    # ------------------------------------------------------------------ composition and playback
    def seed_at(self, hw: tuple[int, int]) -> torch.Tensor:
        """The seed at size ``hw``: the display seed or the last run's canvas seed as they are, other
        sizes resized once and kept."""
        seed = self._seeds.get(hw)
        if seed is None:
            seed = self._remember_seed(resize_image(self.seed, hw))
        return seed

    def _remember_seed(self, seed: torch.Tensor) -> torch.Tensor:
        self._seeds[_hw(seed)] = seed
        while len(self._seeds) > 4:  # the display size and the last few canvases
            self._seeds.pop(next(k for k in self._seeds if k != _hw(self.display_seed)))
        return seed

    def compose(
        self, accent: torch.Tensor, mask: torch.Tensor, view: str, seed: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The accentuation tile in ``view``: masked over the seed, unmasked, or the difference."""
        if view == "unmasked":
            return accent
        base = self.seed_at(_hw(accent)) if seed is None else seed
        if view == "diff":
            return difference_image(base, accent, gain=4.0)
        return masked_accentuation(base, accent, mask)

    def view(self, accent: torch.Tensor, mask: torch.Tensor, view: str) -> torch.Tensor:
        """Deprecated spelling of :meth:`compose`."""
        warnings.warn("Session.view is deprecated; use Session.compose", DeprecationWarning, stacklevel=2)
        return self.compose(accent, mask, view)

    def scrub_steps(self) -> list[int]:
        """The steps of the scrub positions: ``[0, s1, s2, …]`` (0 = the seed, then the snapshots of the
        single run), or ``[]`` without one."""
        run = self.single_run
        if run is None:
            return []
        return [0, *(self.result.snapshot_steps if self.result is not None else run.snapshot_steps)]

    def scrub_image(self, index: int) -> torch.Tensor:
        """Scrub position ``index`` (clamped) as a (3, H, W) image at the canvas size, not composed."""
        run = self.single_run
        if run is None:
            raise ValueError("there are no snapshots to scrub through yet: press Accentuate first")
        k = max(0, min(int(index), len(self.scrub_steps()) - 1))
        if k == 0:
            return self.result.seed if self.result is not None else self.seed_at((run.h, run.w))
        if self.result is not None:
            return self.result.snapshots[k - 1].float() / 255.0
        return run.snapshots[k - 1][0].float().cpu() / 255.0

    def snapshot(self, index: int, view: str) -> torch.Tensor | None:
        """Scrub position ``index`` composed in ``view`` (None without a single run)."""
        if self.single_run is None:
            return None
        return self.compose(self.scrub_image(index), self.mask, view)

    def current_accent(self) -> torch.Tensor | None:
        """The latest image of the single run (the result once done), or None."""
        if self.result is not None:
            return self.result.image
        run = self.single_run
        return run.current_image()[0].cpu() if run is not None else None

    def scrub(self, index: int, view: str) -> tuple[int, int, torch.Tensor]:
        """Go to scrub position ``index`` (clamped): (position, its step, the image in ``view``). The right
        end is "the latest image" (after a Stop it can be newer than the last snapshot) and follows the run."""
        steps = self.scrub_steps()
        if not steps:
            raise ValueError("there are no snapshots to scrub through yet: press Accentuate first")
        k = max(0, min(int(index), len(steps) - 1))
        self.scrub_index = None if k == len(steps) - 1 else k
        image = self.shown(view)
        if image is None:  # pragma: no cover - a single run always has an image
            raise RuntimeError("the run has no image to show")
        return k, steps[k], image

    def shown(self, view: str) -> torch.Tensor | None:
        """The accentuation tile as it stands in ``view``: the scrub position, or the latest image."""
        if self.scrub_index is not None:
            return self.snapshot(self.scrub_index, view)
        current = self.current_accent()
        return self.compose(current, self.mask, view) if current is not None else None


def _hw(image: torch.Tensor) -> tuple[int, int]:
    return int(image.shape[-2]), int(image.shape[-1])


def _step_marker(device: torch.device) -> Any:
    """Something whose ``synchronize()`` waits until the work queued so far on ``device`` is done."""
    if device.type == "cuda":
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(device))
        return event
    if device.type == "mps":
        return torch.mps  # no per-step events there: wait for everything queued
    return None  # CPU: steps run synchronously
