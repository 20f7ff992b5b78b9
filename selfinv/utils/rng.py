"""Random draws that honour an explicit ``torch.Generator`` on any device.

Every stochastic piece of selfinv (noise, masks, transforms, recorruptions)
takes ``generator: torch.Generator | None``. ``None`` means the global RNG of
the tensor's device. A generator created on another device than the tensors is
an error that names both devices, rather than a silent device copy.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def check_generator(generator: torch.Generator | None, device: torch.device) -> None:
    """Raise if ``generator`` lives on another device type than ``device``."""
    if generator is None:
        return
    if torch.device(generator.device).type != torch.device(device).type:
        raise ValueError(
            f"generator is on device '{generator.device}' but the tensors are on "
            f"'{device}'; create it with torch.Generator(device='{torch.device(device).type}')"
        )


def randn(shape, *, generator=None, device=None, dtype=None) -> Tensor:
    """Standard normal draws of ``shape``."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    check_generator(generator, device)
    return torch.randn(shape, generator=generator, device=device, dtype=dtype)


def rand(shape, *, generator=None, device=None, dtype=None) -> Tensor:
    """Uniform [0, 1) draws of ``shape``."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    check_generator(generator, device)
    return torch.rand(shape, generator=generator, device=device, dtype=dtype)


def randn_like(x: Tensor, generator=None) -> Tensor:
    return randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def rand_like(x: Tensor, generator=None) -> Tensor:
    return rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def rademacher_like(x: Tensor, generator=None) -> Tensor:
    """Independent ±1 entries with probability 1/2 each (mean 0, variance 1), shape / device / dtype of ``x``."""
    return torch.where(rand_like(x, generator) < 0.5, -1.0, 1.0).to(x.dtype)


def randint(low: int, high: int, shape, *, generator=None, device=None) -> Tensor:
    device = torch.device(device) if device is not None else torch.device("cpu")
    check_generator(generator, device)
    return torch.randint(low, high, shape, generator=generator, device=device)


def poisson(rate: Tensor, generator=None) -> Tensor:
    """Poisson draws with the given (non-negative) rate."""
    check_generator(generator, rate.device)
    return torch.poisson(rate, generator=generator)


def binomial(count: Tensor, prob: Tensor, generator=None) -> Tensor:
    """Binomial(count, prob) draws (count a non-negative integer-valued tensor)."""
    check_generator(generator, count.device)
    prob = torch.as_tensor(prob, dtype=count.dtype, device=count.device).expand_as(count)
    return torch.binomial(count, prob.contiguous(), generator=generator)


def standard_gamma(shape_param: Tensor, generator=None) -> Tensor:
    """Gamma(k, 1) draws for every entry of ``shape_param`` (k > 0).

    On the CPU ``marsaglia_tsang_gamma``, vectorised: 1.4–2× faster than torch's own sampler
    (``torch._standard_gamma``, a scalar loop; 16 × 64² draws of Gamma(k), k = 0.5–8.5, one core), which made
    the Gamma recorruptions of GR2R 13 % of its training step. On other devices torch's sampler (one kernel,
    no host synchronisation per rejection round), or Marsaglia–Tsang where this torch's sampler takes no
    generator.
    """
    check_generator(generator, shape_param.device)
    if torch.any(shape_param <= 0):
        raise ValueError(f"gamma shape must be > 0, got min {shape_param.min().item():g}")
    if shape_param.device.type == "cpu":
        return marsaglia_tsang_gamma(shape_param, generator)
    try:
        return torch._standard_gamma(shape_param, generator=generator)
    except TypeError:  # a torch whose sampler takes no generator
        return marsaglia_tsang_gamma(shape_param, generator)


def marsaglia_tsang_gamma(shape_param: Tensor, generator=None) -> Tensor:
    """Gamma(k, 1) draws by Marsaglia & Tsang (2000), "A simple method for generating gamma variables":
    for k >= 1, d = k - 1/3, c = 1/sqrt(9d), accept v = (1 + c z)^3 when
    log u < z^2/2 + d - d v + d log v. For k < 1 draw Gamma(k+1) and multiply by u^(1/k).

    Every entry draws once; the few rejected (≤ 5 % for k ≥ 1) draw again until accepted.

    Example::

        >>> g = torch.Generator().manual_seed(0)
        >>> x = marsaglia_tsang_gamma(torch.full((100000,), 2.5), g)
        >>> round(float(x.mean()), 1), round(float(x.var()), 1)
        (2.5, 2.5)
    """
    check_generator(generator, shape_param.device)
    k = shape_param.reshape(-1)
    if torch.any(k <= 0):
        raise ValueError(f"gamma shape must be > 0, got min {k.min().item():g}")
    boost = k < 1
    kk = torch.where(boost, k + 1, k)
    d = kk - 1.0 / 3.0
    c = torch.rsqrt(9.0 * d)
    tiny = torch.finfo(k.dtype).tiny
    out = torch.empty_like(kk)
    todo: Tensor | None = None  # flat indices still to draw; None: every entry (the first round)
    while True:
        n = k.numel() if todo is None else todo.numel()
        z = torch.randn(n, generator=generator, device=k.device, dtype=k.dtype)
        u = torch.rand(n, generator=generator, device=k.device, dtype=k.dtype)
        dd, cc = (d, c) if todo is None else (d[todo], c[todo])
        v = (1 + cc * z) ** 3
        ok = (v > 0) & (torch.log(u) < 0.5 * z * z + dd - dd * v + dd * torch.log(v.clamp_min(tiny)))
        if todo is None:
            out = torch.where(ok, dd * v, out)
            todo = (~ok).nonzero().squeeze(1)
        else:
            out[todo[ok]] = (dd * v)[ok]
            todo = todo[~ok]
        if todo.numel() == 0:
            break
    if bool(boost.any()):
        u = torch.rand(k.shape, generator=generator, device=k.device, dtype=k.dtype)
        out = torch.where(boost, out * u.clamp_min(1e-30) ** (1.0 / k), out)
    return out.reshape(shape_param.shape)


def beta(a: Tensor, b: Tensor, generator=None) -> Tensor:
    """Beta(a, b) draws as G_a / (G_a + G_b) with independent gamma draws (one call for both)."""
    a, b = torch.broadcast_tensors(a, b)
    g = standard_gamma(torch.stack([a, b]), generator)
    return g[0] / (g[0] + g[1])


def as_per_sample(value, x: Tensor, name: str) -> Tensor:
    """Broadcast a scalar or per-sample (B,) parameter to (B, 1, ..., 1) for ``x``.

    Raises a ValueError naming ``name`` when a per-sample tensor has the wrong length.
    """
    t = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    if t.ndim == 0:
        return t
    t = t.reshape(-1)
    if t.numel() == 1:
        return t.reshape(())
    if t.numel() != x.shape[0]:
        raise ValueError(
            f"{name} has {t.numel()} per-sample values but the batch has {x.shape[0]} samples"
        )
    return t.reshape((-1,) + (1,) * (x.ndim - 1))


def isclose_scalar(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
