"""The accentuation engine (Definition 2.1 of the paper).

Maximise ``f_v(τ(x)) − λ·‖f_ℓ(τ(x)) − f_ℓ(τ(x₀))‖`` averaged over a batch of random crops τ that
are the *same* for the candidate x and the seed x₀ at every step.

One step:

* the seed branch runs under ``no_grad`` and stops at the regularisation layer ℓ;
* the candidate branch stops at the deepest layer the objective needs;
* ONE backward pass of the combined loss ``−objective + λ·b·distance`` per step. The objective's
  gradient is taken apart from the distance's only where it is needed: at the balance step (step 1)
  and, for the gradient attribution ``Σ_steps |∂objective/∂image|``, every ``attribution_every``
  steps (each sample standing for the steps up to the next; exact when ``attribution_every=1`` or
  λ = 0, where every step's single backward *is* the objective's gradient);
* nothing is synchronised with the host: losses and snapshots stay on the device until asked for;
* the model passes run under the device's autocast dtype (:mod:`.device_policy`); with fp16 the
  objective and the distance are scaled before their gradients are taken and unscaled after.

λ balance (as in the reference library): ``b`` is fixed at the first step where the regulariser has
a gradient (step 1; at step 0 the candidate equals the seed, so the regulariser is skipped) to
``Σ|∂objective/∂params| / Σ|∂distance/∂params|`` per item, so λ = 1 means both pull equally.
``balance=False`` uses the raw λ.

The engine is a generator of step states; it never plots or prints.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import numpy as np
import torch

from .config import EngineConfig, fresh_rng_seed, resolve_run_config, with_legacy_keys
from .device_policy import DevicePolicy, device_policy, has_depthwise, quantized_layers
from .distance import channel_distance
from .model import Model
from .notes import run_notes
from .objectives import Logit, Objective
from .parameterizations import Fourier, Parameterization, make_parameterization
from .scoring import Score, score_views
from .step_graphs import StepGraphs, graphs_wanted
from .transforms import CropPlan, sample_boxes, sample_noise

__all__ = ["AccentuationRun", "Accentuation", "StepState", "Score", "channel_distance"]


@dataclass
class StepState:
    """One optimisation step of a run (tensors stay on the model's device)."""

    step: int  # steps done so far (1-based)
    steps: int
    image: torch.Tensor  # (B, 3, H, W) candidate at this step, detached
    objective: torch.Tensor  # (B,) objective (mean over crops)
    distance: torch.Tensor  # (B,) regulariser distance
    run: AccentuationRun = field(repr=False)

    @property
    def done(self) -> bool:
        return self.step >= self.steps

    def result(self) -> list[Accentuation]:
        """The finished accentuations (one per item); valid once ``done``."""
        return self.run.result()


@dataclass
class Accentuation:
    """The outcome of accentuating one seed image toward one target.

    ``config`` is the run's :class:`EngineConfig`, fully resolved: the crop size (``input_size``), the
    regularisation layer (``reg_layer``, also :attr:`reg_layer`) and the random seed (``seed``, also
    :attr:`rng_seed`) that were used. λ is per item, so it is a field here (:attr:`lam`), not a setting.
    """

    image: torch.Tensor  # (3, H, W) float in [0, 1], on the CPU
    seed: torch.Tensor  # (3, H, W) the seed image at the canvas size
    target: str
    objective: Objective = field(repr=False)
    snapshots: torch.Tensor = field(repr=False)  # (K, 3, H, W) uint8
    snapshot_steps: list[int] = field(repr=False)
    history: dict[str, np.ndarray] = field(repr=False)  # "objective", "distance": per step
    seed_score: Score
    score: Score
    attribution: torch.Tensor = field(repr=False)  # (H, W) Σ_steps |∂objective/∂image|
    config: EngineConfig = field(repr=False)
    lam: float = 0.0  # the item's λ, as given
    lam_effective: float = 0.0  # λ · balance
    noise_seeded: bool = False  # started from noise (``image=None``) rather than a seed image
    #: plain-language remarks on the outcome, for people (e.g. the image could not move at this λ)
    notes: list[str] = field(default_factory=list)

    @property
    def reg_layer(self) -> str:
        """The regularisation layer of the run (``config.reg_layer``, resolved)."""
        return str(self.config.reg_layer)

    @property
    def rng_seed(self) -> int:
        """The random seed of the run's crops and noise (``config.seed``, as drawn when none was given)."""
        return int(self.config.seed or 0)

    @property
    def distance(self) -> float:
        """Regulariser distance at the last step."""
        return float(self.history["distance"][-1])

    @property
    def p_fell(self) -> bool:
        """The target's probability ended below the seed's (a class target accentuated that moved the
        wrong way; for a suppressed class, falling is the aim). False without a class probability."""
        before, after = self.seed_score.prob, self.score.prob
        return before is not None and after is not None and after < before

    def snapshot(self, i: int) -> torch.Tensor:
        """Snapshot ``i`` as a float (3, H, W) image."""
        return self.snapshots[i].float() / 255.0


_F = TypeVar("_F", bound=Callable[..., Any])


def _with_grad(method: _F) -> _F:
    """Run ``method`` with autograd on, also when the caller is inside ``torch.no_grad()`` or
    ``torch.inference_mode()`` (evaluation code often is): the engine takes its own gradients."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with torch.inference_mode(False), torch.enable_grad():
            return method(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


class AccentuationRun:
    """A batch of accentuations advanced one step at a time (the widget drives it in chunks).

    Args:
        model: the :class:`~faccent_widget.Model` to accentuate with.
        seeds: (S, 3, H, W) seed images in [0, 1] (already at canvas size), or None for noise seeds.
        objectives: one objective per item.
        lams: one λ per item, already checked (``start_run``, the settings door, checks them).
        config: settings from :func:`~faccent_widget.core.config.resolve_config` (checked there and
            trusted here); completed by :func:`~faccent_widget.core.config.resolve_run_config`
            (``reg_layer`` None → the model's default) and the drawn random seed, and kept as
            :attr:`config`.
        seed_index: which seed each item starts from (default: item i ↔ seed i, or all seed 0).
        canvas_hw: canvas size for noise seeds.
        seed_views: the seeds as given (full images) in the model view, (S, 3, s, s): ``seed_score`` is
            measured on them, as ``Model.probabilities`` does (default: the canvas seeds).
    """

    @_with_grad
    def __init__(
        self,
        model: Model,
        seeds: torch.Tensor | None,
        objectives: Sequence[Objective],
        lams: Sequence[float],
        config: EngineConfig,
        seed_index: Sequence[int] | None = None,
        canvas_hw: tuple[int, int] | None = None,
        seed_views: torch.Tensor | None = None,
    ) -> None:
        self.model = model
        self.objectives = list(objectives)
        b = len(self.objectives)
        if b == 0:
            raise ValueError("no targets given")
        if len(lams) != b:
            raise ValueError(f"got {len(lams)} λ values for {b} targets")
        # input_size None = from the model (its native size × the preset's input_scale; always the
        # native size for fixed-size models), reg_layer None = the model's default; recorded resolved,
        # with the random seed (None: a fresh one from the OS, leaving Python's `random` state alone)
        config = resolve_run_config(model, config)
        #: the random seed of the crops and noise (``config.seed``)
        self.rng_seed: int = config.seed if config.seed is not None else fresh_rng_seed()
        self.config = config = dataclasses.replace(config, seed=self.rng_seed)
        self.crop_size = cast(int, config.input_size)  # set by resolve_run_config
        #: (h, w) of the crops: (crop_size, crop_size), or a fixed-size model's own (possibly non-square) input
        self.crop_hw = model.crop_hw(self.crop_size)
        self.reg_layer = cast(str, config.reg_layer)
        self.device = model.device
        quantized = quantized_layers(model.module)
        if quantized and any(o.needs_logits for o in self.objectives):
            raise ValueError(
                f"the model has int8-quantised layers ({', '.join(map(repr, quantized[:3]))}"
                f"{', …' if len(quantized) > 3 else ''}); PyTorch takes no gradients through them, so its "
                "logits cannot be accentuated. Accentuate the float model (before quantize_dynamic), or a "
                "'layer:unit' target before the first quantised layer."
            )
        self.reg_layout = model.layout(self.reg_layer)
        #: draws the augmentations (on the model's device). A CPU generator here draws the same crops and
        #: noise on any device (to compare devices; costs a synchronising host→device copy per step).
        self.generator = torch.Generator(device=self.device).manual_seed(self.rng_seed)

        if seeds is None:
            h, w = canvas_hw or (config.canvas, config.canvas)
            self.param: Parameterization = Fourier.random((b, 3, h, w), generator=self.generator, device=self.device)
            self.seeds = self.param.image().detach()
            self.seed_index = torch.arange(b, device=self.device)
            self.noise_seeded = True
        else:
            self.seeds = seeds.to(self.device, torch.float32)
            if self.seeds.is_inference():  # made under inference_mode: autograd cannot save it
                self.seeds = self.seeds.clone()
            s = self.seeds.shape[0]
            idx = list(seed_index) if seed_index is not None else (list(range(b)) if s == b else [0] * b)
            if len(idx) != b or max(idx) >= s:
                raise ValueError(f"seed_index {idx} does not match {s} seeds and {b} targets")
            self.seed_index = torch.tensor(idx, device=self.device)
            self.param = make_parameterization(config.param, self.seeds[self.seed_index])
            self.noise_seeded = False
        self.b = b
        self.h, self.w = self.seeds.shape[-2:]
        # The model's input normalisation is affine per channel and every crop's weights sum to 1 (the
        # boxes lie inside the canvas), so the canvas is normalised before cropping — the same values
        # as normalising the crops, on fewer pixels, and the seed's once — with the noise scaled by the
        # normalisation's slope (1 / std).
        with torch.no_grad():
            self.seeds_normalized = model.normalize(self.seeds)
            ones = torch.ones(1, 3, 1, 1, device=self.device)
            self.noise_scale = model.normalize(ones) - model.normalize(torch.zeros_like(ones))
        #: autocast dtype, memory format and fp16 gradient scale (see ``device_policy``); ``config.autocast``
        #: None = the device's rule, True/False, or "fp16"/"bf16" to force a dtype.
        self.policy: DevicePolicy = device_policy(
            self.device,
            model_dtype=getattr(model, "dtype", torch.float32),
            has_depthwise=has_depthwise(model.module),
            autocast=config.autocast,
            quantized=bool(quantized),
        )
        self.autocast = self.policy.autocast
        #: (B,) fp16 image gradients (objective or regulariser) that were not finite and were dropped
        self.nonfinite_steps = torch.zeros(b, dtype=torch.int32, device=self.device)
        use_graphs, graphs_off = graphs_wanted(config.cuda_graphs, self.device)
        # fused Adam keeps its step count on the parameters' device: no scalar read-back per step;
        # capturable when the steps are replayed as CUDA graphs
        self.optimizer = torch.optim.Adam(
            self.param.params,
            lr=config.lr,
            fused=self.device.type in ("cpu", "cuda"),
            capturable=use_graphs and self.device.type == "cuda",
        )
        self.lam_values = [float(v) for v in lams]
        self.lams = torch.tensor(self.lam_values, device=self.device)
        self.balance = torch.ones(b, device=self.device)
        self.use_reg = bool(max(lams) > 0)
        self.layers = tuple(dict.fromkeys([l for o in self.objectives for l in o.layers] + [self.reg_layer]))
        self.needs_logits = any(o.needs_logits for o in self.objectives)
        self._logit_index = (
            torch.tensor([o.index for o in self.objectives if isinstance(o, Logit)], device=self.device)
            if all(isinstance(o, Logit) for o in self.objectives)
            else None
        )
        self.attribution = torch.zeros(b, self.h, self.w, device=self.device)
        self.history: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.snapshots: list[torch.Tensor] = []
        self.snapshot_steps: list[int] = []
        self.step_count = 0
        views = self.seeds if seed_views is None else seed_views.to(self.device, torch.float32)
        self.seed_scores = self.score_views(self.model.to_input(views), self.seed_index.tolist())
        self._scored_canvas = seed_views is None  # else the notes compare with the canvas seeds (result())
        self._result: list[Accentuation] | None = None
        #: the run's CUDA graphs (``config.cuda_graphs``; :mod:`.step_graphs`), or None when its steps run eagerly
        self.graphs: StepGraphs | None = StepGraphs(self) if use_graphs else None
        if graphs_off:
            warnings.warn(f"{graphs_off}: the steps run eagerly", RuntimeWarning, stacklevel=3)

    @property
    def graphs_off_reason(self) -> str | None:
        """Why this run's steps are not replayed as CUDA graphs though graphs were on (one line), or None."""
        return self.graphs.reason if self.graphs is not None else None

    @property
    def seed_value(self) -> int:
        """Deprecated spelling of :attr:`rng_seed` (the random seed, not a seed image)."""
        warnings.warn("AccentuationRun.seed_value is deprecated; use rng_seed", DeprecationWarning, stacklevel=2)
        return self.rng_seed

    # ------------------------------------------------------------------ evaluation
    def objective_values(self, feats: dict[str, torch.Tensor], n: int) -> torch.Tensor:
        """(B,) objective per item, each averaged over that item's ``n`` images."""
        if self._logit_index is not None:
            logits = feats["logits"].float().reshape(self.b, n, -1)
            return logits.gather(2, self._logit_index.view(-1, 1, 1).expand(-1, n, 1)).mean(dim=(1, 2))
        values = []
        for i, obj in enumerate(self.objectives):
            part = {k: v[i * n : (i + 1) * n] for k, v in feats.items()}
            values.append(obj(part).float().mean())
        return torch.stack(values)

    def evaluate(self, images: torch.Tensor) -> list[Score]:
        """Scores of (B, 3, H, W) images, item i on image i, on the full, un-augmented view (the model
        view, ``Model.to_input``), one image at a time: the numbers ``Model.probabilities`` gives."""
        return self.score_views(self.model.to_input(images), range(int(images.shape[0])))

    def score_views(self, views: torch.Tensor, index: Sequence[int]) -> list[Score]:
        """Scores of item ``i`` on ``views[index[i]]`` ((S, 3, s, s) model views; see :func:`.scoring.score_views`)."""
        return score_views(self.model, self.objectives, views, index)

    def _canvas_scores(self) -> list[Score]:
        """Scores of the canvas seeds, each distinct seed passing the model once."""
        return self.score_views(self.model.to_input(self.seeds), self.seed_index.tolist())

    # ------------------------------------------------------------------ optimisation
    @property
    def done(self) -> bool:
        return self.step_count >= self.config.steps

    def current_image(self) -> torch.Tensor:
        """(B, 3, H, W) current candidate, detached."""
        with torch.no_grad():
            return self.param.image().clamp(0, 1)

    @_with_grad
    def step(self) -> StepState:
        """Run one optimisation step and return its state (autograd on, whatever the caller's mode)."""
        if self.done:
            raise RuntimeError(f"the run is finished ({self.config.steps} steps); start a new one")
        cfg = self.config
        # At step 0 the candidate *is* the seed: the distance is 0 up to round-off, and the gradient
        # of a norm at 0 is only noise (a unit vector of round-off), so the regulariser starts at step 1.
        regularise = self.use_reg and self.step_count > 0
        balance_step = regularise and cfg.balance and self.step_count == 1
        weight = self._attribution_weight(regularise)
        out = None
        if self.graphs is not None and self.step_count > 0 and not balance_step:
            out = self.graphs.step(regularise, weight)  # a replay (or the kind's warm-up); None: eagerly
        if out is None:
            out = self.compute_step(regularise, balance_step, weight)
        image, objective, distance = out

        self.step_count += 1
        self.history.append((objective, distance))
        if self.step_count % cfg.snapshot_every == 0 or self.step_count == cfg.steps:
            self.snapshots.append((image.clamp(0, 1) * 255).round().to(torch.uint8))
            self.snapshot_steps.append(self.step_count)
        return StepState(self.step_count, cfg.steps, image, objective, distance, self)

    def compute_step(
        self, regularise: bool, balance_step: bool, weight: int | torch.Tensor, cache_casts: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The device work of one step — augmentations, passes, backward, Adam — with no bookkeeping:
        (candidate image, objective, distance), detached. ``weight``: how many steps this step's objective
        gradient stands for in the attribution (0: not sampled; a 0-dim tensor in a captured step).
        ``cache_casts=False`` turns off autocast's weight-cast cache (required inside a CUDA graph capture)."""
        cfg, n, size = self.config, self.config.n_crops, self.crop_hw
        boxes = sample_boxes(n, self.h, self.w, cfg.crop_range, self.generator).to(self.device)
        noise = sample_noise(n, size, cfg.noise, self.generator)
        noise = noise.to(self.device).mul_(self.noise_scale) if noise is not None else None  # normalised units

        # one plan for the candidate and the seed: the same τ (boxes and noise) for both
        crop = CropPlan(boxes, size, self.h, self.w, max_side=cfg.crop_range[1] * min(self.h, self.w))
        try:
            x, feats, ref = self._model_passes(crop, noise, n, cache_casts)
        except RuntimeError:
            if not self.policy.channels_last:
                raise
            # a model that `.view`s a conv output cannot take channels-last crops: the plain layout from now on
            self.policy = dataclasses.replace(self.policy, channels_last=False)
            x, feats, ref = self._model_passes(crop, noise, n, cache_casts)
        distance = channel_distance(feats[self.reg_layer], ref, self.reg_layout).view(self.b, -1).mean(1)
        objective = self.objective_values(feats, n)

        sampled = isinstance(weight, torch.Tensor) or weight > 0
        scale = self.policy.grad_scale
        self.optimizer.zero_grad()
        if regularise and not balance_step and not sampled:
            # the common step: one backward of the combined loss, through the model and the crops once
            loss = (self.lams * self.balance * distance - objective).sum() * scale
            (g,) = torch.autograd.grad(loss, x)
            x.backward(self._unscale(g, scale))
        else:
            (g_obj,) = torch.autograd.grad(objective.sum() * scale, x, retain_graph=regularise)
            g_obj = self._unscale(g_obj, scale)
            if sampled:
                self.attribution += weight * g_obj.detach().abs().sum(1)
            direction = -g_obj
            if regularise:
                (g_reg,) = torch.autograd.grad(distance.sum() * scale, x)
                g_reg = self._unscale(g_reg, scale)
                if balance_step:
                    self.balance = self._balance(x, g_obj, g_reg)
                direction = direction + (self.lams * self.balance).view(-1, 1, 1, 1) * g_reg
            x.backward(direction)
        self.optimizer.step()
        return x.detach(), objective.detach(), distance.detach()

    def _model_passes(
        self, crop: CropPlan, noise: torch.Tensor | None, n: int, cache_casts: bool = True
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """The candidate's pass (with autograd) and the seed's pass to the regularisation layer, through the same
        crops: (candidate image, its features, the seed's reference activations)."""
        fmt = torch.channels_last if self.policy.channels_last else torch.contiguous_format
        x = self.param.image()
        crops = crop(self.model.normalize(x), noise, fmt)
        dtype = self.policy.autocast_dtype
        on = dtype is not None
        with torch.autocast(self.device.type, dtype=dtype or torch.bfloat16, enabled=on, cache_enabled=cache_casts):
            # freeze=False: every gradient below is taken with autograd.grad with respect to the image,
            # so none reaches the model's weights, and the seed pass reuses autocast's weight casts
            feats = self.model.features(crops, self.layers, logits=self.needs_logits, normalize=False, freeze=False)
            with torch.no_grad():
                seed_crops = crop(self.seeds_normalized, noise, fmt)
                seed_feats = self.model.features(seed_crops, [self.reg_layer], normalize=False, freeze=False)
                ref = seed_feats[self.reg_layer]
            ref = ref.reshape(-1, n, *ref.shape[1:])[self.seed_index].reshape(-1, *ref.shape[1:])
        return x, feats, ref

    def _attribution_weight(self, regularise: bool) -> int:
        """How many steps this step's |∂objective/∂image| stands for in the attribution (0: not sampled).

        Unregularised steps are exact (their one backward is the objective's gradient). Regularised
        steps 1, 1 + k, 1 + 2k, … (k = ``attribution_every``) are sampled, each for the k steps from it.
        """
        if not regularise:
            return 1
        k, s = self.config.attribution_every, self.step_count
        return min(k, self.config.steps - s) if (s - 1) % k == 0 else 0

    def _unscale(self, g: torch.Tensor, scale: float) -> torch.Tensor:
        """Undo the fp16 gradient scale; an item whose gradient is not finite gets a zero gradient this
        step (counted in ``nonfinite_steps``). On the device, without a host sync."""
        if scale == 1.0:
            return g
        g = g / scale
        finite = torch.isfinite(g).flatten(1).all(1)
        self.nonfinite_steps += (~finite).int()
        return torch.where(finite.view(-1, 1, 1, 1), g, torch.zeros_like(g))

    def _balance(self, x: torch.Tensor, g_obj: torch.Tensor, g_reg: torch.Tensor) -> torch.Tensor:
        params = self.param.params
        p_obj = torch.autograd.grad(x, params, g_obj, retain_graph=True)
        p_reg = torch.autograd.grad(x, params, g_reg, retain_graph=True)
        s_obj = torch.stack([g.abs().flatten(1).sum(1) for g in p_obj]).sum(0)
        s_reg = torch.stack([g.abs().flatten(1).sum(1) for g in p_reg]).sum(0)
        return torch.where(s_reg > 1e-20, s_obj / s_reg.clamp_min(1e-20), torch.ones_like(s_obj))

    def __iter__(self) -> Iterator[StepState]:
        while not self.done:
            yield self.step()

    # ------------------------------------------------------------------ results
    def result(self) -> list[Accentuation]:
        """Finish: final images and scores, per item (computed once)."""
        if self._result is not None:
            return self._result
        if not self.done:
            raise RuntimeError(f"the run is not finished ({self.step_count}/{self.config.steps} steps)")
        final = self.current_image()
        scores = self.evaluate(final)
        objective = torch.stack([h[0] for h in self.history]).cpu().numpy()
        distance = torch.stack([h[1] for h in self.history]).cpu().numpy()
        snaps = torch.stack(self.snapshots, 1).cpu() if self.snapshots else torch.zeros(self.b, 0, 3, self.h, self.w)
        lam_eff = (self.lams * self.balance).cpu()
        seeds = self.seeds[self.seed_index].cpu()
        attribution = self.attribution.cpu()
        final = final.cpu()
        change = (final - seeds.clamp(0, 1)).abs().flatten(1).amax(1)
        # "did the target rise?" asks about what the run could change: from the seed at the canvas size
        moved_from = self.seed_scores if self._scored_canvas else self._canvas_scores()
        out = []
        for i, obj in enumerate(self.objectives):
            # the same settings for every item; the deprecated config["lam"] still answers per item
            cfg = with_legacy_keys(self.config, lam=self.lam_values[i], noise_seeded=self.noise_seeded)
            out.append(
                Accentuation(
                    image=final[i],
                    seed=seeds[i],
                    target=obj.description,
                    objective=obj,
                    snapshots=snaps[i],
                    snapshot_steps=list(self.snapshot_steps),
                    history={"objective": objective[:, i], "distance": distance[:, i]},
                    seed_score=self.seed_scores[i],
                    score=scores[i],
                    attribution=attribution[i],
                    config=cfg,
                    lam=self.lam_values[i],
                    lam_effective=float(lam_eff[i]),
                    noise_seeded=self.noise_seeded,
                    notes=run_notes(
                        float(change[i]),
                        scores[i].value - moved_from[i].value,
                        self.lam_values[i],
                        float(lam_eff[i]),
                        self.config.steps,
                        self.config.lr,
                    ),
                )
            )
        self._result = out
        return out
