"""Widget-independent state of one FaccentWidget: the seed, its predictions, its attribution tiles
and the run in progress.

The images and numbers the panel shows are computed here; :mod:`faccent_widget.widget.panel` holds
the settings, turns browser messages into calls of this class and chooses what to send back. Keeping
this apart makes it testable without a kernel or a browser.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..accentuate import start_run
from ..core.attribution import attribution_maps
from ..core.compositing import difference_image, heatmap_overlay, masked_accentuation
from ..core.config import EngineConfig
from ..core.engine import Accentuation, AccentuationRun, StepState
from ..core.masks import CollectiveNormalizer
from ..core.model import Model
from ..core.objectives import Logit, Objective
from ..images import ImageInput, canvas_size, load_image, resize_image, sample_images

__all__ = ["Session", "Frame", "VIEWS", "MAPS_CACHE_SIZE"]

VIEWS = ("masked", "unmasked", "diff")
#: Attribution maps (seed and reference set) are kept for this many targets, least recently used
#: dropped first (one entry of the default model is about 1.5 MiB).
MAPS_CACHE_SIZE = 16


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


class Session:
    """Seed image, target, reference set and the run in progress."""

    def __init__(
        self, model: Model, image: ImageInput, *, reference: Sequence[ImageInput] | None = None, mask_size: int = 256
    ) -> None:
        if reference is not None:
            single = isinstance(reference, (str, bytes, os.PathLike, Image.Image)) or (
                isinstance(reference, (torch.Tensor, np.ndarray)) and reference.ndim < 4
            )
            if single or not hasattr(reference, "__len__"):
                raise TypeError(
                    "reference must be a list of images (anything load_image accepts) or an (N, 3, H, W) batch, "
                    f"got {type(reference).__name__}"
                )
            if len(reference) == 0:
                raise ValueError("the reference set for collective normalisation is empty; pass images or None")
        self.model = model
        self.seed = load_image(image)
        # the shown tiles: shorter side mask_size, longer side capped (thin images stay bounded)
        self.display_seed = resize_image(
            self.seed, canvas_size((int(self.seed.shape[-2]), int(self.seed.shape[-1])), mask_size)
        )
        self._reference_inputs = reference
        self._reference: torch.Tensor | None = None
        #: target description → (seed map (H, W), reference maps (N, h, w)); an LRU of MAPS_CACHE_SIZE
        self._maps: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self.run: AccentuationRun | None = None
        self.gallery_targets: list[Objective] = []
        self.results: list[Accentuation] = []
        self.probs = model.probabilities(self.seed)

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
        q = query.strip().lower()
        if not q:
            return []
        hits = [i for i, lab in enumerate(self.model.labels) if q in lab.lower()]
        hits.sort(key=lambda i: (not self.model.labels[i].lower().startswith(q), -float(self.probs[i])))
        return [{"index": i, "label": self.model.labels[i]} for i in hits[:limit]]

    # ------------------------------------------------------------------ attribution tiles
    def reference(self) -> torch.Tensor:
        if self._reference is None:
            if self._reference_inputs is None:
                images = list(sample_images().values())
            else:
                images = list(self._reference_inputs)  # type: ignore[arg-type]
            if not images:
                raise ValueError("the reference set for collective normalisation is empty")
            self._reference = self.model.view(images)
        return self._reference

    def _source(self, objective: Objective) -> str:
        return "gradcam" if isinstance(objective, Logit) or objective.spatial_layer is None else "activation"

    def maps(self, objective: Objective) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw attribution of the seed (H, W) and of the reference set (N, h, w), cached per target
        (the ``MAPS_CACHE_SIZE`` most recently used targets)."""
        key = objective.description
        if key in self._maps:
            self._maps.move_to_end(key)
            return self._maps[key]
        source = self._source(objective)
        seed_map = attribution_maps(self.model, self.model.view(self.seed), objective, source=source)[0]
        ref_maps = attribution_maps(self.model, self.reference(), objective, source=source)
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
    def start(self, targets: Sequence[Any], *, lam: float, config: EngineConfig) -> AccentuationRun:
        """Start a new run (replacing any other): one target, or a batch for the gallery."""
        self.run = None
        self.results = []
        self.run = start_run(self.model, self.seed, list(targets), lam=lam, config=config)
        self.gallery_targets = list(self.run.objectives) if len(targets) > 1 else []
        return self.run

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
        return states

    def current_prob(self) -> float | None:
        """Target probability of the current candidate (item 0) on the un-augmented image."""
        if self.run is None:
            return None
        score = self.run.evaluate(self.run.current_image()[:1])[0]
        return score.prob

    def view(self, accent: torch.Tensor, mask: torch.Tensor, view: str) -> torch.Tensor:
        """The accentuation tile in ``view``: masked over the seed, unmasked, or the difference."""
        seed = resize_image(self.seed, (int(accent.shape[-2]), int(accent.shape[-1])))
        if view == "diff":
            return difference_image(seed, accent, gain=4.0)
        if view == "masked":
            return masked_accentuation(seed, accent, mask)
        return accent


def _step_marker(device: torch.device) -> Any:
    """Something whose ``synchronize()`` waits until the work queued so far on ``device`` is done."""
    if device.type == "cuda":
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(device))
        return event
    if device.type == "mps":
        return torch.mps  # no per-step events there: wait for everything queued
    return None  # CPU: steps run synchronously
