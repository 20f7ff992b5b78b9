"""Recorrupted2Recorrupted (Pang et al. 2021) and its generalisation GR2R (Monroy, Bacca & Tachella, CVPR 2025).

From one measurement ``y`` draw a pair ``(y1, y2)`` that, for fixed ``x``, are
independent and both have mean ``A x``; then ``L = ||y2 - A f(y1, A)||² / m``
and ``E[L] = E||A f(y1) - A x||² / m + E||y2 - A x||² / m``.
With ``α ∈ (0, 1)``:

| noise | ``y1`` | ``ω`` | ``y2 = (y - (1-α) y1) / α`` | constant ``E||y2 - Ax||²/m`` |
|---|---|---|---|---|
| Gaussian ``N(z, σ²)`` | ``y + sqrt(α/(1-α)) ω`` | ``N(0, σ²I)`` | ``y - sqrt((1-α)/α) ω`` | ``σ²/α`` |
| Poisson ``γ P(z/γ)`` | ``(y - γω)/(1-α)`` | ``Bin(y/γ, α)`` | ``γω/α`` | ``γ mean(z)/α`` |
| Gamma ``G(ℓ, ℓ/z)`` | ``y∘(1-ω)/(1-α)`` | ``Beta(ℓα, ℓ(1-α))`` | ``y∘ω/α`` | ``mean(z²)/(ℓα)`` |

(binomial thinning of a Poisson variable and Beta splitting of a Gamma variable
give independent parts.) The test-time estimator averages ``N`` recorruptions,
``f_test(y) = (1/N) Σ_i f(y1_i)``. Any physics whose noise acts entry-wise on
``A x`` (the loss lives in the measurement domain; image-domain risk for
invertible ``A``).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from selfinv.losses.base import Estimator, Loss, LossConfigError, Reconstructor, default_test_generator
from selfinv.physics.base import Physics
from selfinv.utils import rng


class R2R(Loss):
    """(Generalised) Recorrupted2Recorrupted loss ``||y2 - A f(y1, A)||² / m``.

    Args:
        noise: ``"gaussian"``, ``"poisson"`` or ``"gamma"``; must match ``physics.noise``.
        alpha: split parameter ``α ∈ (0, 1)`` (larger α: noisier input ``y1``).
        n_test: number ``N`` of recorruptions averaged by ``estimator``.
    """

    evaluates_measurement = False  # never evaluates f(y, A) on the raw measurement
    custom_estimator = True

    #: assumes pixel-wise independent noise (``Loss.tolerated_noise_correlation``)
    tolerated_noise_correlation: int | None = 0

    def __init__(self, noise: Literal["gaussian", "poisson", "gamma"] = "gaussian", alpha: float = 0.15,
                 n_test: int = 8):
        super().__init__()
        if noise not in ("gaussian", "poisson", "gamma"):
            raise LossConfigError(f"R2R noise must be 'gaussian', 'poisson' or 'gamma', got {noise!r}")
        if not 0 < alpha < 1:
            raise LossConfigError(f"R2R alpha must be in (0, 1), got {alpha}")
        if n_test < 1:
            raise LossConfigError(f"n_test must be >= 1, got {n_test}")
        self.noise, self.alpha, self.n_test = noise, float(alpha), int(n_test)

    def check(self, physics: Physics) -> None:
        kind = physics.noise.kind
        if kind != self.noise:
            fix = ("declare physics.noise (e.g. {name: gaussian, args: {sigma: auto}})" if kind in ("unknown", "none")
                   else f"build R2R(noise={kind!r}) if supported")
            raise LossConfigError(
                f"R2R(noise={self.noise!r}) cannot recorrupt {type(physics.noise).__name__} ({kind}) data: "
                f"the splitting is exact only for its own noise model (Gaussian needs sigma, Poisson gain, "
                f"Gamma shape); {fix}")

    def recorrupt(self, y: Tensor, physics: Physics,
                  generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draw the independent pair ``(y1, y2)`` of the table in the module docstring."""
        self.check(physics)
        a = self.alpha
        noise = physics.noise
        if self.noise == "gaussian":
            omega = rng.as_per_sample(noise.sigma, y, "sigma") * rng.randn_like(y, generator)
            return y + (a / (1 - a)) ** 0.5 * omega, y - ((1 - a) / a) ** 0.5 * omega
        if self.noise == "poisson":
            g = rng.as_per_sample(noise.gain, y, "gain")
            counts = torch.round(y / g)
            if torch.any(counts < 0) or torch.any((counts - y / g).abs() > 1e-3):
                raise ValueError("Poisson R2R needs y = gain * integer counts; y / gain is not a non-negative "
                                 f"integer (max deviation {(counts - y / g).abs().max().item():g}, "
                                 f"min {counts.min().item():g}) — is the gain right, or do the data carry a detector "
                                 f"offset (subtract it: data.offset in a run config)?")
            omega = rng.binomial(counts, torch.full_like(counts, a), generator)
            return g * (counts - omega) / (1 - a), g * omega / a
        ell = rng.as_per_sample(noise.shape, y, "shape")
        if torch.any(y <= 0):
            raise ValueError(f"Gamma R2R needs y > 0, got min {y.min().item():g}")
        ell = ell.expand_as(y).contiguous()
        omega = rng.beta(ell * a, ell * (1 - a), generator)
        return y * (1 - omega) / (1 - a), y * omega / a

    def recorrupt_input(self, y: Tensor, physics: Physics, generator: torch.Generator | None = None) -> Tensor:
        """Only ``y1`` (the network input)."""
        return self.recorrupt(y, physics, generator)[0]

    def forward(self, y: Tensor, physics: Physics, model: Reconstructor, x: Tensor | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        y1, y2 = self.recorrupt(y, physics, generator)
        return ((y2 - physics.A(model(y1, physics))) ** 2).mean()

    def estimator(self, model: Reconstructor) -> Estimator:
        """``f_test(y) = (1/N) Σ_i f(y1_i, A)`` with ``N = n_test`` recorruptions drawn from ``generator``
        (default: seeded with 0, so a reconstruction is reproducible)."""

        def f_test(y: Tensor, physics: Physics, generator: torch.Generator | None = None) -> Tensor:
            generator = generator if generator is not None else default_test_generator(y)
            total = None
            for _ in range(self.n_test):
                out = model(self.recorrupt_input(y, physics, generator), physics)
                total = out if total is None else total + out
            assert total is not None  # n_test >= 1
            return total / self.n_test

        return f_test

    def extra_repr(self) -> str:
        return f"noise={self.noise!r}, alpha={self.alpha}, n_test={self.n_test}"
