"""Scale-equivariant imaging (SEI) for super-resolution and deblurring.

    x1 = f(y, A),   x2 = sg(S_s x1),   x3 = f(N(A x2), A)
    L_SEI = L_SURE(y, f) + w · || x3 − x2 ||²

``S_s`` is a random downscaling (``selfinv.transforms.Scale``), ``sg`` the
stop-gradient and ``N(A x2)`` a fresh noisy measurement of ``x2``. Downscaling
moves the (learnt) low frequencies of ``x1`` into the band that ``A`` cannot
see, giving a high-frequency target; stopping the gradient through ``x2`` is
the paper's key ingredient (the reference must not be pulled towards what the
network can reproduce). Roto-translations cannot do this for band-limited
operators: they are equivariant with ``A``.

Scanvic, Davies, Abry & Tachella, "Scale-Equivariant Imaging: Self-Supervised
Learning for Image Super-Resolution and Deblurring", 2024.

A composition: ``WeightedSum([sure, EquivariantImaging(scale, renoise=True,
stop_gradient=True)], [1, weight])`` with the terms named ``sure`` and ``seq``.
For deblurring the SURE term may ignore a border margin (the ``margin`` option of
the SURE loss you pass).

Example::

    >>> from selfinv.losses import SURE
    >>> loss = ScaleEquivariantImaging(SURE())
    >>> loss.names, loss.equivariance.stop_gradient
    (['sure', 'seq'], True)
"""

from __future__ import annotations

from typing import cast

from selfinv.losses.base import Loss, LossConfigError, WeightedSum
from selfinv.losses.equivariant import EquivariantImaging
from selfinv.physics.base import Physics
from selfinv.transforms.base import Transform


class ScaleEquivariantImaging(WeightedSum):
    """``L_SURE + weight · || f(N(A x2), A) − x2 ||²`` with ``x2 = stopgrad(Scale(f(y, A)))``.

    Args:
        sure: the SURE loss object (``selfinv.losses.sure``) — SEI needs a noise level.
        transform: the random downscaling; ``None`` builds ``selfinv.transforms.Scale()``.
        weight: weight ``w`` of the scale-equivariance term ``L_SEQ``.
    """

    def __init__(self, sure: Loss, transform: Transform | None = None, weight: float = 1.0):
        if not isinstance(sure, Loss):
            raise LossConfigError(f"ScaleEquivariantImaging needs a SURE loss object, got {type(sure).__name__}")
        if transform is None:
            from selfinv.transforms import Scale

            transform = Scale()
        super().__init__([sure, EquivariantImaging(transform, renoise=True, stop_gradient=True)], [1.0, weight],
                         ["sure", "seq"])

    @property
    def sure(self) -> Loss:
        return self._terms[0]

    @property
    def equivariance(self) -> EquivariantImaging:
        return cast(EquivariantImaging, self.losses[1])

    @property
    def weight(self) -> float:
        return self.weights[1]

    def check(self, physics: Physics) -> None:
        noise = physics.noise
        if getattr(noise, "sigma", None) is None and getattr(noise, "gain", None) is None:
            raise LossConfigError(
                "ScaleEquivariantImaging uses SURE, which needs a known noise level: the physics' noise "
                f"model {type(noise).__name__} has neither sigma nor gain (use GaussianNoise(sigma=...), "
                "PoissonNoise(gain=...) or PoissonGaussianNoise)")
        super().check(physics)
