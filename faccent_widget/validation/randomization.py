"""The cascading-randomization sanity check (appendix D; Adebayo et al., 2018).

An explanation of a logit should change when the network's weights are randomised. Starting from
the top, the last k parameterised modules (in execution order) of a *private deep copy* of the model
are re-initialised, k growing; at every depth the same image is accentuated toward the same
targets (one batch per depth, the same random seed so every depth sees the same crops), and each
accentuation is compared with the one of the intact model.

Scores (per depth and target; 1 = identical to the intact model's accentuation):

* ``ssim_diff`` — ``.scores``, the headline number, as in Adebayo et al.: SSIM between the
  *difference images* (accentuation − seed) of the randomised and the intact model, i.e. between
  the changes the two explanations make. ``data_range`` is the peak-to-peak range of the intact
  model's difference image (per target), so a model that stops changing the image does not score 1.
* ``corr_diff``: Pearson correlation of the two difference images (flattened). It falls to ≈ 0 when
  the randomised model stops changing the image, where SSIM keeps a floor of ≈ 0.15–0.2 (flat
  regions of the reference then count as "similar").
* ``corr_specific`` (needs ≥ 2 targets): Pearson correlation of the *target-specific* difference
  images: each difference image minus the mean difference image over the targets of its run.
* ``ssim_image``: SSIM of the accentuated images themselves (data range 1); dominated by the shared
  seed, so it stays high.
* ``path``: path similarity (mean over layers, paired) of the two accentuations through the
  *intact* model.
* ``change``: mean |accentuation − seed| per pixel (how much the image was altered at all).

``baseline`` holds the same scores for the intact model rerun with another random seed: the noise
floor of each measure (crop sampling alone). Read the scores against it.

How to read them: accentuations of one image share a large generic, target-independent component,
so ``ssim_diff``/``corr_diff`` fall to about the baseline at every depth, and near 0 once every layer
is randomised (the regulariser then dominates and the image stops changing, as appendix D observes).
``corr_specific`` separates the intact rerun from the randomised depths: use it, with ≥ 2 targets,
to decide whether the target-specific part of the explanation depends on the weights (numbers in the
README's validation section).
"""

from __future__ import annotations

import copy
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..accentuate import run_to_end, start_run
from ..core.config import DEFAULT_LAMBDA, EngineConfig
from ..core.engine import Accentuation
from ..core.model import Model, as_model
from ..core.objectives import Objective, Target, resolve_objective
from ._common import validation_config
from .paths import path_similarity

__all__ = [
    "RandomizationCheck",
    "randomization_check",
    "parameterized_layers",
    "randomize_",
    "default_depths",
    "difference_ssim",
    "difference_correlation",
    "specific_correlation",
]


