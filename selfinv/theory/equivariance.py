"""Is an operator equivariant to a group?  ``A T_g = T̃_g A`` for some ``T̃_g``.

Such a ``T̃_g`` exists iff ``A T_g`` vanishes on the null space of ``A``
(``ker A ⊆ ker A T_g``, i.e. ``A T_g = A T_g A⁺ A``). We test it with an
orthonormal basis ``N`` of ``ker A``:

    r_g = || A T_g N ||_F / ( ||A||_2 · ||N||_F ),     equivariant  ⇔  max_g r_g ≈ 0.

When ``A`` is equivariant, ``rank(E_g T_gᵀ Aᵀ A T_g) = rank(Aᵀ A) < n``: the
group gives no new information and equivariant imaging cannot learn the null
space (Tachella, Chen & Davies, "Sensing Theorems for Unsupervised Learning in
Linear Inverse Problems", JMLR 2023). Example: a circular blur commutes with
circular shifts.
"""

from __future__ import annotations

import torch
from torch import Tensor


def null_space_basis(gram: Tensor, rtol: float) -> tuple[Tensor, Tensor]:
    """Eigen-decompose ``gram = Aᵀ A``; return (singular values of ``A`` sorted descending,
    orthonormal null-space basis ``(n, d)``) with the relative threshold ``rtol`` on singular values."""
    evals, evecs = torch.linalg.eigh(gram)
    sv = evals.clamp_min(0).sqrt().flip(0)
    evecs = evecs.flip(1)
    top = sv[0] if sv.numel() else torch.zeros((), dtype=gram.dtype)
    keep = sv > rtol * top
    return sv, evecs[:, ~keep]


def equivariance_residual(transformed_matrix: Tensor, null_basis: Tensor, operator_norm: float) -> float:
    """``|| (A T_g) N ||_F / (||A||_2 ||N||_F)`` for the ``(m, n)`` matrix of ``A T_g``; 0 if ``N`` is empty."""
    d = null_basis.shape[1]
    if d == 0 or operator_norm == 0:
        return 0.0
    return float((transformed_matrix @ null_basis).norm() / (operator_norm * d ** 0.5))
