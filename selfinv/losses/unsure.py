"""UNSURE: SURE with an unknown noise level (Tachella et al., ICLR 2025).

``min_f max_η  E ||y - h(y)||²/m + (2/m) Σ_k η_k D_k(h, y)``, ``h = A ∘ f``,

a Lagrangian for the constraint ``E[D_k] = 0`` (the "degrees of freedom" that
SURE would weight by the unknown noise statistics). Variants:

* ``"gaussian"`` (σ unknown): one multiplier, ``D = Σ_i ∂h_i/∂y_i``;
* ``"colored"`` (unknown stationary covariance ``Σ_{i,j} = c(j - i)`` supported
  on offsets ``|d| <= radius``): Stein gives ``E[(y - Ax)ᵀ h] = Σ_d c(d) D_d``
  with ``D_d = Σ_i ∂h_i/∂y_{i+d}``, one multiplier per offset ``d``
  (``eta[dy + r, dx + r]``, offsets circular);
* ``"poisson_gaussian"`` (γ and σ unknown): first-order PG-URE weights
  ``γ y_i + σ²`` give two multipliers, ``D_y = Σ_i y_i ∂h_i/∂y_i`` and ``D = Σ_i ∂h_i/∂y_i``.

All ``D`` are Monte-Carlo estimated from one probe ``ω ~ N(0, I)``:
``D_d ≈ (S_d ω)ᵀ (h(y + τω) - h(y)) / τ`` with ``(S_d ω)_i = ω_{i+d}``.
The multipliers ``eta`` are a persistent buffer (saved in ``state_dict``). When
the loss module is in training mode each call performs one step of gradient
*ascent*, ``η ← η + step · 2 D / m`` (the loss uses η before the step), so ``η``
grows while the network still has positive degrees of freedom. Any physics
whose ``A`` maps back to the measurement shape.

Validation (``validation_loss``, the checkpoint-selection criterion): the
Lagrangian's value depends on ``η``, which starts at 0 and grows during
training, so it is not comparable from one validation to the next (an early,
barely trained network with ``η ≈ 0`` scores best: the plain residual). For
image-domain measurements (denoising, blur, downsampling) validation instead
uses SURE with the noise statistics estimated from the held-out measurements
themselves, which depends on the network only: Gaussian ``σ`` per measurement by
the wavelet MAD, Poisson–Gaussian ``(γ, σ)`` by the variance-vs-mean fit
(``selfinv.physics.noise_estimation``), and the same Monte-Carlo divergences as
training. Other operators and the ``"colored"`` variant have no such estimate;
they validate with the Lagrangian (``check`` warns that selection by ``val/loss`` is
then unreliable: use ``last.ckpt``).
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch
from torch import Tensor

from selfinv.losses.base import Loss, LossConfigError, Reconstructor
from selfinv.physics.base import Physics
from selfinv.utils import rng


class UNSURE(Loss):
    """SURE without knowing the noise level: Lagrange multipliers ``eta`` learnt by gradient ascent.

    Args:
        variant: ``"gaussian"``, ``"colored"`` or ``"poisson_gaussian"``.
        step: ascent step size of the multipliers.
        tau: Monte-Carlo finite-difference step.
        radius: neighbourhood radius of the ``"colored"`` variant (``(2r+1)²`` multipliers).
        eta_init: initial value of every multiplier.
        penalty: augmented-Lagrangian weight ``ρ``: adds ``(ρ/2) Σ_k (D_k/m)²`` so the
            network itself feels the constraint violation (the method of multipliers,
            Hestenes 1969), which damps the oscillation of plain gradient descent-ascent.
            ``0`` gives plain descent-ascent, which oscillates (measurements in
            ``benchmarks/results/denoising.md``); at the saddle point ``η`` tends to
            ``σ²/(1 - MMSE/σ²)``.
    """

    evaluations_per_step = 2
    #: the multipliers (a buffer, saved with the checkpoint)
    eta: Tensor

    def __init__(self, variant: Literal["gaussian", "colored", "poisson_gaussian"] = "gaussian",
                 step: float = 1e-3, tau: float = 1e-2, radius: int = 1, eta_init: float = 0.0,
                 penalty: float = 0.05):
        super().__init__()
        if variant not in ("gaussian", "colored", "poisson_gaussian"):
            raise LossConfigError(f"UNSURE variant must be 'gaussian', 'colored' or 'poisson_gaussian', "
                                  f"got {variant!r}")
        if step <= 0 or tau <= 0:
            raise LossConfigError(f"step and tau must be > 0, got step={step}, tau={tau}")
        if radius < 0:
            raise LossConfigError(f"radius must be >= 0, got {radius}")
        self.variant, self.step, self.tau, self.radius = variant, float(step), float(tau), int(radius)
        self.penalty = float(penalty)
        if self.penalty < 0:
            raise LossConfigError(f"penalty must be >= 0, got {penalty}")
        shape = {"gaussian": (), "colored": (2 * radius + 1, 2 * radius + 1), "poisson_gaussian": (2,)}[variant]
        self.register_buffer("eta", torch.full(shape, float(eta_init)))

    def estimates_noise(self, physics: Physics) -> bool:
        """Whether ``validation_loss`` can estimate the noise statistics from the measurements (image-domain
        measurements, Gaussian or Poisson–Gaussian variant)."""
        return bool(getattr(physics, "image_domain", False)) and self.variant in ("gaussian", "poisson_gaussian")

    @property
    def tolerated_noise_correlation(self) -> int | None:  # type: ignore[override]
        return self.radius if self.variant == "colored" else 0  # one multiplier per offset within radius

    def check(self, physics: Physics) -> None:
        if not self.estimates_noise(physics):
            warnings.warn(f"UNSURE(variant={self.variant!r}) on {type(physics).__name__}: the noise statistics "
                          "cannot be estimated from these measurements, so the validation loss is the training "
                          "Lagrangian, whose multiplier moves during training: checkpoint selection by val/loss "
                          "is unreliable; use last.ckpt", UserWarning, stacklevel=2)

    def constraints(self, y: Tensor, hy: Tensor, h_probe: Tensor, omega: Tensor) -> Tensor:
        """Monte-Carlo ``D_k`` summed over the batch (same shape as ``eta``)."""
        diff = (h_probe - hy) / self.tau
        if self.variant == "gaussian":
            return (omega * diff).sum()
        if self.variant == "poisson_gaussian":
            return torch.stack([(y * omega * diff).sum(), (omega * diff).sum()])
        r = self.radius
        if y.ndim < 2 or min(y.shape[-2:]) < 2 * r + 1:
            raise ValueError(f"UNSURE(colored, radius={r}) needs measurements of at least "
                             f"{2 * r + 1}x{2 * r + 1}, got shape {tuple(y.shape)}")
        rows = []
        for dy in range(-r, r + 1):
            row = []
            for dx in range(-r, r + 1):
                shifted = torch.roll(omega, shifts=(-dy, -dx), dims=(-2, -1))  # (S_d ω)_i = ω_{i+d}
                row.append((shifted * diff).sum())
            rows.append(torch.stack(row))
        return torch.stack(rows)

    def forward(self, y: Tensor, physics: Physics, model: Reconstructor, x: Tensor | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        def h(v: Tensor) -> Tensor:
            return physics.A(model(v, physics))

        hy = h(y)
        omega = rng.randn_like(y, generator)
        d = self.constraints(y, hy, h(y + self.tau * omega), omega)
        m = y.numel()
        eta = self.eta.detach().clone().to(dtype=y.dtype)  # the ascent below updates the buffer in place
        loss = ((y - hy) ** 2).mean() + 2 * (eta * d).sum() / m
        if self.penalty:
            loss = loss + 0.5 * self.penalty * ((d / m) ** 2).sum()
        if self.training:
            with torch.no_grad():
                self.eta += self.step * 2 * d.detach().to(self.eta.dtype) / m
        return loss

    def validation_loss(self, y: Tensor, physics: Physics, model: Reconstructor, x: Tensor | None = None,
                        generator: torch.Generator | None = None, **batch: Tensor) -> Tensor:
        """SURE with noise statistics estimated from ``y`` (see the module docstring), per measurement entry;
        the Lagrangian where they cannot be estimated. Does not update ``eta``."""
        if not self.estimates_noise(physics):
            return self(y, physics, model, generator=generator)
        from selfinv.physics.noise_estimation import estimate_gaussian_sigma, estimate_poisson_gaussian

        def h(v: Tensor) -> Tensor:
            return physics.A(model(v, physics))

        hy = h(y)
        omega = rng.randn_like(y, generator)
        diff = (h(y + self.tau * omega) - hy) / self.tau
        if self.variant == "gaussian":
            var = estimate_gaussian_sigma(y.float()).to(y.dtype).reshape((-1,) + (1,) * (y.ndim - 1)) ** 2
        else:
            gain, sigma = estimate_poisson_gaussian(y.float())
            var = gain.to(y.dtype) * y + sigma.to(y.dtype) ** 2  # first-order PG-URE weights, as in training
        var = var.expand_as(y)
        return ((y - hy) ** 2 - var + 2 * var * omega * diff).mean()

    def extra_repr(self) -> str:
        return (f"variant={self.variant!r}, step={self.step}, tau={self.tau}, radius={self.radius}, "
                f"penalty={self.penalty}")