@dataclass
class RandomizationCheck:
    """Result of :func:`randomization_check`.

    Attributes:
        depths: numbers of randomised modules, ascending, starting with 0 (the intact model).
        layers: the parameterised modules in execution order (the last ``k`` are randomised at depth k).
        targets: target descriptions.
        accentuations: depth → one accentuation per target.
        ssim_diff, corr_diff, corr_specific, ssim_image, path, change: depth → per-target scores (np arrays); see the module doc.
        baseline: the same scores for the intact model with another random seed (noise floor).
        baseline_accentuations: those accentuations.
        config: resolved engine settings.
        wall_s: wall time.
    """

    depths: list[int]
    layers: list[str]
    targets: list[str]
    accentuations: dict[int, list[Accentuation]] = field(repr=False)
    ssim_diff: dict[int, np.ndarray]
    corr_diff: dict[int, np.ndarray]
    corr_specific: dict[int, np.ndarray]
    ssim_image: dict[int, np.ndarray]
    path: dict[int, np.ndarray]
    change: dict[int, np.ndarray]
    baseline: dict[str, np.ndarray] | None = None
    baseline_accentuations: list[Accentuation] | None = field(default=None, repr=False)
    config: EngineConfig = field(default_factory=EngineConfig, repr=False)
    wall_s: float = 0.0

    def randomized(self, depth: int) -> list[str]:
        """The modules re-initialised at ``depth`` (top of the network first)."""
        return list(reversed(self.layers[len(self.layers) - depth :])) if depth else []

    @property
    def scores(self) -> dict[int, float]:
        """Headline score per depth: mean SSIM of the difference images (1 = unchanged explanation);
        compare with ``baseline["ssim_diff"]`` and see ``corr_specific`` (module docstring)."""
        return {k: float(np.mean(v)) for k, v in self.ssim_diff.items()}

    def table(self) -> str:
        lines = [
            f"{'depth':>5s}  {'randomised from':<28s} {'SSIM(diff)':>10s} {'ρ(diff)':>8s} {'ρ(specific)':>11s} {'SSIM(img)':>10s} "  # noqa: E501
            f"{'path':>7s} {'mean|Δ|':>8s}"
        ]
        for k in self.depths:
            first = self.randomized(k)[-1] if k else "(intact)"
            lines.append(
                f"{k:>5d}  {first:<28s} {np.mean(self.ssim_diff[k]):>10.3f} {np.mean(self.corr_diff[k]):>8.3f} "
                f"{np.mean(self.corr_specific[k]):>11.3f} {np.mean(self.ssim_image[k]):>10.3f} {np.mean(self.path[k]):>7.3f} {np.mean(self.change[k]):>8.4f}"  # noqa: E501
            )
        if self.baseline is not None:
            b = self.baseline
            lines.append(
                f"{'seed':>5s}  {'(intact, other random seed)':<28s} {np.mean(b['ssim_diff']):>10.3f} "
                f"{np.mean(b['corr_diff']):>8.3f} {np.mean(b['corr_specific']):>11.3f} {np.mean(b['ssim_image']):>10.3f} {np.mean(b['path']):>7.3f} "  # noqa: E501
                f"{np.mean(b['change']):>8.4f}"
            )
        return "\n".join(lines)


def parameterized_layers(model: Model) -> list[str]:
    """Modules that own parameters (convolutions, linears, norms, …) or running statistics (norms
    without affine parameters), in execution order. Modules that never run in a forward pass are
    left out."""
    named = dict(model.module.named_modules())
    owners = [
        n
        for n, m in named.items()
        if n and (any(True for _ in m.parameters(recurse=False)) or callable(getattr(m, "reset_running_stats", None)))
    ]
    called = []
    for n in owners:
        try:
            model.execution_order([n])
        except ValueError:
            continue
        called.append(n)
    return model.execution_order(called)


def _reinit(module: nn.Module) -> None:
    reset = getattr(module, "reset_parameters", None)
    if callable(reset):
        reset()
        return
    for p in module.parameters(recurse=False):
        if p.dim() > 1:
            nn.init.kaiming_normal_(p)
        else:
            nn.init.normal_(p, std=0.02)


def randomize_(module: nn.Module, names: Sequence[str], seed: int) -> None:
    """Re-initialise the named sub-modules of ``module`` in place: ``reset_parameters()`` where the
    module has it (norm layers also reset their running statistics), else Kaiming-normal weights and
    N(0, 0.02) vectors. Each module is seeded from ``seed`` and its name, so a module gets the same
    weights whichever depth list is used; the global RNG state is left as it was."""
    named = dict(module.named_modules())
    devices = [p.device for p in module.parameters() if p.device.type == "cuda"][:1]
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        for n in names:
            torch.manual_seed((int(seed) * 1_000_003 + zlib.crc32(n.encode())) % (2**63))
            _reinit(named[n])


def default_depths(model: Model, layers: Sequence[str], n_levels: int = 4) -> list[int]:
    """A cascade of depths snapped to block boundaries: the last layer only, then about 1/4, 1/2,
    3/4 and all of the parameterised modules, each rounded to where a top-level block starts."""
    n = len(layers)
    blocks = getattr(model, "block_layers", []) or []
    starts = {n}
    for b in blocks:
        inside = [i for i, name in enumerate(layers) if name == b or name.startswith(b + ".")]
        if inside:
            starts.add(n - min(inside))
    candidates = sorted(starts)
    depths = {1}
    for f in np.linspace(0, 1, n_levels + 1)[1:]:
        depths.add(min(candidates, key=lambda c: abs(c - f * n)))
    return sorted(d for d in depths if 0 < d <= n)


