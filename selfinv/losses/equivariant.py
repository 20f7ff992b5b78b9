"""Equivariant imaging (EI): learn the null space of ``A`` from a symmetry prior.

If the image set is invariant to a group ``{T_g}``, then ``y = A x = (A T_g)(T_g⁻¹ x)``:
every transform gives a new virtual operator ``A T_g`` with (possibly) another
null space. EI asks ``f ∘ A`` to be equivariant:

    L_EI(y, f) = E_g || T_g x̂ − f(A T_g x̂, A) ||²,    x̂ = f(y, A)

Chen, Davies & Tachella, "Equivariant Imaging: Learning Beyond the Range
Space", ICCV 2021. EI alone does not fit the data: add a measurement-fidelity
term (MC, SURE, R2R) with ``WeightedSum``; ``RobustEquivariantImaging`` and
``ScaleEquivariantImaging`` are such compositions.

Options:

* ``renoise`` — the virtual measurement is ``physics(T_g x̂)`` (a noisy
  measurement, as in robust EI, Chen et al. CVPR 2022, and SEI) instead of the
  noiseless ``A T_g x̂`` of the original EI paper.
* ``stop_gradient`` — treat ``T_g x̂`` as a constant (input and target), as in
  scale-equivariant imaging (Scanvic et al. 2024); the original EI lets the
  gradient flow through both (default ``False``). Without it the network can
  lower the loss by shaping its own outputs into images that are easy to map
  back (smoother ones), and the reconstruction drifts away from the truth while
  the loss keeps falling; where the measurement term constrains the output
  weakly (sparse-view CT: the Radon transform damps high frequencies) this
  drift is large, and the noise-free CT config sets ``stop_gradient: true``.
  With noisy measurements it can hurt instead: the reference ``T x̂`` carries
  whatever noise the fidelity term lets through, and the network learns to
  reproduce it (noisy CT with MC: ``benchmarks/results/claims_ct_stop_gradient.md``;
  with a SURE fidelity, as in REI and SEI, it helped). Measure both on your data.

One group element is drawn per sample and per step; the value is the mean
over pixels and batch.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from selfinv.losses.base import Loss, LossConfigError
from selfinv.physics.base import Denoising, Physics
from selfinv.transforms.base import Transform


class EquivariantImaging(Loss):
    """``E_g || T_g x̂ − f(A T_g x̂, A) ||²`` with ``x̂ = f(y, A)`` (Chen et al., ICCV 2021).

    Args:
        transform: a ``selfinv.transforms.Transform`` (``sample`` + ``apply``).
        renoise: measure ``T_g x̂`` through the full noisy ``physics`` instead of ``physics.A``.
        stop_gradient: detach ``T_g x̂`` (no gradient through the reference).

    Two network evaluations per step (``f(y, A)`` and ``f(A T_g x̂, A)``); inside a
    ``WeightedSum`` the first one is shared with the fidelity term.
    """

    evaluations_per_step = 2

    def __init__(self, transform: Transform, renoise: bool = False, stop_gradient: bool = False):
        super().__init__()
        _check_transform(transform, type(self).__name__)
        self.transform = transform
        self.renoise = bool(renoise)
        self.stop_gradient = bool(stop_gradient)

    def check(self, physics: Physics) -> None:
        if isinstance(physics, Denoising):
            warnings.warn(f"{type(self).__name__} on denoising (A = I): the operator has no null space, so "
                          "equivariance adds nothing to learn; with measurement consistency the identity "
                          "(the noisy input) stays a minimiser. Use a denoising loss (SURE, R2R, ...).",
                          UserWarning, stacklevel=2)

    def forward(self, y: Tensor, physics: Physics, model, x: Tensor | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        self.check(physics)
        x_hat = model(y, physics)
        return self.equivariance_term(x_hat, physics, model, generator)

    def equivariance_term(self, x_hat: Tensor, physics: Physics, model,
                          generator: torch.Generator | None = None) -> Tensor:
        """``mean || T_g x̂ − f(A T_g x̂, A) ||²`` for a given reconstruction ``x̂``."""
        params = self.transform.sample(x_hat.shape[0], generator, x_hat.device)
        x_t = self.transform.transform(x_hat, params)
        if self.stop_gradient:
            x_t = x_t.detach()
        if self.renoise:
            z = physics.A(x_t)
            mean = z
            if getattr(physics.noise, "gain", None) is not None:
                # photon-counting noise needs a non-negative mean; a network output may dip below 0
                mean = z.clamp_min(0)
            # The noise enters as a detached perturbation of the mean (E[y_t] = A T x̂): sampling
            # Poisson counts has no gradient, which would otherwise cut the path through A T x̂.
            y_t = z + (physics.noise(mean.detach(), generator=generator) - mean.detach())
        else:
            y_t = physics.A(x_t)
        x_tt = model(y_t, physics)
        if x_tt.shape != x_t.shape:
            raise ValueError(f"{type(self).__name__}: the model returned shape {tuple(x_tt.shape)} for the "
                             f"transformed measurement, expected {tuple(x_t.shape)}")
        return (x_tt - x_t).pow(2).mean()

    def extra_repr(self) -> str:
        return f"renoise={self.renoise}, stop_gradient={self.stop_gradient}"


def _check_transform(transform: object, who: str) -> None:
    if not isinstance(transform, Transform):
        raise LossConfigError(f"{who} needs a selfinv.transforms.Transform (e.g. Shift or Rotate), got "
                              f"{type(transform).__name__}")
