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

``MultiOperatorImaging`` is the composition ``WeightedSum([fidelity,
MultiOperatorTerm()], [1, weight])`` (terms named ``fidelity`` and
``multi_operator``).

Validation (checkpoint selection, ``Loss.validation_loss``): on a mask operator
(inpainting, MRI) the MOI loss keeps falling while the reconstruction of the
unobserved entries gets worse (measured on the inpainting claim row: test PSNR
27.25 → 26.31 dB over the last 30 % of training while ``L_MOI`` fell by 39 %), so
it cannot choose a checkpoint. The criterion is the error on observed entries
hidden from the network, ``||M_h (y − A f(M_k y, M_k A))||² / m`` with a random
``VALIDATION_HOLD_OUT`` of the observed entries held out (``M_h``) and the rest kept
(``M_k``): a prediction of measured values the network did not see, the same
functional at every validation (seeded draws). Other operators validate with the
loss itself. On the claim row (three seeds, ``claims_inpainting_moi_selection``) the
checkpoint it selects is 0.94 / 0.48 / 0.06 dB better than the final weights.

Example::

    >>> loss = MultiOperatorImaging(weight=0.5)
    >>> loss.names, loss.weights, loss.evaluations_per_step
    (['fidelity', 'multi_operator'], [1.0, 0.5], 2)
"""

from __future__ import annotations

import torch
from torch import Tensor

from selfinv.losses.base import Loss, LossConfigError, Reconstructor, WeightedSum
from selfinv.physics.base import Physics
from selfinv.physics.masked import MaskedPhysics

#: fraction of a validation measurement's observed entries hidden from the network and predicted
VALIDATION_HOLD_OUT = 0.1


class MultiOperatorTerm(Loss):
    """``E_{A'} ||f(A' x̂, A') − x̂||²`` with ``x̂ = f(y, A)`` and ``A'`` freshly drawn for every sample.

    Args:
        renoise: measure ``x̂`` through the noisy ``physics'`` instead of the noiseless ``A'``.
        stop_gradient: detach ``x̂`` (not in the paper).

    Two evaluations: ``f(y, A)`` (shared in a sum) and ``f(A' x̂, A')``.
    """

    evaluations_per_step = 2

    def __init__(self, renoise: bool = False, stop_gradient: bool = False):
        super().__init__()
        self.renoise = bool(renoise)
        self.stop_gradient = bool(stop_gradient)

    def check(self, physics: Physics) -> None:
        if not physics.is_random:
            raise LossConfigError(
                f"MultiOperatorImaging needs an operator distribution to draw A' from, but "
                f"{type(physics).__name__} is deterministic (physics.is_random is False); use random "
                f"per-sample operators (e.g. Inpainting or MRI without a fixed user mask) or EI instead")

    def forward(self, y: Tensor, physics: Physics, model: Reconstructor, x: Tensor | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        self.check(physics)
        x_hat = model(y, physics)
        target = x_hat.detach() if self.stop_gradient else x_hat
        other = physics.resample(x_hat.shape[0], generator, device=x_hat.device)
        y_other = other(target, generator) if self.renoise else other.A(target)
        x_other = model(y_other, other)
        if x_other.shape != target.shape:
            raise ValueError(f"MultiOperatorImaging: the model returned shape {tuple(x_other.shape)}, "
                             f"expected {tuple(target.shape)}")
        return (x_other - target).pow(2).mean()

    def extra_repr(self) -> str:
        return f"renoise={self.renoise}, stop_gradient={self.stop_gradient}"


class MultiOperatorImaging(WeightedSum):
    """``L_fid + weight · E_{A'} ||f(A' x̂, A') − x̂||²``, ``x̂ = f(y, A)`` (Tachella et al., NeurIPS 2022).

    Args:
        fidelity: data term; ``None`` uses ``MeasurementConsistency()``.
        weight: weight ``w`` of the multi-operator term.
        renoise, stop_gradient: options of ``MultiOperatorTerm``.

    Needs an operator distribution: ``physics.is_random`` (e.g. random masks).
    """

    def __init__(self, fidelity: Loss | None = None, weight: float = 1.0, renoise: bool = False,
                 stop_gradient: bool = False):
        if fidelity is None:
            from selfinv.losses.consistency import MeasurementConsistency

            fidelity = MeasurementConsistency()
        super().__init__([fidelity, MultiOperatorTerm(renoise, stop_gradient)], [1.0, weight],
                         ["fidelity", "multi_operator"])

    @property
    def fidelity(self) -> Loss:
        return self._terms[0]

    def validation_loss(self, y: Tensor, physics: Physics, model: Reconstructor, x: Tensor | None = None,
                        generator: torch.Generator | None = None, **batch: Tensor) -> Tensor:
        """The held-out-entry error on a mask operator (module docstring), else the loss itself;
        ``last_terms`` holds ``held_out`` or the loss's terms."""
        if not isinstance(physics, MaskedPhysics):
            return super().validation_loss(y, physics, model, x=x, generator=generator, **batch)
        from selfinv.losses.ssdu import SSDUSplitting

        held_out = SSDUSplitting(split_ratio=1.0 - VALIDATION_HOLD_OUT, penalize="held-out")
        value = held_out(y, physics, model, generator=generator)
        self.last_terms = {"held_out": value.detach()}
        return value

    @property
    def weight(self) -> float:
        return self.weights[1]
