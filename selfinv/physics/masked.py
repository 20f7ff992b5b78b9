"""Operators that observe a subset of the entries of a (transformed) image: ``y = m ⊙ (F x)``.

Inpainting (``F = I``, a pixel mask) and single-coil Cartesian MRI (``F`` the centred
orthonormal FFT, a k-space line mask) share this structure, and what depends on it
is declared here once:

* the per-sample parameter ``mask`` (0/1, leading batch dimension ``B`` or 1);
* ``measurement_mask(y)`` — which entries of ``y`` carry data (unobserved ones are
  exactly 0 and noiseless), used by SURE's constant and SSDU's splits;
* ``mask_from_measurement(y)`` — the mask a measurement was taken with, read from
  where it holds data: what a user's file implies when it comes without its mask.

Losses that split the observed entries (SSDU) require a ``MaskedPhysics``.
"""

from __future__ import annotations

from torch import Tensor

from selfinv.physics.base import LinearPhysics


class MaskedPhysics(LinearPhysics):
    """Base class of operators ``y = m ⊙ (F x)`` with a per-sample 0/1 ``mask`` (see the module docstring)."""

    param_names: tuple[str, ...] = ("mask",)
    mask: Tensor

    def measurement_mask(self, y: Tensor) -> Tensor:
        """The entries of ``y`` that carry data, as a 0/1 tensor broadcastable to ``y``."""
        raise NotImplementedError

    def mask_from_measurement(self, y: Tensor) -> Tensor:
        """The mask (in the layout of ``self.mask``) under which ``y`` ``(B, ...)`` was measured: the entries
        holding data."""
        raise NotImplementedError
