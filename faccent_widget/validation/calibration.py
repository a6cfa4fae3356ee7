"""Find the 'sensitive region' of λ automatically (appendix E of the paper).

For each image, accentuate toward its second most likely class over a grid of λ that includes
both extremes; measure the final distance ‖f_ℓ(x*) − f_ℓ(x₀)‖ at the regularisation layer; min-max
normalise it per image between the two extremes (smallest λ → 1, largest λ → 0); average over
images. The recommended λ is where the mean normalised distance crosses 0.5.

Our λ is *balanced* (λ = 1: objective and regulariser gradients pull equally at the first step),
so the extremes sit near 10⁻³ and 10³ rather than the paper's 10⁻⁶ and 10⁶ (measured with
``benchmarks/lambda_curve.py``; see :data:`DEFAULT_LAMBDA_GRID`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ..accentuate import start_run
from ..core.config import EngineConfig, with_legacy_keys
from ..core.engine import Accentuation, AccentuationRun, channel_distance
from ..core.model import Model, as_model
from ..core.objectives import Objective, Target, resolve_objective
from ._common import as_image_list, validation_config

__all__ = [
    "DEFAULT_LAMBDA_GRID",
    "LambdaCurve",
    "LambdaCalibration",
    "LambdaCalibrationRun",
    "calibrate_lambda",
    "crossing",
    "full_view_distance",
]

#: The default λ grid: 0 (no regulariser) plus half-decades through the sensitive region and whole
#: decades out to the extremes, which must be saturated (flat normalised distance; check with
#: ``benchmarks/lambda_curve.py`` for a new model).
DEFAULT_LAMBDA_GRID: tuple[float, ...] = (0.0, 1e-3, 1e-2, 0.1, 10**-0.5, 1.0, 10**0.5, 10.0, 100.0, 1000.0)

_RANKS = {"first": 0, "top1": 0, "second": 1, "top2": 1, "third": 2, "top3": 2}


@dataclass
class LambdaCurve:
    """The data of a λ calibration.

    Attributes:
        lambdas: (L,) λ grid, ascending.
        distances: (N, L) final regularisation-layer distance per image and λ (raw).
        normalized: (N, L) per-image min-max normalised distance: 1 at the smallest λ, 0 at the largest.
        mean, std: (L,) over images (NaN rows — images where λ had no effect — are left out).
        crop_distances: (N, L) the engine's own distance at the last step (mean over that step's
            crops), for reference; noisier than ``distances``.
    """

    lambdas: np.ndarray
    distances: np.ndarray
    normalized: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    crop_distances: np.ndarray = field(repr=False)


@dataclass
class LambdaCalibration:
    """Result of :func:`calibrate_lambda`.

    Attributes:
        recommended: λ where the mean normalised distance crosses 0.5 (linear interpolation in
            log₁₀ λ between the two grid points that bracket 0.5).
        bracketed: False when no grid segment brackets 0.5 (then ``recommended`` is the grid λ
            closest to 0.5 and the grid should be widened).
        sensitive_region: (λ at 0.9, λ at 0.1): where accentuations visibly interpolate between the
            unregularised one and the seed (NaN where not bracketed).
        curve: the :class:`LambdaCurve` data.
        reg_layer: the regularisation layer the distance is measured at.
        targets: one target description per image.
        accentuations: per image, the accentuations for each λ (only with ``return_accentuations``).
        config: the resolved engine settings of every run (one shared random seed, the reg layer, the
            crop size).
        wall_s: wall time from the start to the end of the calibration.
    """

    recommended: float
    bracketed: bool
    sensitive_region: tuple[float, float]
    curve: LambdaCurve
    reg_layer: str
    targets: list[str]
    config: EngineConfig = field(repr=False)
    accentuations: list[list[Accentuation]] | None = field(default=None, repr=False)
    wall_s: float = 0.0

    @property
    def lambdas(self) -> np.ndarray:
        return self.curve.lambdas

    def table(self) -> str:
        """The curve as a text table: λ, mean ± std normalised distance, mean raw distance."""
        c = self.curve
        lines = [f"{'lambda':>10s}  {'normalised distance':>21s}  {'raw distance':>13s}"]
        for j, lam in enumerate(c.lambdas):
            raw = np.nanmean(c.distances[:, j])
            lines.append(f"{lam:>10.4g}  {c.mean[j]:>10.3f} ± {c.std[j]:<8.3f}  {raw:>13.4f}")
        upper, lower = self.sensitive_region
        lines.append(
            f"recommended λ = {self.recommended:.3g}"
            + ("" if self.bracketed else " (NOT bracketed: widen the grid)")
            + f"; sensitive region ≈ [{upper:.3g}, {lower:.3g}] (normalised distance 0.9 → 0.1)"
            + f"; reg layer {self.reg_layer}; {c.distances.shape[0]} images"
        )
        return "\n".join(lines)

    def plot(self, ax: Any = None, label: str | None = None, color: Any = None, show_images: bool = True) -> Any:
        """Plot mean ± std (band) and, faintly, each image's curve; λ = 0 is drawn one decade left of
        the smallest positive λ. Returns the matplotlib axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(5, 3.5))
        x, ticks, labels = _plot_positions(self.curve.lambdas)
        c = self.curve
        line = ax.plot(x, c.mean, "o-", color=color, label=label, lw=2, ms=4)[0]
        ax.fill_between(x, c.mean - c.std, c.mean + c.std, color=line.get_color(), alpha=0.2)
        if show_images:
            for row in c.normalized:
                ax.plot(x, row, "-", color=line.get_color(), alpha=0.15, lw=0.8)
        if self.bracketed:
            ax.axvline(math.log10(self.recommended), color=line.get_color(), ls="--", lw=1)
        ax.set_xticks(ticks, labels)
        ax.set_xlabel("λ (balanced)")
        ax.set_ylabel("normalised distance from seed")
        return ax


