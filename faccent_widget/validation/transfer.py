"""Transferability: do accentuations show features, or a trick only the optimised model falls for?

An accentuation toward a class raises that class's probability on the model it was optimised with;
so would an adversarial perturbation. The MACO benchmark's test (Fel et al. 2023, arXiv 2306.06805)
tells the two apart: score the result on *judge* models that never saw the optimisation. Here, for
each accentuation, the target's full-image log-probability gain (accentuation minus seed) on the
optimised model and on every judge, the judges' top-1 hits on the target, and the same numbers for a
matched-strength baseline: a plain gradient attack on the optimised model's full image that stops
once it reaches the accentuation's own gain there. A transfer ratio (judge gain / optimised gain)
near 1 says the judges see what the optimised model sees; the attack gives the floor to read it against.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..core.engine import Accentuation
from ..core.model import Model, as_model
from ..core.objectives import Logit
from ..images import resize_image

__all__ = ["Transferability", "attack_to_gain", "transferability"]


def _log_probs(model: Model, images: torch.Tensor, classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p(class), top-1 index) of each full image (the model view: resized to the model's input)."""
    with torch.no_grad():
        logits = model.logits(model.to_input(images.to(model.device))).float()
    logp = logits.log_softmax(-1)
    return logp.gather(1, classes.to(logp.device)[:, None])[:, 0].cpu(), logits.argmax(-1).cpu()


