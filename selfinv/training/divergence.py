"""Detecting a diverging training run without a host sync per step.

``DivergenceMonitor.record`` is called every step with the loss and its terms: it stacks
them **on the device** (one operation, no host sync) and keeps them until the next
reading. ``check`` reads what was recorded since the last reading (one sync), with the
norms of the network's weights given by ``record_weights`` just before, finds the first
step at which a value was non-finite (inf/NaN) or the loss magnitude exceeded ``growth``
times its value at the first recorded step (a run whose loss went from 0.1 to 1e7 has
diverged even if no value overflowed yet), and raises ``TrainingDiverged`` naming the
step and the values at fault; the engine calls it every logging interval and before
every validation and checkpoint, so no diverged weights are ever saved.

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

import math

import torch
from torch import Tensor


class TrainingDiverged(ArithmeticError):
    """The loss, one of its terms or the network weights became non-finite, or the loss exploded, during training."""


class DivergenceMonitor:
    """The first step at which training diverged, read at ``check`` (see the module docstring).

    Args:
        growth: the loss magnitude may grow at most this factor above its first recorded value.
        max_pending: steps kept on the device between readings; more are read on the way (one sync each
            ``max_pending`` steps), so the memory stays bounded whatever the reading interval.
    """

    def __init__(self, growth: float = 1e6, max_pending: int = 1024):
        self.growth = float(growth)
        self.max_pending = max(1, int(max_pending))
        self._pending: list[tuple[int, Tensor]] = []  # (step, its values stacked) since the last reading
        self._weights: tuple[int, Tensor] | None = None  # (step, sum of the weight norms) to read
        self._first: float | None = None  # |loss| at the first recorded step
        #: the first divergence found: (step, index of each value at fault (-1: the weights), exploded loss or None)
        self._found: tuple[int, list[int], float | None] | None = None

    def reset(self) -> None:
        self.__init__(self.growth, self.max_pending)  # type: ignore[misc]

    def record(self, step: int, values: list[Tensor]) -> None:
        """``values[0]`` is the loss, the rest its terms (detached, on one device): kept on the device."""
        row = torch.stack([(v if v.ndim == 0 else v.sum()).detach().float() for v in values])
        self._pending.append((int(step), row))
        if len(self._pending) >= self.max_pending:
            self._read()

    def record_weights(self, step: int, weight_norms: list[Tensor]) -> None:
        """The norms of the network's weights at ``step`` (a non-finite gradient reaches them at the optimiser
        step), read at the next ``check`` after the values recorded before it."""
        if weight_norms:
            self._weights = (int(step), torch.stack(weight_norms).sum())  # non-finite if one of them is

    def _read(self) -> None:
        """Read what was recorded since the last reading (one host sync) and keep the first divergence."""
        pending, self._pending = self._pending, []
        weights, self._weights = self._weights, None
        if self._found is not None:
            return
        flat = torch.cat([row for _, row in pending]).tolist() if pending else []
        at = 0
        for step, row in pending:
            values, at = flat[at:at + row.numel()], at + row.numel()
            if self._first is None:
                self._first = max(abs(values[0]), 1e-12) if math.isfinite(values[0]) else 1e-12
            bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
            grew = math.isfinite(values[0]) and abs(values[0]) > self.growth * self._first
            if bad or grew:
                self._found = (step, bad, values[0] if grew and not bad else None)
                return
        if weights is not None and not math.isfinite(float(weights[1])):
            self._found = (weights[0], [-1], None)

    def check(self, names: list[str], hint: str = "") -> None:
        """Raise ``TrainingDiverged`` naming the step and the values (``names``: one per recorded value,
        the weights last) if divergence was recorded. One host sync."""
        self._read()
        if self._found is None:
            return
        step, bad, exploded = self._found
        if exploded is not None:
            what = (f"the loss exploded to {exploded:.3g} (from {self._first:.3g} at the start, "
                    f"more than {self.growth:.0e} times)")
        else:
            at_fault = [names[i] for i in bad if -len(names) <= i < len(names)]
            what = f"non-finite (inf/NaN) {', '.join(at_fault) or 'values'}"
        raise TrainingDiverged(f"training diverged at step {step}: {what}; nothing after the last good checkpoint "
                               f"was saved. {hint}".strip())
