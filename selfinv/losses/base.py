"""The loss contract shared by every self-supervised family.

A loss is a module called as ``loss(y, physics, model, x=None, generator=None, **batch)``
and returning a scalar. Everything a caller (the training engine, a user's own
loop) may rely on is declared on ``Loss``:

* ``needs_ground_truth`` — only the supervised reference reads ``x``;
* ``batch_keys`` — extra per-measurement data the loss reads from the batch
  (Noise2Noise's second noisy copy ``y2``); the data layer must provide them;
* ``evaluations_per_step`` — network evaluations with gradient per step, and
  ``evaluates_measurement`` — whether one of them is ``f(y, A)`` on the loss's own
  input, which ``WeightedSum`` shares between its terms (counted once);
* ``check(physics)`` — raises ``LossConfigError`` saying why a physics or noise
  model is not supported;
* ``estimator(model)`` — the test-time reconstructor, always called as
  ``estimator(y, physics, generator=None)``; ``model(y, physics)`` itself unless
  the method averages random draws (R2R, splitting), which then come from
  ``generator`` so a seeded reconstruction is reproducible; ``custom_estimator``
  says which;
* ``check_inputs`` — validate the measurements on every call (finite, non-empty,
  inside the noise model's support: ``y >= 0`` for Poisson, ``y > 0`` for Gamma);
  the engine validates its data once and switches the per-call check off (it
  costs a host sync);
* ``validation_loss(y, physics, model, ...)`` — the self-supervised criterion on
  held-out measurements that drives checkpoint selection and early stopping. It
  must be **comparable across training**: the same functional of the network at
  every validation, whatever the loss's own state. The default is the loss itself;
  a loss whose value depends on a state that moves during training (UNSURE's
  multiplier, Noise2Score's annealed perturbation) or that contains a term
  favouring the untrained network (Neighbor2Neighbor's regulariser, zero for the
  identity) overrides it with a criterion that is.

The model argument is any ``Reconstructor``: ``model(y, physics) -> x_hat``. A loss
calls it as many times as it needs and reads the noise facts from
``physics.noise``. Values are normalised per measurement entry (mean over pixels
and batch), so weighted sums are balanced. Learned loss state (UNSURE's
multiplier) is a buffer, saved with the checkpoint.

Example::

    >>> import torch
    >>> from selfinv.physics import Denoising, GaussianNoise
    >>> from selfinv.losses import MeasurementConsistency, WeightedSum
    >>> physics = Denoising(GaussianNoise(0.1))
    >>> loss = WeightedSum([MeasurementConsistency()], names=["mc"])
    >>> value = loss(torch.rand(2, 1, 8, 8), physics, lambda y, phys: 0.5 * y)
    >>> sorted(loss.last_terms)
    ['mc']
"""

from __future__ import annotations

import contextvars
from typing import Any, Protocol, Sequence, cast

import torch
from torch import Tensor, nn

from selfinv.physics.base import Physics
from selfinv.physics.support import check_measurement


class LossConfigError(ValueError):
    """A loss was paired with a physics, noise model or model it cannot handle."""


class Reconstructor(Protocol):
    """What every loss calls: ``model(y, physics) -> x_hat``."""

    def __call__(self, y: Tensor, physics: Physics) -> Tensor: ...


class Estimator(Protocol):
    """A test-time reconstructor: ``estimator(y, physics, generator=None) -> x_hat``."""

    def __call__(self, y: Tensor, physics: Physics, generator: torch.Generator | None = None) -> Tensor: ...


class ModelEstimator:
    """The plain estimator ``x_hat = model(y, physics)`` (the generator is not needed)."""

    def __init__(self, model: Reconstructor):
        self.model = model

    def __call__(self, y: Tensor, physics: Physics, generator: torch.Generator | None = None) -> Tensor:
        return self.model(y, physics)


#: set while a ``WeightedSum`` runs its terms, so they do not re-check inputs it checked
_INPUTS_CHECKED: contextvars.ContextVar[bool] = contextvars.ContextVar("selfinv_inputs_checked", default=False)


