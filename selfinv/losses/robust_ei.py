"""Robust equivariant imaging (REI): a noise-robust fidelity term plus EI.

    L_REI(y, f) = L_fid(y, f) + w · E_g || T_g x̂ − f(N(A T_g x̂), A) ||²,   x̂ = f(y, A)

where ``L_fid`` is an unbiased estimate of the measurement-domain risk (SURE for
Gaussian / Poisson / Poisson–Gaussian noise, or R2R) that replaces the plain
measurement consistency of EI, and the virtual measurement ``N(A T_g x̂)`` is
re-noised. Chen, Tachella & Davies, "Robust Equivariant Imaging: a Fully
Unsupervised Framework for Learning to Image from Noisy and Partial
Measurements", CVPR 2022.

A composition: ``WeightedSum([fidelity, EquivariantImaging(transform, renoise=True)],
[1, weight])`` with the terms named ``fidelity`` and ``equivariance``; ``f(y, A)``
is shared by both, and the estimator is the fidelity's.

Example::

    >>> from selfinv.losses import SURE
    >>> from selfinv.transforms import Shift
    >>> loss = RobustEquivariantImaging(SURE(), Shift(), weight=2.0)
    >>> loss.names, loss.weights, loss.evaluations_per_step
    (['fidelity', 'equivariance'], [1.0, 2.0], 3)
"""

from __future__ import annotations

from typing import cast

from selfinv.losses.base import Loss, LossConfigError, WeightedSum
from selfinv.losses.equivariant import EquivariantImaging
from selfinv.transforms.base import Transform


class RobustEquivariantImaging(WeightedSum):
    """``L_fid(y, f) + weight · L_EI`` with a re-noised virtual measurement (Chen et al., CVPR 2022).

    Args:
        fidelity: the noise-robust data term, e.g. a SURE or R2R loss (required).
        transform: the group acting on images (``selfinv.transforms``).
        weight: weight ``w`` of the equivariance term.
        renoise: re-noise the virtual measurement (default True, as in the paper).
        stop_gradient: treat ``T_g x̂`` as a constant in the equivariance term (see
            ``EquivariantImaging``; default False, as in the paper).
    """

    def __init__(self, fidelity: Loss, transform: Transform, weight: float = 1.0, renoise: bool = True,
                 stop_gradient: bool = False):
        if not isinstance(fidelity, Loss):
            raise LossConfigError("RobustEquivariantImaging needs a fidelity loss (SURE or R2R), got "
                                  f"{type(fidelity).__name__}")
        super().__init__([fidelity, EquivariantImaging(transform, renoise=renoise, stop_gradient=stop_gradient)],
                         [1.0, weight],
                         ["fidelity", "equivariance"])

    @property
    def fidelity(self) -> Loss:
        return self._terms[0]

    @property
    def equivariance(self) -> EquivariantImaging:
        return cast(EquivariantImaging, self.losses[1])

    @property
    def weight(self) -> float:
        return self.weights[1]