def _resolve_depths(depths: Sequence[int | str] | None, model: Model, layers: list[str]) -> list[int]:
    if depths is None:
        return default_depths(model, layers)
    n, out = len(layers), set()
    for d in depths:
        if isinstance(d, str):
            name = model.resolve_layer(d)
            inside = [i for i, l in enumerate(layers) if l == name or l.startswith(name + ".")]
            if not inside:
                raise ValueError(f"layer {d!r} holds no parameterised module that runs in a forward pass")
            out.add(n - min(inside))
        elif isinstance(d, (int, np.integer)) and not isinstance(d, bool):
            if not 0 <= int(d) <= n:
                raise ValueError(f"depth {d} is out of range: the model has {n} parameterised modules")
            out.add(int(d))
        else:
            raise TypeError(f"a depth is a number of modules (int) or a layer name to randomise from, got {d!r}")
    return sorted(out - {0})


def _hwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().permute(1, 2, 0).numpy()


def difference_ssim(seed: torch.Tensor, reference: torch.Tensor, other: torch.Tensor) -> float:
    """SSIM of ``other − seed`` against ``reference − seed`` (3, H, W), with the data range of the
    reference difference (peak to peak)."""
    from skimage.metrics import structural_similarity

    d_ref, d_other = _hwc(reference - seed), _hwc(other - seed)
    data_range = float(d_ref.max() - d_ref.min()) or 1e-6
    return float(structural_similarity(d_ref, d_other, channel_axis=2, data_range=data_range))


def difference_correlation(seed: torch.Tensor, reference: torch.Tensor, other: torch.Tensor) -> float:
    """Pearson correlation of ``other − seed`` with ``reference − seed`` (flattened; 0 if either is flat)."""
    a = (reference - seed).double().flatten()
    b = (other - seed).double().flatten()
    a, b = a - a.mean(), b - b.mean()
    den = float(a.norm() * b.norm())
    return float(a @ b) / den if den > 0 else 0.0


def specific_correlation(reference: Sequence[Accentuation], results: Sequence[Accentuation]) -> np.ndarray:
    """Per target, Pearson ρ between the target-specific difference images of two runs over the same
    targets: (accentuation − seed) minus its mean over the run's targets. NaN with a single target."""
    if len(reference) < 2:
        return np.full(len(reference), np.nan)

    def specific(accs: Sequence[Accentuation]) -> torch.Tensor:
        d = torch.stack([a.image - a.seed for a in accs]).double().flatten(1)
        d = d - d.mean(0, keepdim=True)
        return d - d.mean(1, keepdim=True)

    a, b = specific(reference), specific(results)
    den = a.norm(dim=1) * b.norm(dim=1)
    return torch.where(den > 0, (a * b).sum(1) / den.clamp_min(1e-300), torch.zeros_like(den)).numpy()


def _image_ssim(reference: torch.Tensor, other: torch.Tensor) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(_hwc(reference), _hwc(other), channel_axis=2, data_range=1.0))


def _scores(model: Model, reference: list[Accentuation], results: list[Accentuation]) -> dict[str, np.ndarray]:
    ssim_d = np.array([difference_ssim(r.seed, r.image, a.image) for r, a in zip(reference, results)])
    corr_d = np.array([difference_correlation(r.seed, r.image, a.image) for r, a in zip(reference, results)])
    corr_s = specific_correlation(reference, results)
    ssim_i = np.array([_image_ssim(r.image, a.image) for r, a in zip(reference, results)])
    sim = path_similarity(model, results, reference, paired=True)
    pairs = np.stack([np.diag(sim.pairs[n]) for n in sim.layers])  # (layers, targets)
    path = np.nanmean(pairs, axis=0)
    change = np.array([float((a.image - a.seed).abs().mean()) for a in results])
    return {
        "ssim_diff": ssim_d,
        "corr_diff": corr_d,
        "corr_specific": corr_s,
        "ssim_image": ssim_i,
        "path": path,
        "change": change,
    }