class Loss(nn.Module):
    """Base class for ``loss(y, physics, model, x=None, generator=None, **batch) -> scalar``."""

    #: True only for the supervised reference, which reads the ground truth ``x``
    needs_ground_truth: bool = False
    #: extra batch entries the loss reads (passed as keyword arguments), e.g. ``("y2",)``
    batch_keys: tuple[str, ...] = ()
    #: network evaluations with gradient per training step (for the benchmarks)
    evaluations_per_step: int = 1
    #: whether one of those evaluations is ``f(y, A)`` on the loss's own input (shared in a sum)
    evaluates_measurement: bool = True
    #: whether ``estimator`` differs from ``model(y, physics)``
    custom_estimator: bool = False
    #: validate the measurements on every call (see the module docstring)
    check_inputs: bool = True
    #: the largest spatial correlation length of the noise (pixels; 0 = pixel-wise independent noise) the
    #: loss stays valid for; ``None``: it assumes nothing about the noise's spatial correlation. Read by
    #: ``fit`` to warn when the user's measurements have correlated noise
    #: (``selfinv.physics.noise_estimation.estimate_noise_correlation``).
    tolerated_noise_correlation: int | None = None
    #: whether the loss trains the estimate of each pixel from its neighbours only (blind-spot and
    #: cross-validation methods: Noise2Void/Noise2Self, blind-spot networks, Neighbor2Neighbor), so that its
    #: error cannot fall below the image's own neighbour-interpolation error. Read by ``fit`` to warn when that
    #: error exceeds the noise (``selfinv.training.auto_noise.neighbour_detail_warning``).
    predicts_from_neighbours: bool = False

    def __call__(self, y: Tensor, physics: Physics, model: Reconstructor, *args: Any, **kwargs: Any) -> Tensor:
        if self.check_inputs and not _INPUTS_CHECKED.get():
            check_measurement(y, physics.noise, type(self).__name__)
        return super().__call__(y, physics, model, *args, **kwargs)

    def forward(self, y: Tensor, physics: Physics, model: Reconstructor, x: Tensor | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError

    def check(self, physics: Physics) -> None:
        """Raise ``LossConfigError`` if this loss cannot be used with ``physics``."""

    def estimator(self, model: Reconstructor) -> Estimator:
        """The test-time reconstructor ``(y, physics, generator=None) -> x_hat``."""
        return ModelEstimator(model)

    def validation_loss(self, y: Tensor, physics: Physics, model: Reconstructor, x: Tensor | None = None,
                        generator: torch.Generator | None = None, **batch: Tensor) -> Tensor:
        """The checkpoint-selection criterion on held-out measurements (see the module docstring):
        comparable from one validation to the next. Default: the loss itself."""
        return self(y, physics, model, x=x, generator=generator, **batch)


def set_input_checks(loss: nn.Module, enabled: bool) -> None:
    """Switch the per-call measurement check of ``loss`` and all its sub-losses on or off."""
    for m in loss.modules():
        if isinstance(m, Loss):
            m.check_inputs = enabled


class WeightedSum(Loss):
    """``sum_k w_k L_k``: a composition of losses sharing ``f(y, A)``.

    ``last_terms`` holds the detached value of each term after a call (a term that is itself a sum
    adds its own terms as ``name/term``), for logging. The sum declares what its terms declare: the
    union of their ``batch_keys``, the evaluations (``f(y, A)`` counted once), ``check`` of every
    term, and the estimator of the first term that has its own.
    """

    def __init__(self, losses: Sequence[Loss], weights: Sequence[float] | None = None,
                 names: Sequence[str] | None = None):
        super().__init__()
        if len(losses) == 0:
            raise LossConfigError("WeightedSum needs at least one loss")
        weights = [1.0] * len(losses) if weights is None else [float(w) for w in weights]
        if len(weights) != len(losses):
            raise LossConfigError(f"got {len(losses)} losses but {len(weights)} weights")
        for i, l in enumerate(losses):
            if not isinstance(l, Loss):
                raise LossConfigError(f"WeightedSum term {i} must be a selfinv Loss, got {type(l).__name__}")
        self.losses = nn.ModuleList(losses)
        self.weights = weights
        self.names = unique_names(list(names) if names is not None else [snake_case(type(l).__name__)
                                                                          for l in losses])
        if len(self.names) != len(losses):
            raise LossConfigError(f"got {len(losses)} losses but {len(self.names)} names")
        self.last_terms: dict[str, Tensor] = {}

    @property
    def _terms(self) -> list[Loss]:
        """``losses`` as the ``Loss`` list it holds (an ``nn.ModuleList`` is typed as plain modules)."""
        return cast("list[Loss]", list(self.losses))

    @property
    def needs_ground_truth(self) -> bool:  # type: ignore[override]
        return any(l.needs_ground_truth for l in self._terms)

    @property
    def tolerated_noise_correlation(self) -> int | None:  # type: ignore[override]
        """The strictest term's tolerance (``None`` when no term assumes anything)."""
        limits = [l.tolerated_noise_correlation for l in self._terms if l.tolerated_noise_correlation is not None]
        return min(limits) if limits else None

    @property
    def predicts_from_neighbours(self) -> bool:  # type: ignore[override]
        """Whether every term predicts a pixel from its neighbours only (a term that sees it lifts the limit)."""
        return bool(self._terms) and all(l.predicts_from_neighbours for l in self._terms)

    @property
    def batch_keys(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(dict.fromkeys(k for l in self._terms for k in l.batch_keys))

    @property
    def evaluations_per_step(self) -> int:  # type: ignore[override]
        shared = sum(1 for l in self._terms if l.evaluates_measurement)
        return sum(l.evaluations_per_step for l in self._terms) - max(shared - 1, 0)

    @property
    def evaluates_measurement(self) -> bool:  # type: ignore[override]
        return any(l.evaluates_measurement for l in self._terms)

    @property
    def custom_estimator(self) -> bool:  # type: ignore[override]
        return any(l.custom_estimator for l in self._terms)

    def check(self, physics: Physics) -> None:
        for l in self._terms:
            l.check(physics)

    def forward(self, y: Tensor, physics: Physics, model: Reconstructor, x: Tensor | None = None,
                generator: torch.Generator | None = None, **batch: Tensor) -> Tensor:
        """``batch`` holds the extra entries the terms declare in ``batch_keys`` (e.g. ``y2``)."""
        return self._combine(False, y, physics, model, x, generator, batch)

    def validation_loss(self, y: Tensor, physics: Physics, model: Reconstructor, x: Tensor | None = None,
                        generator: torch.Generator | None = None, **batch: Tensor) -> Tensor:
        """``sum_k w_k`` (validation loss of term ``k``); ``last_terms`` holds those terms."""
        return self._combine(True, y, physics, model, x, generator, batch)

    def _combine(self, validation: bool, y: Tensor, physics: Physics, model: Reconstructor, x: Tensor | None,
                 generator: torch.Generator | None, batch: dict[str, Tensor]) -> Tensor:
        missing = [k for k in self.batch_keys if batch.get(k) is None]
        if missing:
            given = sorted(k for k, v in batch.items() if v is not None)
            raise LossConfigError(f"the loss needs batch entries {missing} (e.g. a second noisy copy 'y2' for "
                                  f"Noise2Noise), but the data provide {given}")
        if self.check_inputs and not _INPUTS_CHECKED.get() and validation:
            check_measurement(y, physics.noise, type(self).__name__)  # __call__ checks the training path
        shared = model if isinstance(model, SharedEvaluation) else SharedEvaluation(model)
        token = _INPUTS_CHECKED.set(True)
        try:
            total: Tensor | float = 0.0
            terms: dict[str, Tensor] = {}
            for name, w, l in zip(self.names, self.weights, self._terms, strict=True):
                extra = {k: batch[k] for k in l.batch_keys}
                if validation:
                    v = l.validation_loss(y, physics, shared, x=x, generator=generator, **extra)
                else:
                    v = l(y, physics, shared, x=x, generator=generator, **extra)
                terms[name] = v.detach()
                if isinstance(l, WeightedSum):
                    terms.update({f"{name}/{k}": t for k, t in l.last_terms.items()})
                total = total + w * v
        finally:
            _INPUTS_CHECKED.reset(token)
        self.last_terms = terms
        assert isinstance(total, Tensor)
        return total

    def estimator(self, model: Reconstructor) -> Estimator:
        for l in self._terms:
            if l.custom_estimator:
                return l.estimator(model)
        return ModelEstimator(model)

    def extra_repr(self) -> str:
        return f"names={self.names}, weights={self.weights}"


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

    def __init__(self, model: Reconstructor):
        self.model = model
        self._cache: list[tuple[Tensor, Physics, int, bool, Tensor]] = []

    def __call__(self, y: Tensor, physics: Physics) -> Tensor:
        out = self.cached(y, physics)
        if out is None:
            out = self.model(y, physics)
            self.store(y, physics, out)
        return out

    def cached(self, y: Tensor, physics: Physics) -> Tensor | None:
        """The output already computed for these ``(y, physics)`` objects in this grad mode, else None."""
        grad = torch.is_grad_enabled()
        for cy, cphys, version, cgrad, out in self._cache:
            if cy is y and cphys is physics and version == y._version and cgrad == grad:
                return out
        return None

    def store(self, y: Tensor, physics: Physics, out: Tensor) -> None:
        """Record ``out = f(y, physics)`` computed elsewhere (e.g. as half of a batched evaluation)."""
        self._cache.append((y, physics, y._version, torch.is_grad_enabled(), out))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


def unique_names(names: Sequence[str]) -> list[str]:
    """``['mc', 'ei', 'mc']`` -> ``['mc', 'ei', 'mc_2']``: repeated names get the count of their kind."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        candidate = n if seen[n] == 1 else f"{n}_{seen[n]}"
        while candidate in out:
            seen[n] += 1
            candidate = f"{n}_{seen[n]}"
        out.append(candidate)
    return out


def snake_case(name: str) -> str:
    """``'MeasurementConsistency'`` -> ``'measurement_consistency'``."""
    out = []
    for i, c in enumerate(name):
        if c.isupper() and i and not name[i - 1].isupper():
            out.append("_")
        out.append(c.lower())
    return "".join(out)


def default_test_generator(like: Tensor, seed: int = 0) -> torch.Generator:
    """The generator a Monte-Carlo estimator uses when none is given: seeded, on ``like``'s device, so
    two reconstructions of the same measurement are identical."""
    return torch.Generator(device=like.device).manual_seed(int(seed))