def _plot_positions(lambdas: np.ndarray) -> tuple[np.ndarray, list[float], list[str]]:
    pos = lambdas[lambdas > 0]
    zero_at = math.log10(pos.min()) - 1 if pos.size else 0.0
    x = np.array([math.log10(v) if v > 0 else zero_at for v in lambdas])
    ticks = [float(zero_at)] if (lambdas == 0).any() else []
    labels = ["0"] if ticks else []
    for e in range(math.floor(math.log10(pos.min())), math.ceil(math.log10(pos.max())) + 1):
        ticks.append(float(e))
        labels.append(f"1e{e}")
    return x, ticks, labels


def crossing(
    lambdas: Sequence[float] | np.ndarray, values: Sequence[float] | np.ndarray, level: float = 0.5
) -> tuple[float, bool]:
    """λ where a decreasing curve crosses ``level``, interpolated linearly in log₁₀ λ.

    Only positive λ are interpolated. Among several bracketing segments (a noisy curve) the steepest
    drop wins. Returns (λ, bracketed); unbracketed → the grid λ whose value is closest to ``level``.
    """
    lam = np.asarray(lambdas, dtype=float)
    y = np.asarray(values, dtype=float)
    keep = (lam > 0) & np.isfinite(y)
    lam, y = lam[keep], y[keep]
    if lam.size == 0:
        return float("nan"), False
    x = np.log10(lam)
    best, best_drop = None, -math.inf
    for i in range(lam.size - 1):
        a, b = y[i] - level, y[i + 1] - level
        if a * b <= 0 and y[i] != y[i + 1] and y[i] - y[i + 1] > best_drop:
            best, best_drop = i, y[i] - y[i + 1]
    if best is None or best_drop <= 0:
        j = int(np.argmin(np.abs(y - level)))
        return float(lam[j]), False
    i = best
    t = (level - y[i]) / (y[i + 1] - y[i])
    return float(10 ** (x[i] + t * (x[i + 1] - x[i]))), True


def full_view_distance(model: Model, images: torch.Tensor, seeds: torch.Tensor, layer: str) -> torch.Tensor:
    """(N,) mean per-position channel distance ‖f_ℓ(x) − f_ℓ(x₀)‖ at ``layer`` on the full,
    un-augmented images in the model view (the view the engine scores on)."""
    with torch.no_grad():
        a = model.features(model.to_input(images), [layer])[layer]
        b = model.features(model.to_input(seeds), [layer])[layer]
        return channel_distance(a, b, model.layout(layer)).mean(1).cpu()


def _targets(model: Model, images: list[Any], targets: Any) -> list[Objective]:
    n = len(images)
    if isinstance(targets, str) and targets.lower() in _RANKS:
        rank = _RANKS[targets.lower()]
        with torch.no_grad():
            logits = model.features(model.to_input(images), logits=True)["logits"]
        order = logits.float().argsort(dim=1, descending=True)[:, rank].tolist()
        return [resolve_objective(model, int(i)) for i in order]
    if isinstance(targets, (list, tuple)):
        if len(targets) != n:
            raise ValueError(
                f"got {len(targets)} targets for {n} images (give one per image, one for all, or 'second')"
            )
        return [resolve_objective(model, t) for t in targets]
    return [resolve_objective(model, targets)] * n


