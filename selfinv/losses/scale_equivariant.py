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

For deblurring the SURE term may ignore a border margin (the ``margin`` option
of the SURE loss you pass).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from selfinv.losses.base import Loss, LossConfigError, SharedEvaluation
from selfinv.losses.equivariant import EquivariantImaging
from selfinv.physics.base import Physics


class ScaleEquivariantImaging(Loss):
    """``L_SURE + weight · || f(N(A x2), A) − x2 ||²`` with ``x2 = stopgrad(Scale(f(y, A)))``.

    Args:
        sure: the SURE loss object (``selfinv.losses.sure``) — SEI needs a noise level.
        transform: the random downscaling; ``None`` builds ``selfinv.transforms.Scale()``.
        weight: weight ``w`` of the scale-equivariance term ``L_SEQ``.

    Evaluations per step: those of SURE (``f(y)`` shared) plus one for ``x3``.
    ``last_terms`` holds the detached ``sure`` and ``seq`` values after a call.
    """

    def __init__(self, sure: Loss, transform: nn.Module | None = None, weight: float = 1.0):
        super().__init__()
        if sure is None or not isinstance(sure, nn.Module):
            raise LossConfigError(f"ScaleEquivariantImaging needs a SURE loss object, got {type(sure).__name__}")
        if transform is None:
            try:
                from selfinv.transforms import Scale
            except ImportError as err:  # pragma: no cover - depends on the transforms package
                raise LossConfigError("ScaleEquivariantImaging needs a scaling transform; "
                                      "selfinv.transforms.Scale is not available, pass transform=") from err
            transform = Scale()
        self.sure = sure
        self.equivariance = EquivariantImaging(transform, renoise=True, stop_gradient=True)
        self.weight = float(weight)
        self.last_terms: dict[str, Tensor] = {}

    @property
    def evaluations_per_step(self) -> int:  # type: ignore[override]
        return int(getattr(self.sure, "evaluations_per_step", 2)) + 1

    def check(self, physics: Physics) -> None:
        noise = physics.noise
        if getattr(noise, "sigma", None) is None and getattr(noise, "gain", None) is None:
            raise LossConfigError(
                "ScaleEquivariantImaging uses SURE, which needs a known noise level: the physics' noise "
                f"model {type(noise).__name__} has neither sigma nor gain (use GaussianNoise(sigma=...), "
                "PoissonNoise(gain=...) or PoissonGaussianNoise)")
        self.sure.check(physics)
        self.equivariance.check(physics)

    def forward(self, y: Tensor, physics: Physics, model, x: Tensor | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        self.check(physics)
        shared = model if isinstance(model, SharedEvaluation) else SharedEvaluation(model)
        x1 = shared(y, physics)
        l_sure = self.sure(y, physics, shared, x=x, generator=generator)
        l_seq = self.equivariance.equivariance_term(x1, physics, shared, generator)
        self.last_terms = {"sure": l_sure.detach(), "seq": l_seq.detach()}
        return l_sure + self.weight * l_seq

    def estimator(self, model):
        return self.sure.estimator(model)

    def extra_repr(self) -> str:
        return f"weight={self.weight}"