def randomization_check(
    model: nn.Module | Model,
    image: Any,
    targets: Target | Sequence[Target] | None = None,
    *,
    depths: Sequence[int | str] | None = None,
    lam: float | None = None,
    reg_layer: str | None = None,
    baseline: bool = True,
    device: str | torch.device | None = None,
    **engine_settings: Any,
) -> RandomizationCheck:
    """Cascading randomization: accentuate ``image`` toward ``targets`` with more and more of the
    top of the network re-initialised, and score how much the accentuation changes.

    Args:
        model: a :class:`~faccent_widget.Model` or a bare ``nn.Module``; it is never modified (a
            deep copy of its network is randomised).
        image: one image (anything ``load_image`` accepts).
        targets: one or several targets (one batch per depth); ``None`` = the intact model's top 4
            classes for the image (as in the paper's figure 15).
        depths: numbers k of parameterised modules to re-initialise, from the top (execution order),
            or layer names meaning "from this layer up"; default :func:`default_depths`.
        lam: λ (default ``DEFAULT_LAMBDA``; the paper uses 0.1).
        reg_layer: regularisation layer (default: the model's default), the same at every depth.
        baseline: also run the intact model with another random seed (noise floor of the scores).
        device: run on this device (a private copy of the model if it lives elsewhere).
        **engine_settings: as for ``accentuate`` (``steps``, ``n_crops``, ``preset``, ``seed``, …).
    """
    start = time.perf_counter()
    if isinstance(image, (list, tuple)) or (
        isinstance(image, torch.Tensor) and image.dim() == 4 and image.shape[0] != 1
    ):
        raise ValueError("randomization_check takes ONE image (use several targets to batch)")
    model = as_model(model, device=device)
    config = validation_config(model, reg_layer, engine_settings)  # one seed, final images, reg layer
    if targets is None:
        with torch.no_grad():
            logits = model.features(model.to_input(image), logits=True)["logits"][0]
        targets = [int(i) for i in logits.float().topk(min(4, logits.numel())).indices]
    target_list = list(targets) if isinstance(targets, (list, tuple)) else [targets]
    if not target_list:
        raise ValueError("targets is empty")
    objectives: list[Objective] = [resolve_objective(model, t) for t in target_list]  # type: ignore[arg-type]
    layers = parameterized_layers(model)
    if not layers:
        raise ValueError("the model has no parameterised module to randomise")
    depth_list = _resolve_depths(depths, model, layers)
    lam_value = DEFAULT_LAMBDA if lam is None else lam
    seed = int(config.seed or 0)

    def run(m: Model, rng_seed: int = seed) -> list[Accentuation]:
        return run_to_end(start_run(m, image, objectives, lam=lam_value, config=config, seed=rng_seed))

    reference = run(model)
    accents = {0: reference}
    scores = {0: _scores(model, reference, reference)}
    base, other = None, None
    if baseline:
        other = run(model, (seed + 1) % (2**31))
        base = _scores(model, reference, other)
    net = copy.deepcopy(model.module)
    done = 0
    for k in depth_list:
        n = len(layers)
        randomize_(net, layers[n - k : n - done], seed)
        done = k
        accents[k] = run(model.with_module(net, name=f"{model.name} (randomised)"))
        scores[k] = _scores(model, reference, accents[k])
    all_depths = [0, *depth_list]
    config = reference[0].config  # the run's (with the legacy config["lam"])
    return RandomizationCheck(
        depths=all_depths,
        layers=layers,
        targets=[o.description for o in objectives],
        accentuations=accents,
        ssim_diff={k: scores[k]["ssim_diff"] for k in all_depths},
        corr_diff={k: scores[k]["corr_diff"] for k in all_depths},
        corr_specific={k: scores[k]["corr_specific"] for k in all_depths},
        ssim_image={k: scores[k]["ssim_image"] for k in all_depths},
        path={k: scores[k]["path"] for k in all_depths},
        change={k: scores[k]["change"] for k in all_depths},
        baseline=base,
        baseline_accentuations=other,
        config=config,
        wall_s=time.perf_counter() - start,
    )
