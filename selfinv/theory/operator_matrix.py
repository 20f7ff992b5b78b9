"""Dense matrices of small linear operators, built by applying them to the identity basis.

For an image size ``(C, H, W)`` with ``n = C H W ≤ a few thousand`` the matrix
of ``x -> A(T_g x)`` is obtained column by column from the canonical basis
``e_j`` (in batches). Only the forward map ``A`` is used, so the result does not
depend on the correctness of ``A_adjoint``; ``A T_g`` needs no transpose of
``T_g`` either (``Σ_g T_gᵀ Aᵀ A T_g = Σ_g M_gᵀ M_g`` with ``M_g = A T_g``).
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import Tensor

from selfinv.physics.base import Physics


def operator_matrix(apply: Callable[[Tensor], Tensor], image_shape: tuple[int, int, int],
                    dtype: torch.dtype = torch.float64, device: torch.device | str | None = None,
                    batch_size: int = 256, basis: Tensor | None = None) -> Tensor:
    """The ``(m, n)`` matrix of a linear map ``apply`` on images of ``image_shape = (C, H, W)``.

    ``apply`` takes a batch ``(b, C, H, W)``; complex outputs are split into real and
    imaginary parts (so ``m`` counts real numbers). ``basis`` may pass a precomputed
    identity ``(n, C, H, W)`` to save its construction when called many times.
    """
    n = int(torch.tensor(image_shape).prod())
    if basis is None:
        basis = torch.eye(n, dtype=dtype, device=device).reshape((n,) + tuple(image_shape))
    rows = []
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        out = apply(basis[start:stop])
        if out.is_complex():
            out = torch.view_as_real(out)
        rows.append(out.reshape(stop - start, -1).to(dtype))
    return torch.cat(rows, 0).T.contiguous()


def physics_in_dtype(physics: Physics, dtype: torch.dtype) -> Physics:
    """A deep copy of ``physics`` whose floating buffers are ``dtype`` (complex ones the matching complex type).

    The original is left untouched (``nn.Module.to`` would convert it in place, and
    would drop the imaginary part of complex buffers).
    """
    new = copy.deepcopy(physics)
    complex_dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    for module in new.modules():
        for name, buf in list(module._buffers.items()):
            if buf is None:
                continue
            if buf.is_complex():
                module._buffers[name] = buf.to(complex_dtype)
            elif buf.is_floating_point():
                module._buffers[name] = buf.to(dtype)
        for name, par in list(module._parameters.items()):
            if par is not None and par.is_floating_point():
                module._parameters[name] = torch.nn.Parameter(par.detach().to(dtype), requires_grad=False)
    return new
