"""Measurement splitting for incomplete measurements (SSDU).

Each step draws a sub-mask ``S ~ p(S | A)`` over the *observed* entries
(Bernoulli(``split_ratio``) on each observed entry, independently per sample),
feeds the network the split measurement ``(S y, S A)`` and penalises the
residual of the full ``y``:

    full (default, tutorial):  L = mean ||        M (y − A f(S y, S A)) ||²
    held-out:                  L = mean || (I − S) M (y − A f(S y, S A)) ||²

``M`` is the observation mask. The held-out form is the one of Yaman et al.
(loss and training masks disjoint); it is unaffected by separable noise, since
``f`` never sees the entries it is scored on — but nothing then constrains the
output on the entries the network *is* given. Yaman et al. use an unrolled
network whose data-consistency steps pin those entries; with a back-projection
network ``g(A† S y)`` the held-out form drifts there (see
``benchmarks/results/incomplete.md``), hence the default. The full form also scores the
input part ``S y − S A f(S y, S A)``, which the network can fit noise on. With
noisy data that input part can instead be scored by a noise-robust loss
(``noisy_term``: SURE or R2R evaluated on ``(S y, S A)``):

    L = mean ||(I − S) M (y − A f(S y, S A))||² + L_noisy(S y, S A, f)

If ``E[Aᵀ A | S A]`` has full rank the minimiser is ``E[x | S y, S A]``
(Daras et al. 2024).

Test time (``estimator``): ``test_mode="average"`` (default) returns
``(1/N) Σ_i f(S_i y, S_i A)`` over ``N = n_test_splits`` seeded splits;
``test_mode="full"`` returns ``f(y, A)`` (cheap, relies on generalisation).

Yaman et al., "Self-supervised learning of physics-guided reconstruction
neural networks without fully sampled reference data", MRM 2020.

Needs a mask-type operator: a physics with a ``mask`` per-sample parameter
(``Inpainting``, ``MRI``) whose mask broadcasts against the measurement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor

from selfinv.losses.base import (
    Estimator,
    Loss,
    LossConfigError,
    ModelEstimator,
    Reconstructor,
    SharedEvaluation,
    default_test_generator,
)
from selfinv.physics.base import Physics
from selfinv.physics.masked import MaskedPhysics
from selfinv.utils import rng

PENALTIES = ("held-out", "full")
TEST_MODES = ("average", "full")


@dataclass
class Split:
    """One split of a batch: network input ``(y_in, physics_in)`` and 0/1 indicators in ``y``'s layout."""

    y_in: Tensor
    physics_in: Physics
    kept: Tensor  # observed entries given to the network
    held_out: Tensor  # observed entries hidden from the network


