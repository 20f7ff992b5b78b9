"""The supervised reference loss ``||x - f(y, A)||² / n`` (the ceiling every self-supervised loss is compared with)."""

from __future__ import annotations

import torch
from torch import Tensor

from selfinv.losses.base import Loss, LossConfigError, Reconstructor
from selfinv.physics.base import Physics


class SupervisedLoss(Loss):
    """``L(x, y, f) = ||x - f(y, A)||² / n``: mean squared error against the ground truth ``x``.

    Works for any physics. Raises ``LossConfigError`` when ``x`` is missing.
    """

    needs_ground_truth = True

    def forward(self, y: Tensor, physics: Physics, model: Reconstructor, x: Tensor | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        if x is None:
            raise LossConfigError("SupervisedLoss needs the ground truth x (got x=None); "
                                  "it is the reference for data sets that have clean images")
        x_hat = model(y, physics)
        if x_hat.shape != x.shape:
            raise ValueError(f"SupervisedLoss: reconstruction has shape {tuple(x_hat.shape)} "
                             f"but x has shape {tuple(x.shape)}")
        return ((x_hat - x) ** 2).mean()
