"""Noise2Noise (Lehtinen et al. 2018; Mallows' C_p, 1973).

``L_N2N(y_a, y_b, f) = ||y_b - A f(y_a, A)||² / m`` with ``y_a, y_b`` two
independent noisy measurements of the same ``x``. If ``E[y_b | x] = A x``,
``E[L_N2N] = E||A f(y_a) - A x||² / m + E||y_b - A x||² / m`` (the constant is
``σ²`` for Gaussian noise). Works for any noise with zero-mean, independent
second copy and any physics (the estimate is in the measurement domain; it is
the image-domain MSE when ``A`` is invertible and orthogonal, e.g. ``A = I``).

The second copy is passed as keyword ``y2`` (the data layer serves
``item["y2"]``): ``loss(y, physics, model, y2=y2)``.

Both copies are measurements, so both serve as input: with ``symmetric=True`` (the
default) every sample of a training step takes ``(y_a, y_b) = (y, y2)`` or
``(y2, y)`` with probability 1/2 each (one network evaluation, as Lehtinen et al.
train on either image of a pair). The expectation is unchanged (``y`` and ``y2``
are exchangeable); the network sees twice as many inputs, which keeps it from
fitting the noise of one fixed target per input (on 3 200 fixed pairs of 32²
patches, σ = 0.1, one direction stops improving 0.55 dB under supervised).
The validation criterion is the one fixed direction ``(y, y2)``: comparable from
one validation to the next.

Example:
    >>> import torch
    >>> from selfinv.physics import Denoising, GaussianNoise
    >>> physics = Denoising(GaussianNoise(0.1))
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.rand(2, 1, 8, 8, generator=g)
    >>> y, y2 = physics(x, generator=g), physics(x, generator=g)
    >>> value = Noise2Noise()(y, physics, lambda y, phys: y, y2=y2, generator=g)
    >>> round(float(value), 2)  # ||y2 - y||² / m = 2 σ² for the identity
    0.02
"""

from __future__ import annotations

import torch
from torch import Tensor

from selfinv.losses.base import Loss, LossConfigError, Reconstructor
from selfinv.physics.base import Physics
from selfinv.utils import rng


class Noise2Noise(Loss):
    """``||y_b - A f(y_a, A)||² / m`` — needs a second independent noisy copy ``y2`` of the same image.

    Args:
        symmetric: draw the direction ``(y_a, y_b) ∈ {(y, y2), (y2, y)}`` per sample at every training step
            (default); ``False`` always trains ``f(y)`` against ``y2``.
    """

    batch_keys = ("y2",)

    def __init__(self, symmetric: bool = True):
        super().__init__()
        if not isinstance(symmetric, bool):
            raise LossConfigError(f"Noise2Noise: symmetric must be true or false, got {symmetric!r}")
        self.symmetric = symmetric

    def forward(self, y: Tensor, physics: Physics, model: Reconstructor, x: Tensor | None = None,
                generator: torch.Generator | None = None, *, y2: Tensor | None = None) -> Tensor:
        y2 = self._checked_pair(y, y2)
        if self.symmetric:
            swap = rng.rand((y.shape[0],) + (1,) * (y.ndim - 1), generator=generator, device=y.device) < 0.5
            y, y2 = torch.where(swap, y2, y), torch.where(swap, y, y2)
        return ((y2 - physics.A(model(y, physics))) ** 2).mean()

    def validation_loss(self, y: Tensor, physics: Physics, model: Reconstructor, x: Tensor | None = None,
                        generator: torch.Generator | None = None, *, y2: Tensor | None = None,
                        **batch: Tensor) -> Tensor:
        """``||y2 - A f(y, A)||² / m``, the one fixed direction (no draw: comparable across validations)."""
        y2 = self._checked_pair(y, y2)
        return ((y2 - physics.A(model(y, physics))) ** 2).mean()

    @staticmethod
    def _checked_pair(y: Tensor, y2: Tensor | None) -> Tensor:
        if y2 is None:
            raise LossConfigError(
                "Noise2Noise needs a second noisy copy of each measurement: call loss(y, physics, model, y2=...) "
                "with a data set whose items carry 'y2' (got y2=None)")
        if y2.shape != y.shape:
            raise ValueError(f"Noise2Noise: y2 has shape {tuple(y2.shape)} but y has shape {tuple(y.shape)}")
        return y2
