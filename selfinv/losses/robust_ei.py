"""Robust equivariant imaging (REI): a noise-robust fidelity term plus EI.

    L_REI(y, f) = L_fid(y, f) + w · E_g || T_g x̂ − f(N(A T_g x̂), A) ||²,   x̂ = f(y, A)

where ``L_fid`` is an unbiased estimate of the measurement-domain risk (SURE for
Gaussian / Poisson / Poisson–Gaussian noise, or R2R) that replaces the plain
measurement consistency of EI, and the virtual measurement ``N(A T_g x̂)`` is
re-noised. Chen, Tachella & Davies, "Robust Equivariant Imaging: a Fully
Unsupervised Framework for Learning to Image from Noisy and Partial
Measurements", CVPR 2022.

This is a thin composition: the fidelity loss object (``selfinv.losses.sure`` or
``selfinv.losses.r2r``) and an ``EquivariantImaging`` with ``renoise=True``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from selfinv.losses.base import Loss, LossConfigError, SharedEvaluation
from selfinv.losses.equivariant import EquivariantImaging
from selfinv.physics.base import Physics


class RobustEquivariantImaging(Loss):
    """``L_fid(y, f) + weight · L_EI`` with a re-noised virtual measurement (Chen et al., CVPR 2022).

    Args:
        fidelity: the noise-robust data term, e.g. a SURE or R2R loss (required).
        transform: the group acting on images (``selfinv.transforms``).
        weight: weight ``w`` of the equivariance term.
        renoise: re-noise the virtual measurement (default True, as in the paper).

    ``last_terms`` holds the detached value of both terms after a call.
    """

    def __init__(self, fidelity: Loss, transform: nn.Module, weight: float = 1.0, renoise: bool = True):
        super().__init__()
        if fidelity is None or not isinstance(fidelity, nn.Module):
            raise LossConfigError("RobustEquivariantImaging needs a fidelity loss (SURE or R2R), got "
                                  f"{type(fidelity).__name__}")
        self.fidelity = fidelity
        self.equivariance = EquivariantImaging(transform, renoise=renoise)
        self.weight = float(weight)
        self.last_terms: dict[str, Tensor] = {}

    @property
    def evaluations_per_step(self) -> int:  # type: ignore[override]
        # f(y, A) is shared with the fidelity term (SURE evaluates it); EI adds one.
        return int(getattr(self.fidelity, "evaluations_per_step", 1)) + 1

    def check(self, physics: Physics) -> None:
        self.fidelity.check(physics)
        self.equivariance.check(physics)

    def forward(self, y: Tensor, physics: Physics, model, x: Tensor | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        self.check(physics)
        shared = model if isinstance(model, SharedEvaluation) else SharedEvaluation(model)
        x_hat = shared(y, physics)  # computed first so the fidelity term reuses it
        fid = self.fidelity(y, physics, shared, x=x, generator=generator)
        ei = self.equivariance.equivariance_term(x_hat, physics, shared, generator)
        self.last_terms = {"fidelity": fid.detach(), "equivariance": ei.detach()}
        return fid + self.weight * ei

    def estimator(self, model):
        return self.fidelity.estimator(model)

    def extra_repr(self) -> str:
        return f"weight={self.weight}"
