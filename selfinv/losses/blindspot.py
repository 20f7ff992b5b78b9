"""Blind-spot loss (Laine et al. 2019; Lee et al. 2022): ``||y - f_BS(y)||² / n``.

Meant for a network that cannot see the centre pixel by construction
(``selfinv.models.BlindSpotNet``): then ``∂f_i/∂y_i = 0`` and, for noise that is
independent across pixels with ``E[y_i | x] = x_i``,
``E||y - f(y)||² = E||f(y) - x||² + E||y - x||²`` (cross-validation argument,
tutorial Part 2). With an ordinary network the minimiser is the identity.
Denoising only (pixel ``i`` of ``y`` must measure pixel ``i`` of ``x``).
"""

from __future__ import annotations

from selfinv.losses.base import LossConfigError
from selfinv.losses.consistency import MeasurementConsistency
from selfinv.physics.base import Denoising, Physics


class BlindSpotLoss(MeasurementConsistency):
    """``||y - f(y)||² / n`` to be used with a blind-spot network (``BlindSpotNet``)."""

    #: assumes pixel-wise independent noise (``Loss.tolerated_noise_correlation``)
    tolerated_noise_correlation: int | None = 0
    #: a pixel's estimate comes from its neighbours only (``Loss.predicts_from_neighbours``)
    predicts_from_neighbours = True

    def check(self, physics: Physics) -> None:
        if not isinstance(physics, Denoising):
            raise LossConfigError(f"BlindSpotLoss needs a Denoising physics (A = I), got {type(physics).__name__}")
        if physics.noise.kind == "colored_gaussian":
            raise LossConfigError("BlindSpotLoss assumes noise independent across pixels; coloured noise leaks "
                                  "through the neighbours — use an autoencoder or UNSURE(variant='colored')")
