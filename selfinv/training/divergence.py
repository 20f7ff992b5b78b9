"""Detecting a diverging training run without a host sync per step.

``DivergenceMonitor.record`` is called every step with the loss and its terms (and
``record_weights`` with the norms of the network's weights before each reading); it keeps,
**on the device**, the first step at which a value was non-finite (inf/NaN) or the loss
magnitude exceeded ``growth`` times its value at the first recorded step (a run whose
loss went from 0.1 to 1e7 has diverged even if no value overflowed yet), and which
values were at fault. ``check`` reads that record (one sync) and raises
``TrainingDiverged``; the engine calls it every logging interval and before every
validation and checkpoint, so no diverged weights are ever saved.

Example::

    >>> import torch
    >>> m = DivergenceMonitor()
    >>> m.record(0, [torch.tensor(0.1)])
    >>> m.record(1, [torch.tensor(float("nan"))])
    >>> m.check(["loss", "weights"])
    Traceback (most recent call last):
    ...
    selfinv.training.divergence.TrainingDiverged: training diverged at step 1: non-finite (inf/NaN) loss; ...
"""

from __future__ import annotations

import torch
from torch import Tensor


class TrainingDiverged(ArithmeticError):
    """The loss, one of its terms or the network weights became non-finite, or the loss exploded, during training."""


class DivergenceMonitor:
    """Device-side record of the first step at which training diverged (see the module docstring).

    Args:
        growth: the loss magnitude may grow at most this factor above its first recorded value.
    """

    def __init__(self, growth: float = 1e6):
        self.growth = float(growth)
        self._step: Tensor | None = None  # first bad step, -1: none
        self._what: Tensor | None = None  # which values were non-finite at that step (+ the weights last)
        self._grew: Tensor | None = None  # the loss exploded (finite but too large) at that step
        self._value: Tensor | None = None  # the loss at that step
        self._first: Tensor | None = None  # |loss| at the first recorded step

    def reset(self) -> None:
        self.__init__(self.growth)  # type: ignore[misc]

    def record(self, step: int, values: list[Tensor]) -> None:
        """``values[0]`` is the loss, the rest its terms (detached scalars on one device)."""
        loss = values[0].float()
        dev = loss.device
        n = len(values) + 1
        if self._step is None or self._what is None or self._what.numel() != n:
            self._step = torch.full((), -1, dtype=torch.long, device=dev)
            self._what = torch.zeros(n, dtype=torch.bool, device=dev)
            self._grew = torch.zeros((), dtype=torch.bool, device=dev)
            self._value = torch.zeros((), device=dev)
            self._first = loss.abs().clamp_min(1e-12)
        bad = torch.stack([~torch.isfinite(v).all() for v in values] + [torch.zeros((), dtype=torch.bool,
                                                                                   device=dev)])
        grew = torch.isfinite(loss) & (loss.abs() > self.growth * self._first)
        self._mark(step, bad, grew, loss)

    def record_weights(self, step: int, weight_norms: list[Tensor]) -> None:
        """Flag ``step`` if any weight norm is non-finite (the last recorded value: a non-finite gradient
        reaches the weights at the optimiser step; checked before the record is read)."""
        if self._what is None or not weight_norms:
            return
        bad = torch.zeros_like(self._what)
        bad[-1] = ~torch.isfinite(torch.stack(weight_norms)).all()
        self._mark(step, bad, torch.zeros_like(bad[-1]), None)

    def _mark(self, step: int, bad: Tensor, grew: Tensor, loss: Tensor | None) -> None:
        assert self._step is not None and self._what is not None and self._grew is not None
        first = (self._step < 0) & (bad.any() | grew)
        self._step = torch.where(first, torch.as_tensor(step, device=bad.device), self._step)
        self._what = torch.where(first, bad, self._what)
        self._grew = torch.where(first, grew, self._grew)
        if loss is not None and self._value is not None:
            self._value = torch.where(first, loss, self._value)

    def check(self, names: list[str], hint: str = "") -> None:
        """Raise ``TrainingDiverged`` naming the step and the values (``names``: one per recorded value,
        the weights last) if divergence was recorded. One host sync."""
        if self._step is None or self._what is None:
            return
        step = int(self._step)
        if step < 0:
            return
        if bool(self._grew):
            what = (f"the loss exploded to {float(self._value):.3g} (from {float(self._first):.3g} at the start, "
                    f"more than {self.growth:.0e} times)")
        else:
            bad = [names[i] for i, b in enumerate(self._what.tolist()) if b and i < len(names)]
            what = f"non-finite (inf/NaN) {', '.join(bad) or 'values'}"
        raise TrainingDiverged(f"training diverged at step {step}: {what}; nothing after the last good checkpoint "
                               f"was saved. {hint}".strip())
