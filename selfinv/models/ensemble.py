"""Geometric self-ensemble: a reconstruction averaged over the 8 flips / 90° rotations of the measurement.

For an operator that commutes with a transform ``T`` of the image grid (``A T = T A``, noise law invariant),
``T y`` is a measurement of ``T x``, so ``T⁻¹ f(T y)`` is as good an estimate of ``x`` as ``f(y)``, with errors
that are partly independent: their mean over the dihedral group ``D4``

    x̂(y) = (1/8) Σ_{T ∈ D4} T⁻¹ f(T y)

is never worse in mean squared error than the average of the 8 (Jensen) and usually better than ``f(y)``
alone — Lim et al. (2017), "Enhanced deep residual networks for single image super-resolution" (EDSR), §3.4;
Timofte, Rothe & Van Gool (2016), "Seven ways to improve example-based single image super resolution". It costs 8
network evaluations. ``Physics.commutes_with_dihedral`` says when it applies (denoising and isotropic blur under
pixel-wise noise); a network trained with equivariant imaging is already close to equivariant and gains less.

Example:
    >>> import torch
    >>> from selfinv.models.ensemble import dihedral_ensemble
    >>> y = torch.rand(1, 1, 8, 6)
    >>> x = dihedral_ensemble(lambda t: t.cumsum(-1), y)  # a direction-dependent map gets averaged
    >>> x.shape
    torch.Size([1, 1, 8, 6])
    >>> torch.allclose(dihedral_ensemble(lambda t: 2 * t, y), 2 * y)  # an equivariant one is unchanged
    True
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

#: the 8 elements of D4 as (quarter turns, flip of the last axis first)
DIHEDRAL = tuple((k, flip) for k in range(4) for flip in (False, True))


def dihedral_transform(t: Tensor, k: int, flip: bool) -> Tensor:
    """``T t``: flip the last axis if ``flip``, then rotate the last two axes by ``k`` quarter turns."""
    return torch.rot90(t.flip(-1) if flip else t, k, (-2, -1))


def dihedral_inverse(t: Tensor, k: int, flip: bool) -> Tensor:
    """``T⁻¹ t`` for the ``T`` of ``dihedral_transform(·, k, flip)``."""
    t = torch.rot90(t, -k, (-2, -1))
    return t.flip(-1) if flip else t


def dihedral_ensemble(estimate: Callable[[Tensor], Tensor], y: Tensor) -> Tensor:
    """``(1/8) Σ_T T⁻¹ estimate(T y)`` over the flips / 90° rotations ``T`` of the last two axes of ``y``.

    ``estimate`` maps measurements ``(B, C, H, W)`` to images of the same grid orientation (any size for
    non-square inputs: a quarter turn swaps ``H`` and ``W``). The sum is accumulated in place: memory of two
    reconstructions.
    """
    total: Tensor | None = None
    for k, flip in DIHEDRAL:
        x = dihedral_inverse(estimate(dihedral_transform(y, k, flip)), k, flip)
        total = x.clone() if total is None else total.add_(x)
    assert total is not None
    return total / len(DIHEDRAL)