def _grid(lambdas: Sequence[float] | None) -> np.ndarray:
    grid = DEFAULT_LAMBDA_GRID if lambdas is None else lambdas
    values = sorted(set(float(v) for v in grid))
    if len(values) < 2:
        raise ValueError(f"the λ grid needs at least two distinct values (the two extremes), got {list(grid)}")
    if any(not math.isfinite(v) or v < 0 for v in values):
        raise ValueError(f"λ values must be finite and >= 0, got {list(grid)}")
    return np.array(values)


#: How a :class:`LambdaCalibrationRun` batches its runs: one batch per image holding all its λ, ONE batch
#: of every image × λ, or one run per (image, λ) (the shortest steps, for a live panel).
Batching = Literal["image", "all", "single"]


class LambdaCalibrationRun:
    """:func:`calibrate_lambda` as steps: started here, advanced with :meth:`advance` (for a time budget,
    e.g. a widget's chunk, or to the end), read with :meth:`result`. The math is the same as
    :func:`calibrate_lambda`'s, which runs one of these to the end.

    Args:
        model, images, reg_layer, targets, lambdas, device, engine_settings: as for :func:`calibrate_lambda`.
        batch: ``"image"`` (default: one batch per image holding all its λ), ``"all"`` (every image × λ
            as ONE batch; seeds resized to the first image's canvas) or ``"single"`` (one run per
            (image, λ): the same crops, the shortest steps).
        keep_accentuations: keep every accentuation (``result().accentuations[i][j]``).
    """

    def __init__(
        self,
        model: nn.Module | Model,
        images: Any,
        *,
        reg_layer: str | None = None,
        targets: Target | Sequence[Target] | str = "second",
        lambdas: Sequence[float] | None = None,
        batch: Batching = "image",
        keep_accentuations: bool = False,
        device: str | torch.device | None = None,
        **engine_settings: Any,
    ) -> None:
        self._start = time.perf_counter()
        if batch not in ("image", "all", "single"):
            raise ValueError(f"batch must be 'image', 'all' or 'single', got {batch!r}")
        self.model = as_model(model, device=device)
        self.images = as_image_list(images)
        self.grid = _grid(lambdas)
        #: the settings of every run: one random seed, the final image only, the crop size and reg layer
        self.config = validation_config(self.model, reg_layer, engine_settings)
        self.reg_layer = str(self.config.reg_layer)
        self.objectives = _targets(self.model, self.images, targets)
        self.batch: Batching = batch
        self.keep_accentuations = keep_accentuations
        n, n_lam = len(self.images), self.grid.size
        pairs = [[(i, j) for j in range(n_lam)] for i in range(n)]
        if batch == "all":
            self.groups = [[p for row in pairs for p in row]]
        elif batch == "image":
            self.groups = pairs
        else:
            self.groups = [[p] for row in pairs for p in row]
        self.distances = np.full((n, n_lam), np.nan)
        self.crop_distances = np.full((n, n_lam), np.nan)
        self._kept: dict[tuple[int, int], Accentuation] = {}
        self._next = 0  # the next group to start
        self._run: AccentuationRun | None = None
        self._steps_done = 0
        self._result: LambdaCalibration | None = None

    @property
    def done(self) -> bool:
        """Every run finished (then :meth:`result` is ready)."""
        return self._result is not None

    @property
    def progress(self) -> float:
        """The fraction of the steps done, in [0, 1]."""
        return self._steps_done / (len(self.groups) * self.config.steps)

    def advance(self, budget_s: float | None = None) -> bool:
        """Run steps for about ``budget_s`` seconds (at least one step), or to the end when None; returns
        :attr:`done`."""
        t0 = time.perf_counter()
        while not self.done:
            if self._run is None:
                group = self.groups[self._next]
                self._run = start_run(
                    self.model,
                    [self.images[i] for i, _ in group],  # one seed per image: start_run dedupes
                    [self.objectives[i] for i, _ in group],
                    lam=[float(self.grid[j]) for _, j in group],
                    config=self.config,
                )
            self._run.step()
            self._steps_done += 1
            if self._run.done:
                self._record(self.groups[self._next], self._run.result())
                self._run = None
                self._next += 1
                if self._next == len(self.groups):
                    self._result = self._finish()
            if budget_s is not None and time.perf_counter() - t0 >= budget_s:
                break
        return self.done

    def result(self) -> LambdaCalibration:
        """The calibration; valid once :attr:`done`."""
        if self._result is None:
            raise RuntimeError(f"the λ calibration is not finished ({self.progress:.0%} of its steps)")
        return self._result

    def _record(self, group: list[tuple[int, int]], results: list[Accentuation]) -> None:
        finals = torch.stack([r.image for r in results])
        seeds = torch.stack([r.seed for r in results])
        d = full_view_distance(self.model, finals, seeds, self.reg_layer).numpy()
        for k, (i, j) in enumerate(group):
            self.distances[i, j] = d[k]
            self.crop_distances[i, j] = results[k].distance
            if self.keep_accentuations:
                self._kept[i, j] = results[k]

    def _finish(self) -> LambdaCalibration:
        """Normalise each image's curve between its extremes, average, and find the crossings."""
        dist, grid = self.distances, self.grid
        lo, hi = dist[:, :1], dist[:, -1:]
        span = lo - hi
        with np.errstate(invalid="ignore", divide="ignore"):
            normalized = np.where(np.abs(span) > 1e-12, (dist - hi) / span, np.nan)
        valid = np.isfinite(normalized).all(1)
        if valid.any():
            mean, std = normalized[valid].mean(0), normalized[valid].std(0)
        else:
            mean = std = np.full(grid.size, np.nan)
        recommended, bracketed = crossing(grid, mean, 0.5)
        upper, ok_hi = crossing(grid, mean, 0.9)
        lower, ok_lo = crossing(grid, mean, 0.1)
        region = (upper if ok_hi else float("nan"), lower if ok_lo else float("nan"))
        kept = (
            [[self._kept[i, j] for j in range(grid.size)] for i in range(len(self.images))]
            if self.keep_accentuations
            else None
        )
        config = with_legacy_keys(self.config, lambdas=grid.tolist(), batch_images=self.batch == "all")
        return LambdaCalibration(
            recommended=recommended,
            bracketed=bracketed,
            sensitive_region=region,
            curve=LambdaCurve(grid, dist, normalized, mean, std, self.crop_distances),
            reg_layer=self.reg_layer,
            targets=[o.description for o in self.objectives],
            config=config,
            accentuations=kept,
            wall_s=time.perf_counter() - self._start,
        )


