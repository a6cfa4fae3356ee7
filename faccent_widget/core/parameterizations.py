"""Image parameterizations: seed → parameters → image in [0, 1].

All three work in logit space with Lucid's colour decorrelation, and their initialisation reproduces
the seed exactly (up to float error): ``Fourier`` (default, 1/f-scaled spectrum, desaturation 5),
``Pixel`` and ``MACO`` (phase only; the magnitude stays the seed's spectrum).

Saturated pixels: the logit of 0 or 1 is infinite and the sigmoid's slope there is 0, so a black or
white pixel would never move. The seed is therefore clamped into ``[SATURATION_MARGIN,
1 − SATURATION_MARGIN]`` before the logit (slope ≈ the margin instead of ≈ 0), and an additive offset
image ``seed − image(params₀)``, fixed at initialisation, restores the exact seed at step 0::

    image = sigmoid(recorrelate(params)) + (seed − sigmoid(recorrelate(params₀)))

The offset is 0 except where the seed lies within the margin of 0 or 1 (there it is at most the
margin in size). Such pixels could overshoot [0, 1] by up to the margin, so the image is clamped to
[0, 1] with a straight-through gradient: the model sees exactly the image the user gets.
"""

from __future__ import annotations

import functools

import torch

__all__ = [
    "Parameterization",
    "Fourier",
    "Pixel",
    "Maco",
    "PARAMETERIZATIONS",
    "make_parameterization",
    "SATURATION_MARGIN",
]

# Lucid's colour_correlation_svd_sqrt, normalised by its largest column norm.
_SVD_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=torch.float64)
COLOR_CORRELATION = (_SVD_SQRT / _SVD_SQRT.norm(dim=0).max()).float()
DESATURATION = 5.0
#: Seeds are clamped into [margin, 1 − margin] before the logit, so that black and white pixels move
#: (the sigmoid's slope there is ≈ margin); the offset image keeps the seed exact (module docstring).
SATURATION_MARGIN = 0.1