def attack_to_gain(
    model: Model,
    seeds: torch.Tensor,
    classes: Sequence[int],
    gains: Sequence[float],
    *,
    step: float = 1 / 255,
    max_steps: int = 200,
) -> torch.Tensor:
    """A plain gradient attack matched in strength to given gains: signed-gradient ascent on the
    full image's log p(class) of ``model`` (the baseline of :func:`transferability`).

    Each image takes steps of ``step`` on every pixel (sign of the gradient, clamped to [0, 1]) until its
    log-probability gain over the seed reaches its entry in ``gains`` (the last step is bisected to land
    on it), or ``max_steps``. The forward pass that gives a step's gradient also gives the gain the
    previous step reached, so a step costs one forward and one backward pass (no separate check).

    Returns:
        The attacked images, (N, 3, H, W) on the CPU.
    """
    target = torch.as_tensor(list(classes), dtype=torch.long)
    want = torch.as_tensor(list(gains), dtype=torch.float32)
    seed_logp, _ = _log_probs(model, seeds, target)
    x = seeds.detach().clone().to(model.device).float()
    before = x.clone()  # each image before its last step
    size = model.input_hw

    def gain_of(images: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return _log_probs(model, images, target[rows])[0] - seed_logp[rows]

    active = torch.ones(len(x), dtype=torch.bool)
    with torch.enable_grad():
        for taken in range(max_steps + 1):
            rows = active.nonzero()[:, 0]
            if not len(rows):
                break
            xa = x[rows].detach().requires_grad_(True)
            # the model view's resize, differentiable (Model.to_input detaches)
            logits = model.logits(resize_image(xa, size)).float()
            logp = logits.log_softmax(-1).gather(1, target[rows].to(logits.device)[:, None])[:, 0]
            gained = logp.detach().cpu() - seed_logp[rows]
            # the seed itself is never the answer: at least one step is taken, as asked gains are > 0
            crossed = gained >= want[rows] if taken else torch.zeros(len(rows), dtype=torch.bool)
            if crossed.any():
                sub = rows[crossed]
                x[sub] = _land(gain_of, before[sub], x[sub], want[sub], sub)
                active[sub] = False
            going = ~crossed
            if taken == max_steps or not going.any():
                break
            (grad,) = torch.autograd.grad(logp[going].sum(), xa)
            moving = rows[going]
            before[moving] = x[moving]
            x[moving] = (xa[going] + step * grad[going].sign()).clamp(0, 1).detach()
    return x.cpu()


def _land(
    gain_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    start: torch.Tensor,
    end: torch.Tensor,
    want: torch.Tensor,
    rows: torch.Tensor,
) -> torch.Tensor:
    """The point along start → end (a step that crossed the wanted gain) where the gain reaches ``want``:
    8 bisections of the step, keeping the end that reached it."""
    lo, hi = torch.zeros(len(rows)), torch.ones(len(rows))
    for _ in range(8):
        mid = (lo + hi) / 2
        reached = gain_of(_along(start, end, mid), rows) >= want
        hi = torch.where(reached, mid, hi)
        lo = torch.where(reached, lo, mid)
    return _along(start, end, hi)


def _along(start: torch.Tensor, end: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return start + t.view(-1, 1, 1, 1).to(start) * (end - start)


@dataclass(frozen=True)
class Transferability:
    """Per-item numbers of :func:`transferability` (arrays of length N) and their summaries.

    Attributes:
        judges: the judge models' names.
        classes: the target class of each item.
        gain: the target's log-probability gain (final − seed, full image) on the optimised model.
        judge_gain: the same gain on each judge, by name.
        judge_top1: whether each judge's top-1 class on the accentuation is the target, by name.
        rmse: the accentuation's RMSE to its seed (pixels in [0, 1]).
        attack_gain, attack_judge_gain, attack_judge_top1, attack_rmse: the same for the baseline.
    """

    judges: list[str]
    classes: np.ndarray
    gain: np.ndarray
    judge_gain: dict[str, np.ndarray]
    judge_top1: dict[str, np.ndarray]
    rmse: np.ndarray
    attack_gain: np.ndarray
    attack_judge_gain: dict[str, np.ndarray]
    attack_judge_top1: dict[str, np.ndarray]
    attack_rmse: np.ndarray

    def ratio(self, judge: str | None = None, *, attack: bool = False) -> float:
        """Mean judge gain over mean optimised gain (all judges pooled when ``judge`` is None)."""
        gains = self.attack_judge_gain if attack else self.judge_gain
        own = self.attack_gain if attack else self.gain
        names = [judge] if judge is not None else self.judges
        return float(np.mean([gains[n].mean() for n in names]) / max(float(own.mean()), 1e-12))

    def top1(self, judge: str | None = None, *, attack: bool = False) -> float:
        """Share of items the judge(s) classify as the target (pooled when ``judge`` is None)."""
        hits = self.attack_judge_top1 if attack else self.judge_top1
        names = [judge] if judge is not None else self.judges
        return float(np.mean([hits[n].mean() for n in names]))

    def table(self) -> str:
        """A Markdown table: accentuation vs attack, per judge and pooled."""
        rows = [
            "| | optimised gain | RMSE | "
            + " | ".join(f"{n} gain (ratio, top-1)" for n in self.judges)
            + " | pooled ratio | pooled top-1 |",
            "|---|---|---|" + "---|" * len(self.judges) + "---|---|",
        ]
        for attack, name in ((False, "accentuation"), (True, "gradient attack (matched gain)")):
            own = self.attack_gain if attack else self.gain
            rmse = self.attack_rmse if attack else self.rmse
            gains = self.attack_judge_gain if attack else self.judge_gain
            cells = [
                f"{gains[n].mean():+.2f} ({self.ratio(n, attack=attack):.2f}, {self.top1(n, attack=attack):.0%})"
                for n in self.judges
            ]
            rows.append(
                f"| {name} | {own.mean():+.2f} | {rmse.mean():.3f} | "
                + " | ".join(cells)
                + f" | {self.ratio(attack=attack):.2f} | {self.top1(attack=attack):.0%} |"
            )
        return "\n".join(rows)

    def __repr__(self) -> str:
        return (
            f"Transferability({len(self.classes)} items, judges={self.judges}, ratio={self.ratio():.2f} "
            f"(attack {self.ratio(attack=True):.2f}), top-1 {self.top1():.0%} (attack {self.top1(attack=True):.0%}))"
        )


def _class_of(result: Accentuation) -> int:
    if not isinstance(result.objective, Logit):
        raise ValueError(
            f"transferability needs class targets (a label or class index); this result's target is "
            f"{result.objective.description}"
        )
    return result.objective.index


def transferability(
    model: nn.Module | Model,
    results: Sequence[Accentuation],
    judges: Mapping[str, nn.Module | Model] | Sequence[Model],
    *,
    attack_step: float = 1 / 255,
    attack_max_steps: int = 200,
) -> Transferability:
    """Score accentuations made with ``model`` on judge models that never saw the optimisation.

    Args:
        model: the model the accentuations were optimised with.
        results: accentuations toward classes (``fw.accentuate`` results; a list or a batch).
        judges: other classifiers over the same classes, by name or as a list of :class:`Model`
            (their ``name`` is used), e.g. ``[load_model("efficientnet_lite1"), load_model("efficientnet_lite2")]``.
        attack_step, attack_max_steps: the matched-strength gradient attack (:func:`attack_to_gain`).

    Returns:
        A :class:`Transferability` with per-item gains, top-1 hits and RMSE for the accentuations and for
        the attack baseline; ``.table()`` prints them.
    """
    model = as_model(model)
    results = list(results)
    if not results:
        raise ValueError("transferability needs at least one accentuation result")
    named = dict(judges) if isinstance(judges, Mapping) else {as_model(j).name: j for j in judges}
    if not named:
        raise ValueError("transferability needs at least one judge model")
    judge_models = {name: as_model(j) for name, j in named.items()}
    for name, judge in judge_models.items():
        if judge.num_classes != model.num_classes:
            raise ValueError(
                f"judge {name!r} has {judge.num_classes} classes, the optimised model {model.num_classes}: "
                "judges must classify the same classes"
            )
    classes = torch.tensor([_class_of(r) for r in results])
    shapes = {tuple(r.seed.shape) for r in results}
    groups = [[i for i, r in enumerate(results) if tuple(r.seed.shape) == s] for s in shapes]

    n = len(results)
    gain, rmse, attack_gain, attack_rmse = (np.zeros(n) for _ in range(4))
    judge_gain = {name: np.zeros(n) for name in judge_models}
    judge_top1 = {name: np.zeros(n, dtype=bool) for name in judge_models}
    attack_judge_gain = {name: np.zeros(n) for name in judge_models}
    attack_judge_top1 = {name: np.zeros(n, dtype=bool) for name in judge_models}
    for idx in groups:  # images of one size go through together
        seeds = torch.stack([results[i].seed for i in idx]).float()
        images = torch.stack([results[i].image for i in idx]).float()
        cls = classes[idx]
        seed_logp, _ = _log_probs(model, seeds, cls)
        final_logp, _ = _log_probs(model, images, cls)
        own_gain = final_logp - seed_logp
        attacked = attack_to_gain(
            model, seeds, cls.tolist(), own_gain.tolist(), step=attack_step, max_steps=attack_max_steps
        )
        attacked_logp, _ = _log_probs(model, attacked, cls)
        gain[idx] = own_gain.numpy()
        attack_gain[idx] = (attacked_logp - seed_logp).numpy()
        rmse[idx] = (images - seeds).pow(2).mean(dim=(1, 2, 3)).sqrt().numpy()
        attack_rmse[idx] = (attacked - seeds).pow(2).mean(dim=(1, 2, 3)).sqrt().numpy()
        for name, judge in judge_models.items():
            j_seed, _ = _log_probs(judge, seeds, cls)
            j_final, j_top = _log_probs(judge, images, cls)
            j_attack, j_attack_top = _log_probs(judge, attacked, cls)
            judge_gain[name][idx] = (j_final - j_seed).numpy()
            judge_top1[name][idx] = (j_top == cls).numpy()
            attack_judge_gain[name][idx] = (j_attack - j_seed).numpy()
            attack_judge_top1[name][idx] = (j_attack_top == cls).numpy()
    if not all(math.isfinite(v) for v in gain):
        raise ValueError("a result's log-probability is not finite; check the results and the model")
    return Transferability(
        judges=list(judge_models),
        classes=classes.numpy(),
        gain=gain,
        judge_gain=judge_gain,
        judge_top1=judge_top1,
        rmse=rmse,
        attack_gain=attack_gain,
        attack_judge_gain=attack_judge_gain,
        attack_judge_top1=attack_judge_top1,
        attack_rmse=attack_rmse,
    )