class SSDUSplitting(Loss):
    """SSDU measurement-splitting loss (Yaman et al., MRM 2020).

    Args:
        split_ratio: probability that an observed entry goes to the network input
            (the rest is held out); in ``(0, 1)``.
        penalize: ``"full"`` or ``"held-out"`` (see module docstring); ``None`` (default)
            means ``"full"``, or ``"held-out"`` when a ``noisy_term`` is given.
        noisy_term: optional SURE / R2R loss scoring the input part on ``(S y, S A)``;
            requires ``penalize="held-out"``.
        test_mode: ``"average"`` over ``n_test_splits`` splits or ``"full"`` = ``f(y, A)``.
        n_test_splits: number of splits averaged at test time.
        test_seed: seed of the test-time splits (reproducible reconstructions).
    """

    evaluates_measurement = False  # never evaluates f(y, A) on the raw measurement

    #: assumes pixel-wise independent noise (``Loss.tolerated_noise_correlation``)
    tolerated_noise_correlation: int | None = 0

    def __init__(self, split_ratio: float = 0.6, penalize: str | None = None, noisy_term: Loss | None = None,
                 test_mode: str = "average", n_test_splits: int = 8, test_seed: int = 0):
        super().__init__()
        if penalize is None:
            penalize = "held-out" if noisy_term is not None else "full"
        if not 0.0 < float(split_ratio) < 1.0:
            raise LossConfigError(f"split_ratio must be in (0, 1), got {split_ratio}")
        if penalize not in PENALTIES:
            raise LossConfigError(f"penalize must be one of {PENALTIES}, got {penalize!r}")
        if noisy_term is not None and penalize != "held-out":
            raise LossConfigError("a noisy_term replaces the input part of the residual: use it with "
                                  "penalize='held-out' (got 'full', which would count that part twice)")
        if test_mode not in TEST_MODES:
            raise LossConfigError(f"test_mode must be one of {TEST_MODES}, got {test_mode!r}")
        if int(n_test_splits) < 1:
            raise LossConfigError(f"n_test_splits must be >= 1, got {n_test_splits}")
        self.split_ratio = float(split_ratio)
        self.penalize = penalize
        self.noisy_term = noisy_term
        self.test_mode = test_mode
        self.n_test_splits = int(n_test_splits)
        self.test_seed = int(test_seed)

    @property
    def evaluations_per_step(self) -> int:  # type: ignore[override]
        if self.noisy_term is None:
            return 1
        return int(getattr(self.noisy_term, "evaluations_per_step", 1))  # f(Sy, SA) is shared

    def check(self, physics: Physics) -> None:
        if not isinstance(physics, MaskedPhysics):
            raise LossConfigError(
                f"SSDUSplitting needs a mask-type operator (a 'mask' per-sample parameter, e.g. Inpainting "
                f"or MRI) to split the measurements; {type(physics).__name__} has parameters "
                f"{list(getattr(physics, 'param_names', ()))}")
        if self.noisy_term is not None:
            self.noisy_term.check(physics)

    def split(self, y: Tensor, physics: Physics, generator: torch.Generator | None = None) -> Split:
        """Draw ``S`` over the observed entries and build ``(S y, S A)``."""
        self.check(physics)
        mask = cast(MaskedPhysics, physics).mask  # check() accepts only a MaskedPhysics
        B = y.shape[0]
        if mask.shape[0] not in (1, B):
            raise ValueError(f"SSDUSplitting: the mask has {mask.shape[0]} samples but the batch has {B}")
        draw = rng.rand((B,) + tuple(mask.shape[1:]), generator=generator, device=y.device)
        s = (draw < self.split_ratio)
        observed = mask.to(y.device) != 0
        kept_mask = observed & s
        held_mask = observed & ~s
        new_mask = mask.to(y.device) * s.to(mask.dtype) if mask.dtype != torch.bool else mask.to(y.device) & s
        kept = _in_measurement_layout(kept_mask, y).to(y.dtype)
        held = _in_measurement_layout(held_mask, y).to(y.dtype)
        return Split(y_in=y * kept, physics_in=physics.with_params(mask=new_mask), kept=kept, held_out=held)

    def forward(self, y: Tensor, physics: Physics, model, x: Tensor | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        sp = self.split(y, physics, generator)
        shared = model if isinstance(model, SharedEvaluation) else SharedEvaluation(model)
        x_hat = shared(sp.y_in, sp.physics_in)
        residual = y - physics.A(x_hat)
        weight = sp.held_out if self.penalize == "held-out" else sp.held_out + sp.kept
        loss = (weight * residual).pow(2).mean()
        if self.noisy_term is not None:
            loss = loss + self.noisy_term(sp.y_in, sp.physics_in, shared, generator=generator)
        return loss

    @property
    def custom_estimator(self) -> bool:  # type: ignore[override]
        return self.test_mode != "full"

    def estimator(self, model: Reconstructor) -> Estimator:
        """``f(y, A)`` (``test_mode="full"``) or the mean of ``f(S_i y, S_i A)`` over ``n_test_splits``
        splits drawn from ``generator`` (default: seeded with ``test_seed``)."""
        if self.test_mode == "full":
            return ModelEstimator(model)

        def average_over_splits(y: Tensor, physics: Physics, generator: torch.Generator | None = None) -> Tensor:
            gen = generator if generator is not None else default_test_generator(y, self.test_seed)
            total = None
            for _ in range(self.n_test_splits):
                sp = self.split(y, physics, gen)
                out = model(sp.y_in, sp.physics_in)
                total = out if total is None else total + out
            assert total is not None  # n_test_splits >= 1
            return total / self.n_test_splits

        return average_over_splits

    def extra_repr(self) -> str:
        return (f"split_ratio={self.split_ratio}, penalize={self.penalize!r}, test_mode={self.test_mode!r}, "
                f"n_test_splits={self.n_test_splits}")


def _in_measurement_layout(indicator: Tensor, y: Tensor) -> Tensor:
    """Broadcast a mask-layout indicator to ``y``'s shape (e.g. MRI ``(B,1,1,W)`` -> ``(B,2,H,W)``)."""
    t = indicator
    if t.ndim == y.ndim - 1:  # (B, H, W) masks for (B, C, H, W) measurements
        t = t.unsqueeze(1)
    try:
        return t.expand_as(y)
    except RuntimeError:
        raise LossConfigError(f"SSDUSplitting: the operator's mask of shape {tuple(indicator.shape)} does "
                              f"not broadcast to the measurement shape {tuple(y.shape)}") from None
