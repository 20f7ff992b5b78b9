"""Noise-level estimation from the measurements themselves.

SURE and R2R need the noise level; users rarely know it. Both estimators work on
the finest diagonal Haar wavelet coefficients of each image,

    d = (y[2i,2j] - y[2i,2j+1] - y[2i+1,2j] + y[2i+1,2j+1]) / 2,

an orthonormal transform, so for white noise of variance v each ``d`` has
variance v while smooth image content nearly cancels.

* ``estimate_gaussian_sigma``: Donoho & Johnstone (1994) robust median absolute
  deviation, ``sigma = median(|d|) / 0.6745`` (per image).
* ``estimate_poisson_gaussian``: the variance-vs-mean fit of Foi et al. (2008),
  "Practical Poissonian-Gaussian noise modeling and fitting for single-image
  raw-data": blocks are binned by their local mean ``mu``; in each bin the noise
  variance is the squared MAD of ``d``; a weighted least-squares line
  ``var = gain * mu + sigma^2`` gives ``(gain, sigma)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

_MAD_TO_STD = 0.6744897501960817  # Phi^{-1}(3/4)


def _haar_finest(y: Tensor) -> tuple[Tensor, Tensor]:
    """(low-pass 2x2 means, diagonal details) of ``y`` (B, C, H, W), cropped to even size."""
    if y.ndim != 4:
        raise ValueError(f"expected measurements of shape (B, C, H, W), got {tuple(y.shape)}")
    if y.shape[-1] < 4 or y.shape[-2] < 4:
        raise ValueError(f"images must be at least 4x4 to estimate noise, got {tuple(y.shape[-2:])}")
    H, W = y.shape[-2] // 2 * 2, y.shape[-1] // 2 * 2
    y = y[..., :H, :W]
    a, b = y[..., 0::2, 0::2], y[..., 0::2, 1::2]
    c, d = y[..., 1::2, 0::2], y[..., 1::2, 1::2]
    return (a + b + c + d) / 4, (a - b - c + d) / 2


def estimate_gaussian_sigma(y: Tensor) -> Tensor:
    """Per-sample Gaussian noise standard deviation, shape (B,). Donoho & Johnstone (1994)."""
    _, d = _haar_finest(y)
    return d.flatten(1).abs().median(dim=1).values / _MAD_TO_STD


def estimate_poisson_gaussian(y: Tensor, n_bins: int = 16, min_count: int = 64) -> tuple[Tensor, Tensor]:
    """Fit ``var(y | mu) = gain * mu + sigma^2`` over the whole batch (shared parameters).

    Returns ``(gain, sigma)`` as 0-d tensors, both clipped at 0. Foi et al. (2008).
    Raises if the measurements span too few intensity levels to separate the two.
    """
    mu, d = _haar_finest(y)
    mu, d = mu.flatten(), d.flatten()
    lo, hi = torch.quantile(mu, 0.01), torch.quantile(mu, 0.99)
    edges = torch.linspace(float(lo), float(hi), n_bins + 1, device=y.device, dtype=y.dtype)
    idx = torch.bucketize(mu, edges[1:-1])
    means, variances, weights = [], [], []
    for k in range(n_bins):
        sel = idx == k
        n = int(sel.sum())
        if n < min_count:
            continue
        dk = d[sel]
        mad = (dk - dk.median()).abs().median() / _MAD_TO_STD
        means.append(mu[sel].mean())
        variances.append(mad**2)
        weights.append(n / (mad**2 + 1e-12) ** 2)  # inverse variance of a variance estimate ~ n / v^2
    if len(means) < 2:
        raise ValueError(
            "cannot fit a Poisson-Gaussian model: the measurements cover fewer than two "
            f"intensity bins with >= {min_count} pixels each"
        )
    m, v, w = torch.stack(means), torch.stack(variances), torch.stack(weights)
    w = w / w.sum()
    design = torch.stack([m, torch.ones_like(m)], dim=1)
    sw = w.sqrt().unsqueeze(1)
    coef = torch.linalg.lstsq(design * sw, (v * w.sqrt()).unsqueeze(1)).solution.squeeze(1)
    gain, s2 = coef[0].clamp_min(0), coef[1].clamp_min(0)
    return gain, s2.sqrt()
