"""Multi-operator imaging (MOI): learn from measurements taken with many operators.

    L_MOI(y, f) = L_fid(y, f) + w · E_{A'} || f(A' x̂, A') − x̂ ||²,    x̂ = f(y, A)

with ``A' ~ p(A)`` a fresh operator from the same distribution as the data
(``physics.resample``, one per sample) and ``L_fid`` the measurement
consistency ``||y − A f(y, A)||²`` (or SURE / R2R with noisy data). The second
term asks ``f(A x, A) ≈ f(A' x, A')``: the reconstruction must not depend on
which operator measured the image. Identifiable only if
``rank(E_A Aᵀ A) = n`` (see ``selfinv.theory``).

Tachella, Chen & Davies, "Unsupervised Learning From Incomplete Measurements
for Inverse Problems", NeurIPS 2022. The paper lets the gradient flow through
``x̂`` in both the input ``A' x̂`` and the target (``stop_gradient=False``,
default); ``stop_gradient=True`` treats ``x̂`` as a constant as SEI does.
"""

from __future__ import annotations

import torch
from torch import Tensor

from selfinv.losses.base import Loss, LossConfigError, SharedEvaluation
from selfinv.physics.base import Physics


class MultiOperatorImaging(Loss):
    """``L_fid + weight · E_{A'} ||f(A' x̂, A') − x̂||²``, ``x̂ = f(y, A)`` (Tachella et al., NeurIPS 2022).

    Args:
        fidelity: data term; ``None`` uses ``selfinv.losses.consistency.MeasurementConsistency()``.
        weight: weight ``w`` of the multi-operator term.
        renoise: measure ``x̂`` through the noisy ``physics'`` instead of the noiseless ``A'``.
        stop_gradient: detach ``x̂`` in the second term (not in the paper).

    Needs an operator distribution: ``physics.is_random`` (e.g. random masks).
    """

    def __init__(self, fidelity: Loss | None = None, weight: float = 1.0, renoise: bool = False,
                 stop_gradient: bool = False):
        super().__init__()
        if fidelity is None:
            try:
                from selfinv.losses.consistency import MeasurementConsistency
            except ImportError as err:  # pragma: no cover - depends on the consistency module
                raise LossConfigError("MultiOperatorImaging: selfinv.losses.consistency is not available; "
                                      "pass fidelity= explicitly") from err
            fidelity = MeasurementConsistency()
        self.fidelity = fidelity
        self.weight = float(weight)
        self.renoise = bool(renoise)
        self.stop_gradient = bool(stop_gradient)
        self.last_terms: dict[str, Tensor] = {}

    @property
    def evaluations_per_step(self) -> int:  # type: ignore[override]
        # the fidelity term evaluates f(y, A) (shared); f(A' x̂, A') is one more
        return int(getattr(self.fidelity, "evaluations_per_step", 1)) + 1

    def check(self, physics: Physics) -> None:
        if not getattr(physics, "is_random", False):
            raise LossConfigError(
                f"MultiOperatorImaging needs an operator distribution to draw A' from, but "
                f"{type(physics).__name__} is deterministic (physics.is_random is False); use random "
                f"per-sample operators (e.g. Inpainting or MRI without a fixed user mask) or EI instead")
        self.fidelity.check(physics)

    def forward(self, y: Tensor, physics: Physics, model, x: Tensor | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        self.check(physics)
        shared = model if isinstance(model, SharedEvaluation) else SharedEvaluation(model)
        x_hat = shared(y, physics)
        fid = self.fidelity(y, physics, shared, x=x, generator=generator)
        moi = self.multi_operator_term(x_hat, physics, shared, generator)
        self.last_terms = {"fidelity": fid.detach(), "multi_operator": moi.detach()}
        return fid + self.weight * moi

    def multi_operator_term(self, x_hat: Tensor, physics: Physics, model,
                            generator: torch.Generator | None = None) -> Tensor:
        """``mean ||f(A' x̂, A') − x̂||²`` with ``A'`` freshly drawn for every sample."""
        target = x_hat.detach() if self.stop_gradient else x_hat
        other = physics.resample(x_hat.shape[0], generator, device=x_hat.device)
        y_other = other(target, generator) if self.renoise else other.A(target)
        x_other = model(y_other, other)
        if x_other.shape != target.shape:
            raise ValueError(f"MultiOperatorImaging: the model returned shape {tuple(x_other.shape)}, "
                             f"expected {tuple(target.shape)}")
        return (x_other - target).pow(2).mean()

    def estimator(self, model):
        return self.fidelity.estimator(model)

    def extra_repr(self) -> str:
        return f"weight={self.weight}, renoise={self.renoise}, stop_gradient={self.stop_gradient}"
