"""Unrolled proximal gradient descent with learned priors.

Gregor & LeCun (2010), "Learning fast approximations of sparse coding"; Adler &
Öktem (2018), "Learned primal-dual reconstruction". Starting from
``x_0 = A† y`` (or ``Aᵀ y``), ``n_iter`` iterations of

    x_{k+1} = prior_k( x_k − τ_k Aᵀ(A x_k − y) ),

with learned step sizes ``τ_k = softplus(ρ_k) > 0`` and learned denoisers
``prior_k`` (by default a small residual ``DnCNN``: depth 5, 32 channels). The
operator maps are those of the batch's own physics, so per-sample operators
(masks, kernels...) are handled naturally. The gradient step needs a linear
physics (``A_adjoint``).
"""

from __future__ import annotations

import copy
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfinv.models.dncnn import DnCNN
from selfinv.models.reconstructor import _INITS, back_project
from selfinv.physics.base import Physics


def _softplus_inverse(value: float) -> float:
    """``ρ`` with ``softplus(ρ) = value`` (value > 0)."""
    return value + math.log(-math.expm1(-value))


class UnrolledProximalGradient(nn.Module):
    """Reconstructor ``model(y, physics)`` by ``n_iter`` unrolled proximal-gradient steps.

    Args:
        prior: a module (deep-copied per iteration unless ``share_weights``) or a
            factory ``() -> nn.Module`` called once per iteration (once if
            shared). ``None``: ``DnCNN(channels, channels, depth=5, channels=32)``.
        n_iter: number of iterations (>= 1).
        step_size: initial value of every ``τ_k`` (> 0); 1.0 suits operators with
            ``||A|| <= 1`` (masks, normalised Fourier sampling).
        init: ``"dagger"`` (``A† y``) or ``"adjoint"`` (``Aᵀ y``) for ``x_0``.
        share_weights: one prior for all iterations.
        channels: image channels of the default prior.
    """

    def __init__(self, prior: nn.Module | Callable[[], nn.Module] | None = None, n_iter: int = 5,
                 step_size: float = 1.0, init: str = "dagger", share_weights: bool = False, channels: int = 1):
        super().__init__()
        if n_iter < 1:
            raise ValueError(f"n_iter must be >= 1, got {n_iter}")
        if not step_size > 0:
            raise ValueError(f"step_size must be > 0, got {step_size}")
        if init not in _INITS:
            raise ValueError(f"init must be one of {_INITS}, got {init!r}")
        self.n_iter, self.init, self.share_weights = n_iter, init, share_weights
        if prior is None:
            def prior() -> nn.Module:  # the default small CNN prior
                return DnCNN(channels, channels, depth=5, channels=32, residual=True)
        n_priors = 1 if share_weights else n_iter
        if isinstance(prior, nn.Module):
            priors = [prior] + [copy.deepcopy(prior) for _ in range(n_priors - 1)]
        elif callable(prior):
            priors = [prior() for _ in range(n_priors)]
            bad = [type(p).__name__ for p in priors if not isinstance(p, nn.Module)]
            if bad:
                raise TypeError(f"the prior factory must return nn.Module instances, got {bad[0]}")
        else:
            raise TypeError(f"prior must be an nn.Module, a factory or None, got {type(prior).__name__}")
        self.priors = nn.ModuleList(priors)
        self.step_raw = nn.Parameter(torch.full((n_iter,), _softplus_inverse(step_size)))

    @property
    def step_sizes(self) -> Tensor:
        """The positive step sizes ``τ_k = softplus(ρ_k)``."""
        return F.softplus(self.step_raw)

    def forward(self, y: Tensor, physics: Physics) -> Tensor:
        if not hasattr(physics, "A_adjoint"):
            raise TypeError(f"UnrolledProximalGradient needs a linear physics with A_adjoint, "
                            f"got {type(physics).__name__}")
        x = back_project(y, physics, self.init)
        tau = self.step_sizes.to(dtype=x.dtype)
        for k in range(self.n_iter):
            grad = physics.A_adjoint(physics.A(x) - y)
            x = self.priors[0 if self.share_weights else k](x - tau[k] * grad)
        return physics.restrict_to_field_of_view(x)

    def extra_repr(self) -> str:
        return f"n_iter={self.n_iter}, init={self.init!r}, share_weights={self.share_weights}"
