"""A minimal Adam whose step count is a Python int, so a step never reads a tensor back to the host.

``torch.optim.Adam`` keeps its step count in a CPU tensor and calls ``.item()`` on it every step
(unless ``capturable``, which is CUDA-only). This one matches its update exactly (see the tests).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

__all__ = ["Adam"]


class Adam:
    """Adam (Kingma & Ba) over a few leaf tensors; bias corrections computed on the host."""

    def __init__(self, params: Sequence[torch.Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.params = list(params)
        self.lr, self.betas, self.eps = float(lr), betas, float(eps)
        self.t = 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        step_size = self.lr / (1 - b1**self.t)
        denom_scale = math.sqrt(1 - b2**self.t)
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is None:
                continue
            g = p.grad
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            p.addcdiv_(m, (v.sqrt() / denom_scale).add_(self.eps), value=-step_size)
