"""The loss contract shared by every self-supervised family.

A loss is a module called as ``loss(y, physics, model, x=None, generator=None)``
and returning a scalar. It calls ``model(y, physics)`` as many times as it needs
(``evaluations_per_step`` says how many, for the benchmarks), reads the noise
facts it needs from ``physics.noise`` and raises a ``LossConfigError`` saying why
when a physics or noise model is not supported. Values are normalised per
measurement entry (mean over pixels and batch), so weighted sums are balanced.

``loss.estimator(model)`` gives the test-time reconstructor ``(y, physics) ->
x_hat``; it is ``model`` itself unless the method says otherwise (R2R and
splitting average several draws). Learned loss state (UNSURE's multiplier) is
a buffer, so it is saved with the checkpoint.
"""

from __future__ import annotations

import inspect
from typing import Callable, Protocol, Sequence

import torch
from torch import Tensor, nn

from selfinv.physics.base import Physics


class LossConfigError(ValueError):
    """A loss was paired with a physics, noise model or model it cannot handle."""


class Reconstructor(Protocol):
    def __call__(self, y: Tensor, physics: Physics) -> Tensor: ...


class Loss(nn.Module):
    """Base class for ``loss(y, physics, model, x=None, generator=None) -> scalar``."""

    #: True only for the supervised reference, which reads the ground truth ``x``
    needs_ground_truth: bool = False
    #: network evaluations with gradient per training step (for the benchmarks)
    evaluations_per_step: int = 1
    #: whether one of those evaluations is ``f(y, A)`` on the loss's own input,
    #: which ``WeightedSum`` shares between terms (counted once)
    evaluates_measurement: bool = True

    def forward(self, y: Tensor, physics: Physics, model: nn.Module, x: Tensor | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError

    def check(self, physics: Physics) -> None:
        """Raise ``LossConfigError`` if this loss cannot be used with ``physics``."""

    def estimator(self, model: nn.Module) -> Callable[[Tensor, Physics], Tensor]:
        """The test-time reconstructor (``model`` unless the method averages draws)."""
        return model


class WeightedSum(Loss):
    """``sum_k w_k L_k``; ``last_terms`` holds the detached value of each term for logging."""

    def __init__(self, losses: Sequence[Loss], weights: Sequence[float] | None = None,
                 names: Sequence[str] | None = None):
        super().__init__()
        if len(losses) == 0:
            raise LossConfigError("WeightedSum needs at least one loss")
        weights = [1.0] * len(losses) if weights is None else list(weights)
        if len(weights) != len(losses):
            raise LossConfigError(f"got {len(losses)} losses but {len(weights)} weights")
        self.losses = nn.ModuleList(losses)
        self.weights = weights
        self.names = list(names) if names is not None else [_snake(type(l).__name__) for l in losses]
        self.last_terms: dict[str, Tensor] = {}

    @property
    def needs_ground_truth(self) -> bool:  # type: ignore[override]
        return any(l.needs_ground_truth for l in self.losses)

    @property
    def evaluations_per_step(self) -> int:  # type: ignore[override]
        shared = sum(1 for l in self.losses if l.evaluates_measurement)
        return sum(l.evaluations_per_step for l in self.losses) - max(shared - 1, 0)

    @property
    def evaluates_measurement(self) -> bool:  # type: ignore[override]
        return any(l.evaluates_measurement for l in self.losses)

    def check(self, physics: Physics) -> None:
        for l in self.losses:
            l.check(physics)

    def forward(self, y, physics, model, x=None, generator=None, **extra):
        """``extra`` (e.g. Noise2Noise's ``y2``) goes to the terms whose ``forward`` accepts it."""
        total = 0.0
        self.last_terms = {}
        shared = SharedEvaluation(model)  # f(y, A) is computed once for all terms
        for name, w, l in zip(self.names, self.weights, self.losses):
            kw = {k: v for k, v in extra.items() if _accepts(l, k)}
            v = l(y, physics, shared, x=x, generator=generator, **kw)
            self.last_terms[name] = v.detach()
            total = total + w * v
        return total

    def estimator(self, model):
        # The first loss that changes the estimator decides (e.g. R2R averaging).
        for l in self.losses:
            est = l.estimator(model)
            if est is not model:
                return est
        return model


class SharedEvaluation:
    """Wraps a model so that repeated calls on the *same* ``(y, physics)`` objects
    reuse the first output (and its graph) within one step.

    Terms of a sum such as MC + EI all need ``x_hat = f(y, A)``; this saves one
    network evaluation per extra term. Every evaluation of the step is kept
    (not only the last one), so a term that evaluates the model on another input
    in between (MOI's ``f(A' x̂, A')``) does not evict ``f(y, A)`` for the next
    term. Inputs are matched by identity (the cache holds them, so an id cannot
    be recycled), in-place version and grad mode; any other input is passed
    through. Attribute access (``training``, ``parameters``...) goes to the model.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self._cache: list[tuple[Tensor, Physics, int, bool, Tensor]] = []

    def __call__(self, y: Tensor, physics: Physics) -> Tensor:
        grad = torch.is_grad_enabled()
        for cy, cphys, version, cgrad, out in self._cache:
            if cy is y and cphys is physics and version == y._version and cgrad == grad:
                return out
        out = self.model(y, physics)
        self._cache.append((y, physics, y._version, grad, out))
        return out

    def __getattr__(self, name):
        return getattr(self.model, name)


def _accepts(loss: nn.Module, name: str) -> bool:
    """Whether ``loss.forward`` takes a keyword ``name`` (explicitly or via ``**kwargs``)."""
    params = inspect.signature(loss.forward).parameters
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _snake(name: str) -> str:
    out = []
    for i, c in enumerate(name):
        if c.isupper() and i and not name[i - 1].isupper():
            out.append("_")
        out.append(c.lower())
    return "".join(out)