def calibrate_lambda(
    model: nn.Module | Model,
    images: Any,
    *,
    reg_layer: str | None = None,
    targets: Target | Sequence[Target] | str = "second",
    lambdas: Sequence[float] | None = None,
    batch_images: bool = False,
    return_accentuations: bool = False,
    device: str | torch.device | None = None,
    **engine_settings: Any,
) -> LambdaCalibration:
    """Measure the λ curve of figure 16 and recommend the λ in the middle of the sensitive region.

    Args:
        model: a :class:`~faccent_widget.Model` or a bare ``nn.Module``.
        images: a (N, 3, H, W) tensor, a list of images (anything ``load_image`` accepts) or a dict
            such as ``sample_images()``.
        reg_layer: the regularisation layer (default: the model's default).
        targets: ``"second"`` (default: each image's second most likely class, as in the paper),
            ``"first"``/``"third"``, one target for all images, or a list with one per image.
        lambdas: the λ grid (default :data:`DEFAULT_LAMBDA_GRID`); its smallest and largest values
            are the extremes used for normalisation, so they must be saturated.
        batch_images: run every image × λ as ONE batch (faster on a GPU; seeds are resized to the
            first image's canvas). Default: one batch per image holding all its λ.
        return_accentuations: keep every accentuation (``.accentuations[i][j]``).
        **engine_settings: as for ``accentuate``: ``steps``, ``n_crops``, ``crop_range``,
            ``input_size``, ``canvas``, ``lr``, ``param``, ``noise``, ``balance``, ``preset``,
            ``seed``, ``snapshot_every``, ``autocast``. One random seed (``seed``) is shared by every
            run, so every λ and image sees the same crops.
        device: run on this device (a private copy of the model if it lives elsewhere).

    The distance is measured on the full final image and the seed, resized to the model input, at
    the regularisation layer (mean over positions of the channel L2 norm — the regulariser itself
    without augmentation). Each image's curve is min-max normalised between its values at the
    smallest λ (→ 1) and the largest (→ 0); values outside [0, 1] are kept (noise). Images where the
    two extremes give the same distance are left out of the mean (NaN row).
    """
    calibration = LambdaCalibrationRun(
        model,
        images,
        reg_layer=reg_layer,
        targets=targets,
        lambdas=lambdas,
        batch="all" if batch_images else "image",
        keep_accentuations=return_accentuations,
        device=device,
        **engine_settings,
    )
    calibration.advance()
    return calibration.result()
