"""Is a measurement possible under its noise model? Finite, non-empty, inside the support.

The noise model declares its ``support``: Poisson noise produces ``y >= 0``, Gamma noise
``y > 0``, Gaussian and Poisson–Gaussian noise any real value. A measurement outside the
support cannot come from the declared model — a loss built on that model (Poisson SURE,
GR2R) would return a meaningless number — so it is refused with the count and the
extreme value.

Example::

    >>> import torch
    >>> from selfinv.physics import PoissonNoise
    >>> check_measurement(torch.tensor([[0.0, 2.0]]), PoissonNoise(1.0), "SURE")
    >>> check_measurement(torch.tensor([[-1.0, 2.0]]), PoissonNoise(1.0), "SURE")
    Traceback (most recent call last):
    ...
    ValueError: SURE: PoissonNoise measurements are >= 0, but 1 of 2 values are negative (min -1); ...
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def check_measurement(y: Any, noise: Any, who: str) -> None:
    """Raise ``ValueError``/``TypeError`` naming ``who`` if ``y`` is not a possible measurement of ``noise``."""
    if not isinstance(y, Tensor):
        raise TypeError(f"{who}: expected the measurements as a torch.Tensor, got {type(y).__name__}")
    if not (y.is_floating_point() or y.is_complex()):
        raise TypeError(f"{who}: expected floating-point measurements, got dtype {y.dtype}")
    if y.ndim < 2 or y.shape[0] == 0 or y.numel() == 0:
        raise ValueError(f"{who}: expected a non-empty batch of measurements (B, ...), got shape {tuple(y.shape)}")
    bad = ~torch.isfinite(y)
    n_bad = int(bad.sum())
    if n_bad:
        first = [int(i) for i in bad.nonzero()[0].tolist()]
        raise ValueError(f"{who}: the measurements hold {n_bad} non-finite value(s) (NaN/inf) of {y.numel()}, "
                         f"the first at index {tuple(first)}; remove or inpaint them first")
    name = type(noise).__name__
    support = getattr(noise, "support", "real")
    if support == "positive":
        n = int((y <= 0).sum())
        if n:
            raise ValueError(f"{who}: {name} measurements are > 0, but {n} of {y.numel()} values are <= 0 "
                             f"(min {float(y.min()):.4g}); is the noise model right?")
    elif support == "nonnegative":
        n = int((y < 0).sum())
        if n:
            raise ValueError(f"{who}: {name} measurements are >= 0, but {n} of {y.numel()} values are negative "
                             f"(min {float(y.min()):.4g}); is the noise model right (Poisson-Gaussian allows "
                             f"negative values)?")
