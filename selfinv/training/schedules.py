"""Learning-rate schedules that know the run's budget, in steps or in wall-clock time.

``warmup_cosine`` (the default) ramps the rate linearly from ``lr / warmup_steps`` to ``lr``
over the first ``warmup`` fraction of the run, then decays it along a half cosine to 0 at
the end of the run (Loshchilov & Hutter 2017, "SGDR"; Goyal et al. 2017 for the warm-up).
The *progress* of the run is the larger of ``step / total_steps`` and, when the run has a
wall-clock budget (``trainer.max_time_minutes``), ``elapsed / budget``: a run stopped by its
time budget ends its schedule when the time is up, not at a step count it never reaches.
A schedule whose progress depends on time is not exactly reproducible (the machine's
speed enters it); runs with a step budget only are.

Example::

    >>> import torch
    >>> opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1.0)
    >>> sched = warmup_cosine(opt, total_steps=100, warmup=0.1)
    >>> [round(factor, 3) for factor in (sched.lr_lambdas[0](s) for s in (0, 9, 10, 55, 100))]
    [0.1, 1.0, 1.0, 0.5, 0.0]

With a time budget, the ramp and the decay follow the elapsed fraction of the budget.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import torch


class RunProgress:
    """Fraction of the run done at step ``s``: ``max(s / total_steps, elapsed / seconds)``, in [0, 1].

    ``elapsed()`` gives the training seconds so far (the trainer's timer, which survives a resume);
    by default the time since the first call."""

    def __init__(self, total_steps: int, seconds: float | None = None,
                 elapsed: Callable[[], float] | None = None):
        self.total_steps = max(1, int(total_steps))
        self.seconds = seconds
        self._elapsed = elapsed
        self._start: float | None = None

    def elapsed(self) -> float:
        if self._elapsed is not None:
            return float(self._elapsed())
        if self._start is None:
            self._start = time.monotonic()
        return time.monotonic() - self._start

    def __call__(self, step: int) -> float:
        p = step / self.total_steps
        if self.seconds:
            p = max(p, self.elapsed() / self.seconds)
        return min(1.0, p)


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup: float = 0.03,
                  seconds: float | None = None, elapsed: Callable[[], float] | None = None
                  ) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over the first ``warmup`` fraction of the run, then a half cosine to 0 (see the module
    docstring). ``seconds``: the run's wall-clock budget, if any, and ``elapsed()`` its training time."""
    if not 0.0 <= warmup < 1.0:
        raise ValueError(f"warmup must be a fraction in [0, 1), got {warmup}")
    progress = RunProgress(total_steps, seconds, elapsed)

    def factor(step: int) -> float:
        p = progress(step)
        if p < warmup:  # linear ramp over the first `warmup` of the run (steps or time), never exactly 0
            return min(1.0, max(p, (step + 1) / progress.total_steps) / warmup)
        q = (p - warmup) / (1.0 - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, q)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
