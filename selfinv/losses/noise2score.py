"""Noise2Score (Kim & Ye, NeurIPS 2021): learn the score of ``p_y`` from noisy data, denoise with Tweedie.

The network ``s(y, A) ≈ ∇ log p_y(y)`` (a *score* model, same shape as ``y``) is
trained by denoising score matching with a small annealed perturbation
(amortised residual DAE, Lim et al. 2020):

``L = || u + σ_a s(y + σ_a u) ||² / m``,  ``u ~ N(0, I)``,

whose minimiser is ``s = ∇ log (p_y * N(0, σ_a²))`` → ``∇ log p_y`` as ``σ_a → 0``.
``σ_a`` decays geometrically from ``sigma_max`` to ``sigma_min`` over
``anneal_steps`` training calls (a persistent ``step`` buffer counts them).

Test time (``estimator``), Tweedie's formula:

* Gaussian ``y ~ N(x, σ²)``: ``x̂ = y + σ² s(y)`` (= ``E[x | y]`` exactly);
* Gamma ``y ~ G(ℓ, ℓ/x)`` (natural parameter ``-ℓ/x``): ``x̂ = ℓ y / (ℓ - 1 - y s(y))`` (= ``1/E[1/x | y]``);
* Poisson ``y = γ P(x/γ)``: ``E[x | y] = (y + γ) p_y(y + γ) / p_y(y) ≈ (y + γ) exp(γ s(y + γ/2))``
  (midpoint rule for ``log p_y(y+γ) - log p_y(y)``; approximate).

Denoising only (the score is of the measurement density; ``A = I``).

Validation (``validation_loss``), comparable from one validation to the next:

* Gaussian noise: Stein's unbiased estimate of the per-entry MSE of the Tweedie denoiser itself
  (``SURE``, ``tau: auto``): what a checkpoint is chosen for. The score-matching loss at
  ``σ_a = sigma_min`` measures it only through terms of order ``sigma_min²`` under the ``E‖u‖²``
  of the draw, and on the Gaussian claim row it chose a checkpoint 0.38 dB worse than the final one;
* Poisson, Gamma (no SURE of that family here): the score-matching loss at the final perturbation
  ``σ_a = sigma_min`` whatever the annealing step (with the annealed ``σ_a`` the loss's minimum value
  changes as ``σ_a`` decays, and values are not comparable).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from selfinv.losses.base import Estimator, Loss, LossConfigError, Reconstructor
from selfinv.physics.base import Denoising, Physics
from selfinv.utils import rng


def tweedie_gaussian(y: Tensor, score: Tensor, sigma: Tensor | float) -> Tensor:
    """``E[x | y] = y + σ² ∇ log p_y(y)`` for ``y = x + σ n`` (Tweedie / Robbins 1956, Efron 2011)."""
    return y + sigma**2 * score


def tweedie_gamma(y: Tensor, score: Tensor, shape: Tensor | float) -> Tensor:
    """``x̂ = ℓ y / (ℓ - 1 - y s(y))`` for ``y ~ Gamma(ℓ, rate ℓ/x)`` (Kim & Ye 2021)."""
    return shape * y / (shape - 1 - y * score)


def tweedie_poisson(y: Tensor, score_at_mid: Tensor, gain: Tensor | float) -> Tensor:
    """``x̂ ≈ (y + γ) exp(γ s(y + γ/2))`` for ``y = γ Poisson(x/γ)`` (``score_at_mid = s(y + γ/2)``)."""
    return (y + gain) * torch.exp(gain * score_at_mid)


class Noise2Score(Loss):
    """Denoising score matching of ``p_y`` with annealed small noise; Tweedie estimator.

    Args:
        noise: noise model used by the Tweedie estimator: ``"gaussian"``, ``"poisson"`` or ``"gamma"``.
        sigma_max, sigma_min: range of the perturbation std ``σ_a`` (data units).
        anneal_steps: training calls over which ``σ_a`` decays from max to min.
    """

    evaluates_measurement = False  # never evaluates f(y, A) on the raw measurement
    #: training calls so far (a buffer, saved with the checkpoint): the annealing clock
    step: Tensor

    #: assumes pixel-wise independent noise (``Loss.tolerated_noise_correlation``)
    tolerated_noise_correlation: int | None = 0

    def __init__(self, noise: Literal["gaussian", "poisson", "gamma"] = "gaussian", sigma_max: float = 0.1,
                 sigma_min: float = 1e-3, anneal_steps: int = 10_000):
        super().__init__()
        if noise not in ("gaussian", "poisson", "gamma"):
            raise LossConfigError(f"Noise2Score noise must be 'gaussian', 'poisson' or 'gamma', got {noise!r}")
        if not 0 < sigma_min <= sigma_max:
            raise LossConfigError(f"need 0 < sigma_min <= sigma_max, got {sigma_min}, {sigma_max}")
        self.noise, self.sigma_max, self.sigma_min = noise, float(sigma_max), float(sigma_min)
        self.anneal_steps = max(int(anneal_steps), 1)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def check(self, physics: Physics) -> None:
        if not isinstance(physics, Denoising):
            raise LossConfigError(f"Noise2Score learns the score of p_y for denoising (A = I); "
                                  f"got {type(physics).__name__}")
        kind = physics.noise.kind
        if kind != self.noise:
            raise LossConfigError(f"Noise2Score(noise={self.noise!r}) got {type(physics.noise).__name__} ({kind}) "
                                  "noise; Tweedie's formula needs the matching noise parameter")

    def current_sigma(self) -> float:
        """``σ_a`` at the current annealing step (geometric decay)."""
        t = min(int(self.step), self.anneal_steps) / self.anneal_steps
        return math.exp((1 - t) * math.log(self.sigma_max) + t * math.log(self.sigma_min))

    def forward(self, y: Tensor, physics: Physics, model: Reconstructor, x: Tensor | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        self.check(physics)
        s_a = self.current_sigma()
        u = rng.randn_like(y, generator)
        loss = ((u + s_a * model(y + s_a * u, physics)) ** 2).mean()
        if self.training:
            self.step += 1
        return loss

    def validation_loss(self, y: Tensor, physics: Physics, model: Reconstructor, x: Tensor | None = None,
                        generator: torch.Generator | None = None, **batch: Tensor) -> Tensor:
        """Gaussian: the SURE of the Tweedie denoiser; otherwise score matching at ``σ_a = sigma_min`` (see the
        module docstring); no annealing step."""
        self.check(physics)
        if self.noise == "gaussian":
            from selfinv.losses.sure import SURE

            estimate = self.estimator(model)
            return SURE(noise="gaussian", tau="auto", batch_evaluations=False)(
                y, physics, lambda v, p: estimate(v, p), generator=generator)
        u = rng.randn_like(y, generator)
        return ((u + self.sigma_min * model(y + self.sigma_min * u, physics)) ** 2).mean()

    custom_estimator = True

    def estimator(self, model: Reconstructor) -> Estimator:
        """Tweedie's formula applied to the learnt score (see module docstring); deterministic."""

        def f_test(y: Tensor, physics: Physics, generator: torch.Generator | None = None) -> Tensor:
            self.check(physics)
            noise = physics.noise
            if self.noise == "gaussian":
                return tweedie_gaussian(y, model(y, physics), rng.as_per_sample(noise.sigma, y, "sigma"))
            if self.noise == "gamma":
                return tweedie_gamma(y, model(y, physics), rng.as_per_sample(noise.shape, y, "shape"))
            g = rng.as_per_sample(noise.gain, y, "gain")
            return tweedie_poisson(y, model(y + g / 2, physics), g)

        return f_test

    def extra_repr(self) -> str:
        return (f"noise={self.noise!r}, sigma_max={self.sigma_max}, sigma_min={self.sigma_min}, "
                f"anneal_steps={self.anneal_steps}")
