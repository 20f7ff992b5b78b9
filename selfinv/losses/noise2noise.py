"""Noise2Noise (Lehtinen et al. 2018; Mallows' C_p, 1973).

``L_N2N(y_a, y_b, f) = ||y_b - A f(y_a, A)||² / m`` with ``y_a, y_b`` two
independent noisy measurements of the same ``x``. If ``E[y_b | x] = A x``,
``E[L_N2N] = E||A f(y_a) - A x||² / m + E||y_b - A x||² / m`` (the constant is
``σ²`` for Gaussian noise). Works for any noise with zero-mean, independent
second copy and any physics (the estimate is in the measurement domain; it is
the image-domain MSE when ``A`` is invertible and orthogonal, e.g. ``A = I``).

The second copy is passed as keyword ``y2`` (the data layer serves
``item["y2"]``): ``loss(y, physics, model, y2=y2)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from selfinv.losses.base import Loss, LossConfigError, Reconstructor
from selfinv.physics.base import Physics


class Noise2Noise(Loss):
    """``||y2 - A f(y, A)||² / m`` — needs a second independent noisy copy ``y2`` of the same image."""

    batch_keys = ("y2",)

    def forward(self, y: Tensor, physics: Physics, model: Reconstructor, x: Tensor | None = None,
                generator: torch.Generator | None = None, *, y2: Tensor | None = None) -> Tensor:
        if y2 is None:
            raise LossConfigError(
                "Noise2Noise needs a second noisy copy of each measurement: call loss(y, physics, model, y2=...) "
                "with a data set whose items carry 'y2' (got y2=None)")
        if y2.shape != y.shape:
            raise ValueError(f"Noise2Noise: y2 has shape {tuple(y2.shape)} but y has shape {tuple(y.shape)}")
        return ((y2 - physics.A(model(y, physics))) ** 2).mean()
