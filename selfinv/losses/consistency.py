"""Measurement consistency ``||y - A f(y, A)||² / m``.

Alone it is minimised by any ``f`` with ``A f(y) = y`` (for denoising, the
identity: the naive loss of the tutorial, Part 2); it is the data-fit term
combined with equivariance / multi-operator losses for incomplete measurements.
Works for any ``Physics`` (linear or not): ``A`` is only applied forward.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from selfinv.losses.base import Loss, Reconstructor
from selfinv.physics.base import Denoising, Physics


def measurement_residual(y: Tensor, physics: Physics, model: Reconstructor) -> Tensor:
    """``mean((y - A f(y, A))²)``, with a shape check naming both shapes."""
    y_hat = physics.A(model(y, physics))
    if y_hat.shape != y.shape:
        raise ValueError(f"A(f(y)) has shape {tuple(y_hat.shape)} but y has shape {tuple(y.shape)}")
    return ((y - y_hat) ** 2).mean()


class MeasurementConsistency(Loss):
    """``L_MC(y, f) = ||y - A f(y, A)||² / m`` (mean over entries). Any physics."""

    def check(self, physics: Physics) -> None:
        if isinstance(physics, Denoising):
            warnings.warn("measurement consistency on denoising (A = I) is minimised by the identity: the "
                          "network learns to return its noisy input. Use a denoising loss (SURE, R2R, "
                          "Noise2Void, ...) unless that is the point.", UserWarning, stacklevel=2)

    def forward(self, y: Tensor, physics: Physics, model: Reconstructor, x: Tensor | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        return measurement_residual(y, physics, model)