@functools.lru_cache(maxsize=16)
def _color_matrix(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The colour matrix on ``device``, copied there once: a host→device copy every step would
    synchronise a CUDA step with the host."""
    with torch.inference_mode(False):
        return COLOR_CORRELATION.to(device, dtype)


def _recorrelate(x: torch.Tensor) -> torch.Tensor:
    """Decorrelated → RGB logits (channel mix by the colour matrix)."""
    return torch.einsum("dc,bchw->bdhw", _color_matrix(x.device, x.dtype), x)


def _decorrelate(x: torch.Tensor) -> torch.Tensor:
    inv = torch.linalg.inv(COLOR_CORRELATION.double()).to(x.device, x.dtype)
    return torch.einsum("dc,bchw->bdhw", inv, x)


def _logit(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(SATURATION_MARGIN, 1 - SATURATION_MARGIN)
    return torch.log(x) - torch.log1p(-x)


class Parameterization:
    """Base: ``params`` (leaf tensors to optimise) and ``image()`` → (B, 3, H, W), the seed at step 0.

    Subclasses build ``params`` from the (margin-clamped) seed, implement ``_squashed()`` (the sigmoid
    image of the parameters) and call ``_fix_offset(seed)`` at the end of ``__init__``.
    """

    name = "base"
    params: list[torch.Tensor]
    offset: torch.Tensor | None = None

    def __init__(self, seed: torch.Tensor) -> None:
        if seed.dim() != 4 or seed.shape[1] != 3:
            raise ValueError(f"seed must be a (B, 3, H, W) batch in [0, 1], got {tuple(seed.shape)}")
        self.shape = tuple(seed.shape)
        _color_matrix(seed.device, torch.float32)  # copied to the device now, not inside the first step

    def _squashed(self) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _fix_offset(self, seed: torch.Tensor) -> None:
        """Fix ``offset = seed − sigmoid image of the initial parameters`` (exact seed at step 0)."""
        with torch.no_grad():
            self.offset = (seed.float() - self._squashed()).contiguous()

    def image(self) -> torch.Tensor:
        """The current image (B, 3, H, W) in [0, 1] (the seed at step 0; see the module docstring)."""
        x = self._squashed()
        if self.offset is None:
            return x
        x = x + self.offset
        # values are clamped to [0, 1], the gradient passes as if unclamped (straight through), so a
        # pixel pushed past black or white can come back
        return x + (x.detach().clamp(0, 1) - x.detach())


def _spectrum_scale(h: int, w: int, decay_power: float, device: torch.device) -> torch.Tensor:
    fy = torch.fft.fftfreq(h, device=device)[:, None]
    fx = torch.fft.rfftfreq(w, device=device)[None, :]
    freqs = torch.sqrt(fx * fx + fy * fy)
    return (1.0 / torch.clamp(freqs, min=1.0 / max(h, w)) ** decay_power)[None, None, :, :, None]


class Fourier(Parameterization):
    """Lucid-style Fourier parameterization: logit → decorrelate → ×5 → rFFT (ortho) ÷ 1/f scale."""

    name = "fourier"

    def __init__(self, seed: torch.Tensor, decay_power: float = 1.0) -> None:
        super().__init__(seed)
        _, _, h, w = self.shape
        self.scale = _spectrum_scale(h, w, decay_power, seed.device)
        spectrum = torch.fft.rfft2(_decorrelate(_logit(seed.float())) * DESATURATION, norm="ortho")
        self.params = [(torch.view_as_real(spectrum) / self.scale).contiguous().requires_grad_(True)]
        self._fix_offset(seed)

    @classmethod
    def random(
        cls,
        shape: tuple[int, int, int, int],
        *,
        sd: float = 0.01,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> Fourier:
        """Noise-seeded init (classic feature visualisation): small random spectrum."""
        self = cls(torch.full(shape, 0.5, device=device))
        with torch.no_grad():
            noise = torch.randn(self.params[0].shape, generator=generator, device=device)
            self.params[0].copy_(noise * sd)
        self.offset = None  # the noise image itself is the seed
        return self

    def _squashed(self) -> torch.Tensor:
        _, _, h, w = self.shape
        spectrum = torch.view_as_complex(self.params[0] * self.scale)
        x = torch.fft.irfft2(spectrum, s=(h, w), norm="ortho") / DESATURATION
        return torch.sigmoid(_recorrelate(x))


class Pixel(Parameterization):
    """Pixel parameterization in decorrelated logit space (×5, as in the reference library)."""

    name = "pixel"

    def __init__(self, seed: torch.Tensor) -> None:
        super().__init__(seed)
        self.params = [(_decorrelate(_logit(seed.float())) * DESATURATION).contiguous().requires_grad_(True)]
        self._fix_offset(seed)

    def _squashed(self) -> torch.Tensor:
        return torch.sigmoid(_recorrelate(self.params[0] / DESATURATION))


class Maco(Parameterization):
    """MACO: optimise only the phase of the (decorrelated logit) spectrum; magnitude fixed to the seed's."""

    name = "maco"

    def __init__(self, seed: torch.Tensor) -> None:
        super().__init__(seed)
        spectrum = torch.fft.rfft2(_decorrelate(_logit(seed.float())) * DESATURATION, norm="ortho")
        self.magnitude = spectrum.abs()
        self.params = [torch.angle(spectrum).contiguous().requires_grad_(True)]
        self._fix_offset(seed)

    def _squashed(self) -> torch.Tensor:
        _, _, h, w = self.shape
        phase = self.params[0]
        spectrum = torch.polar(self.magnitude, phase)
        x = torch.fft.irfft2(spectrum, s=(h, w), norm="ortho") / DESATURATION
        return torch.sigmoid(_recorrelate(x))


PARAMETERIZATIONS: dict[str, type[Parameterization]] = {"fourier": Fourier, "pixel": Pixel, "maco": Maco}


def make_parameterization(name: str, seed: torch.Tensor) -> Parameterization:
    """Build the parameterization ``name`` ("fourier", "pixel" or "maco") initialised at ``seed``."""
    key = name.lower()
    if key not in PARAMETERIZATIONS:
        raise ValueError(f"unknown parameterization {name!r}; choose one of {', '.join(PARAMETERIZATIONS)}")
    return PARAMETERIZATIONS[key](seed)
