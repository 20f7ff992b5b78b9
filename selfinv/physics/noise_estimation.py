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
* ``estimate_noise_correlation``: the spatial autocorrelation of the noise at
  small lags, whether it is white, and the pixel-level sigma consistent with it
  (see its docstring). The Haar-MAD above looks at the finest band only, which
  correlated noise depletes: on such noise it under-estimates sigma (by the
  factor ``NoiseCorrelation.haar_fraction``) and cannot tell that the noise is
  not white; this estimator can.
"""

from __future__ import annotations

import math
import statistics
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
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
    slope, intercept = mean_variance_line(y, n_bins, min_count)
    return slope.clamp_min(0), intercept.clamp_min(0).sqrt()


def variance_zero_level(y: Tensor, n_bins: int = 16, min_count: int = 64) -> float:
    """The signal level ``mu_0 = -b / a`` at which the fitted noise variance ``a mu + b`` vanishes.

    Photon-counting data ``y = o + g k + n`` (``k`` Poisson counts, detector offset ``o``, read noise of
    variance ``s^2``) have ``var(y | mu) = g (mu - o) + s^2``, so ``mu_0 = o - s^2 / g``: a level well
    above 0 is a lower bound of the offset that the Poisson and Poisson–Gaussian models (variance
    ``g mu + s^2``) do not have. ``nan`` when the fitted slope is not positive (no signal-dependent noise).

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.linspace(5, 60, 256).expand(4, 1, 256, 256)
        >>> y = 100 + 2 * torch.poisson(x, generator=g)   # offset 100, gain 2
        >>> abs(variance_zero_level(y) - 100) < 10
        True
    """
    slope, intercept = mean_variance_line(y, n_bins, min_count)
    a, b = float(slope), float(intercept)
    return -b / a if a > 0 else float("nan")


def mean_variance_line(y: Tensor, n_bins: int = 16, min_count: int = 64) -> tuple[Tensor, Tensor]:
    """Weighted least-squares line ``var = a * mu + b`` through binned (local mean, robust noise variance)
    pairs of the finest Haar coefficients (Foi et al. 2008); ``(a, b)`` unclipped, as 0-d tensors."""
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
    return coef[0], coef[1]


# ------------------------------------------------------------------ spatial correlation of the noise

#: 3x3 Laplacian with unit l2 norm: cancels constants and linear ramps of the image, keeps every noise
#: frequency but 0, so the noise covariance can be read back from the residual's covariance
_LAPLACIAN = torch.tensor([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]], dtype=torch.float64) / math.sqrt(20)
_LAP_HALF = 1  # half-width of the Laplacian; its autocorrelation h ⋆ h has half-width 2

#: the whiteness test reads the lags |dy|, |dx| <= TEST_RADIUS (its threshold was measured at this radius)
TEST_RADIUS = 2
#: white-noise threshold on max |ρ| (``white_threshold``): the texture floor and the sampling spread.
#: Measured (benchmarks/correlated_noise.py, "estimator" section): over the 22 natural-gray photographs
#: under white Gaussian noise the statistic reaches 0.27 at sigma = 0.1 and 0.12 at sigma = 0.2 (image
#: texture passing the Laplacian), hence the floor; on pure white noise one lag has standard deviation
#: ≈ 3.7 / sqrt(n_pixels) and the maximum over the 12 lags stays below ≈ 11 / sqrt(n_pixels) in 99 % of
#: the draws, hence 4 standard deviations.
WHITE_FLOOR = 0.3
WHITE_SPREAD_C = 3.7
WHITE_SPREAD_K = 4.0
#: white noise weaker than this fraction of the images' 1-99 % range can read as correlated on strongly
#: textured images (texture passing the Laplacian dominates the kept tiles). Measured (stop 20, white
#: Gaussian noise on scikit-image's images, uint8): flagged at sigma = 2/255 on camera, <= 5/255 on brick
#: and text, <= 10/255 on coins, grass and gravel; read as white at 10/255 on camera and moon; the
#: threshold constants above were set on photographs at sigma >= 0.1 of the range. The advice then says so.
WEAK_NOISE = 0.1
#: once the noise is known to be correlated, lags with |ρ| above max(LENGTH_LEVEL, sampling spread) count
#: towards the correlation length (and make the adaptive window grow)
LENGTH_LEVEL = 0.1


class CorrelatedNoiseWarning(UserWarning):
    """The noise of the measurements is spatially correlated: methods assuming white noise will fail."""


@dataclass(frozen=True)
class NoiseCorrelation:
    """What ``estimate_noise_correlation`` measured.

    Attributes:
        correlation: ``(dy, dx) -> ρ(dy, dx)``, the normalised autocorrelation
            ``corr(n[i, j], n[i + dy, j + dx])`` of the noise for ``|dy|, |dx| <= radius``
            (``dy`` along rows/y, ``dx`` along columns/x; symmetric ``ρ(d) = ρ(-d)``, ``ρ(0, 0) = 1``).
        white: ``statistic <= threshold``.
        statistic: ``max |ρ(d)|`` over the lags ``0 < max(|dy|, |dx|) <= TEST_RADIUS`` (the whiteness test).
        threshold: the largest statistic attributed to white noise (``white_threshold(n_pixels)`` by default).
        correlation_length: the largest ``max(|dy|, |dx|)`` with ``|ρ|`` above ``length_level`` (0 when
            white): the radius a structured mask or UNSURE's coloured variant must cover.
        length_level: ``max(LENGTH_LEVEL, WHITE_SPREAD_K * WHITE_SPREAD_C / sqrt(n_pixels))``.
        sigma: the noise standard deviation to use (``sigma: auto``): ``sigma_white`` when the noise is
            white, else ``sigma_pixel``.
        sigma_pixel: pixel-level standard deviation ``sqrt(c(0))`` from the same fit as ``correlation``.
        sigma_white: the Haar-MAD estimate (``estimate_gaussian_sigma``, median over images), valid for
            white noise only.
        haar_fraction: ``sqrt(1 - ρ(0,1) - ρ(1,0) + (ρ(1,1) + ρ(1,-1))/2)``: the fraction of the pixel
            standard deviation that the finest diagonal Haar band (hence ``sigma_white``) sees under the
            measured correlation (1 for white noise).
        binned_correlation: the largest neighbour correlation left after 2x2 binning (sums of 2x2
            blocks), computed from ``correlation`` (lags outside the window taken as 0).
        n_pixels: number of residual pixels the fit used (after discarding textured tiles).
        noise_to_range: ``sigma_white`` over the 1–99 % percentile range of the images (median over
            image stacks): below ``WEAK_NOISE`` a "correlated" verdict may be image texture (the advice
            says so).
        advice: one paragraph for the user: what was found and which methods stay valid.
    """

    correlation: dict[tuple[int, int], float]
    white: bool
    statistic: float
    threshold: float
    correlation_length: int
    length_level: float
    sigma: float
    sigma_pixel: float
    sigma_white: float
    haar_fraction: float
    binned_correlation: float
    n_pixels: int
    advice: str = field(repr=False)
    noise_to_range: float = float("nan")

    @property
    def radius(self) -> int:
        """The largest lag of ``correlation``."""
        return max(max(abs(dy), abs(dx)) for dy, dx in self.correlation)

    def neighbours(self) -> dict[str, float]:
        """``{"x1", "x2", "y1", "y2"}``: the correlation at lags ±1, ±2 along x and y."""
        return {"x1": self.correlation[(0, 1)], "x2": self.correlation[(0, 2)],
                "y1": self.correlation[(1, 0)], "y2": self.correlation[(2, 0)]}


def _half_window(r: int) -> list[tuple[int, int]]:
    """One lag of each pair ``±d`` with ``|dy|, |dx| <= r``; ``(0, 0)`` first."""
    return [(0, 0)] + [(0, dx) for dx in range(1, r + 1)] + [(dy, dx) for dy in range(1, r + 1)
                                                           for dx in range(-r, r + 1)]


def _canonical(dy: int, dx: int) -> tuple[int, int]:
    return (-dy, -dx) if dy < 0 or (dy == 0 and dx < 0) else (dy, dx)


def _design(radius: int) -> tuple[Tensor, list[tuple[int, int]], list[tuple[int, int]]]:
    """``(A, lags, unknowns)`` with ``E[r(i) r(i+d)] = Σ_e A[d, e] c(e)`` for the Laplacian residual
    ``r = h ⋆ n``: ``E[r(i) r(i+d)] = Σ_t a(t) c(d + t)``, ``a = h ⋆ h``, ``c`` zero beyond ``radius``."""
    h = _LAPLACIAN
    k = h.shape[0]
    a: dict[tuple[int, int], float] = {}
    for py in range(k):
        for px in range(k):
            for qy in range(k):
                for qx in range(k):
                    t = (qy - py, qx - px)
                    a[t] = a.get(t, 0.0) + float(h[py, px] * h[qy, qx])
    unknowns = _half_window(radius)
    index = {e: j for j, e in enumerate(unknowns)}
    lags = _half_window(radius + 2 * _LAP_HALF)
    A = torch.zeros(len(lags), len(unknowns), dtype=torch.float64)
    for m, (dy, dx) in enumerate(lags):
        for (ty, tx), w in a.items():
            e = _canonical(dy + ty, dx + tx)
            if e in index and w != 0.0:
                A[m, index[e]] += w
    return A, lags, unknowns


def _as_images(y: Tensor | Sequence[Tensor], max_pixels: int | None) -> list[Tensor]:
    """Every channel of every measurement, centre-cropped by a common factor when they hold more than
    ``max_pixels`` pixels in total, as float64 ``(N, H, W)`` stacks of equal-size planes."""
    items = [y] if isinstance(y, Tensor) else list(y)
    if not items:
        raise ValueError("cannot estimate the noise correlation from an empty set of measurements")
    planes = []
    for v in items:
        ndims = (4,) if isinstance(y, Tensor) else (3, 4)
        ok = isinstance(v, Tensor) and not v.is_complex() and v.ndim in ndims
        if not ok:
            shape = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
            raise ValueError(f"expected real measurements of shape (B, C, H, W) or a list of (C, H, W), got {shape}")
        planes += list(v.detach().reshape(-1, *v.shape[-2:]).unbind(0))
    total = sum(p.numel() for p in planes)
    if max_pixels is not None and total > max_pixels:
        f = math.sqrt(max_pixels / total)
        cropped = []
        for p in planes:
            H, W = p.shape
            h, w = max(min(H, 64), int(H * f)), max(min(W, 64), int(W * f))
            top, left = (H - h) // 2, (W - w) // 2
            cropped.append(p[top:top + h, left:left + w])
        planes = cropped
    groups: dict[tuple[int, int], list[Tensor]] = {}
    for p in planes:
        groups.setdefault((int(p.shape[0]), int(p.shape[1])), []).append(p)
    return [torch.stack(g).to(torch.float64) for g in groups.values()]


def _block_statistics(imgs: Tensor, lags: list[tuple[int, int]], reach: int, block: int) -> tuple[Tensor, Tensor]:
    """Per tile of the residual of each image of ``imgs`` ``(N, H, W)``: mean of ``r(i) r(i+d)`` for each lag
    (``(n_tiles, n_lags)``), and the number of pixels of each tile."""
    imgs = imgs - imgs.mean(dim=(-2, -1), keepdim=True)
    r = F.conv2d(imgs[:, None], _LAPLACIAN.to(imgs)[None, None])
    H, W = r.shape[-2:]
    h0, w0 = H - 2 * reach, W - 2 * reach
    if h0 < 1 or w0 < 1:
        return torch.zeros(0, len(lags), dtype=torch.float64), torch.zeros(0, dtype=torch.float64)
    bh, bw = min(block, h0), min(block, w0)
    hc, wc = h0 // bh * bh, w0 // bw * bw
    base = r[..., reach:reach + hc, reach:reach + wc]
    cols = []
    for dy, dx in lags:
        prod = base * r[..., reach + dy:reach + dy + hc, reach + dx:reach + dx + wc]
        cols.append(F.avg_pool2d(prod, (bh, bw)).flatten())
    stats = torch.stack(cols, dim=1)
    return stats, torch.full((stats.shape[0],), float(bh * bw), dtype=torch.float64)


def _fit(images: list[Tensor], radius: int, block: int, keep: float) -> tuple[dict[tuple[int, int], float], float, int]:
    """``(ρ on the half window, c(0), n_pixels)``: least-squares noise autocovariance from the lowest-energy
    ``keep`` fraction of the residual tiles."""
    reach = radius + 2 * _LAP_HALF
    A, lags, unknowns = _design(radius)
    parts = [_block_statistics(img, lags, reach, block) for img in images]
    stats, counts = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    if stats.shape[0] == 0:
        side = 2 * reach + 3
        raise ValueError(f"images must be at least {side}x{side} to estimate the noise correlation at radius "
                         f"{radius}, got {tuple(images[0].shape[-2:])}")
    order = torch.argsort(stats[:, 0])  # residual energy, lowest first
    cum = torch.cumsum(counts[order], 0)
    n_keep = min(int(torch.searchsorted(cum, keep * float(cum[-1]))) + 1, len(order))
    chosen = order[:n_keep]
    w = counts[chosen]
    b = (stats[chosen] * w[:, None]).sum(0) / w.sum()
    c = torch.linalg.lstsq(A, b[:, None]).solution[:, 0]
    c0 = float(c[0])
    if not (float(b[0]) > 0 and c0 > 1e-9 * float(b[0])):  # no noise (e.g. constant measurements)
        return {e: float(e == (0, 0)) for e in unknowns}, 0.0, int(w.sum())
    return {e: float(c[j]) / c0 for j, e in enumerate(unknowns)}, c0, int(w.sum())


def _symmetric(half: dict[tuple[int, int], float]) -> dict[tuple[int, int], float]:
    full = {}
    for (dy, dx), v in half.items():
        full[(dy, dx)] = full[(-dy, -dx)] = v
    return dict(sorted(full.items()))


def white_threshold(n_pixels: int) -> float:
    """The largest ``max |ρ|`` attributed to white noise for a fit on ``n_pixels`` residual pixels:
    ``max(WHITE_FLOOR, WHITE_SPREAD_K * WHITE_SPREAD_C / sqrt(n_pixels))``."""
    return max(WHITE_FLOOR, WHITE_SPREAD_K * WHITE_SPREAD_C / math.sqrt(max(n_pixels, 1)))


def estimate_noise_correlation(y: Tensor | Sequence[Tensor], radius: int | None = None, max_radius: int = 6,
                               block: int = 32, keep: float = 0.5, threshold: float | None = None,
                               warn: bool = True, max_pixels: int | None = 2**22) -> NoiseCorrelation:
    """Spatial autocorrelation of the noise of measurements ``y``, whether it is white, and the pixel sigma.

    Method. The residual ``r = h ⋆ y`` of a unit-norm 3x3 Laplacian ``h`` cancels the smooth part
    of the image; its noise part has covariance ``E[r(i) r(i+d)] = Σ_t a(t) c(d + t)`` with
    ``a = h ⋆ h`` and ``c`` the noise autocovariance. The empirical covariances of ``r`` at the
    lags ``|dy|, |dx| <= R + 2`` give an over-determined linear system for ``c`` on
    ``|dy|, |dx| <= R`` (``c(e) = c(-e)``, zero beyond), solved by least squares;
    ``ρ = c / c(0)`` and ``sigma_pixel = sqrt(c(0))`` come from the same fit, so they are
    consistent. Image texture also passes the Laplacian and reads as positive correlation; to
    limit it the residual is cut into ``block x block`` tiles and only the ``keep`` fraction of
    the tiles with the lowest residual energy is used. White noise reads ``ρ ≈ 0`` and stationary
    noise of neighbour correlation ``ρ₁`` reads ``≈ ρ₁`` (measured errors on the bundled
    photographs: ``benchmarks/results/correlated_noise.md``).

    Whiteness. The test is always read at ``R = TEST_RADIUS = 2`` (lags ±1, ±2 in x, y and the
    diagonals): ``white = max |ρ(d)| <= threshold`` with, by default,
    ``threshold = white_threshold(n_pixels) = max(WHITE_FLOOR, WHITE_SPREAD_K · WHITE_SPREAD_C /
    sqrt(n_pixels))`` = ``max(0.3, 14.8 / sqrt(n_pixels))``: the floor is above every reading on the
    22 natural-gray photographs under white noise of sigma >= 0.1 (image texture), the second
    term is 4 standard deviations of one lag on pure white noise. Weak noise on strongly textured
    images can still read as correlated (texture dominates the residual: sigma = 0.05 flags 3 of
    the 22 photographs), and correlations below the floor go undetected.

    Radius. ``correlation`` covers ``|dy|, |dx| <= radius``; with ``radius=None`` it starts at
    ``TEST_RADIUS`` and, when the noise is not white, grows while some correlation on the edge of
    the window exceeds ``length_level`` (up to ``max_radius``): a correlation truncated by the
    window biases the whole fit (and reads smaller than it is on the edge). The correlation
    length is the largest lag above ``length_level`` = ``max(LENGTH_LEVEL = 0.1, sampling spread)``.

    Noise level. ``sigma_white`` is the Haar-MAD estimate of the module docstring: robust and
    accurate for white noise, but correlated noise depletes the finest band, so it sees only
    ``haar_fraction`` of the pixel standard deviation. ``sigma`` is what ``sigma: auto`` uses:
    ``sigma_white`` when the noise is white (the most accurate estimate under that hypothesis),
    else ``sigma_pixel``, the marginal standard deviation consistent with the measured
    correlation — the ``sigma`` of ``ColoredGaussianNoise(sigma, kernel)`` — so never the silent
    under-estimate. With correlated noise no scalar sigma makes SURE or R2R valid: the warning
    (and ``advice``) says so.

    Args:
        y: measurements ``(B, C, H, W)`` or a list of ``(C, H, W)`` (sizes may differ); every
            channel of every item is assumed to carry the same stationary noise.
        radius: lags ``|dy|, |dx| <= radius`` reported, ``>= TEST_RADIUS`` (``None``: adaptive, see above).
        max_radius: largest radius of the adaptive search.
        block: tile size of the texture screening.
        keep: fraction of the tiles (by pixel count, lowest residual energy first) used; 1 uses all.
        threshold: white-noise threshold on the statistic (default ``white_threshold(n_pixels)``).
        warn: emit a ``CorrelatedNoiseWarning`` carrying ``advice`` when the noise is not white.
        max_pixels: above this many pixels in total, every image is centre-cropped by a common factor
            (the estimate is then already far more precise than the threshold).

    Returns:
        a ``NoiseCorrelation``.

    Example:
        >>> import math, torch
        >>> from selfinv.physics import ColoredGaussianNoise
        >>> a = 1 - 1 / math.sqrt(2)                       # kernel [a, 1, a]: neighbour correlation 0.5
        >>> k = torch.outer(torch.tensor([a, 1, a]), torch.tensor([a, 1, a]))
        >>> y = ColoredGaussianNoise(0.1, k)(torch.zeros(1, 1, 256, 256), torch.Generator().manual_seed(0))
        >>> est = estimate_noise_correlation(y, warn=False)
        >>> est.white, round(est.correlation[(0, 1)], 1), round(est.sigma, 2), round(est.sigma_white, 2)
        (False, 0.5, 0.1, 0.05)
    """
    if radius is not None and radius < TEST_RADIUS:
        raise ValueError(f"radius must be >= {TEST_RADIUS} (or None: adaptive), got {radius}")
    if max_radius < TEST_RADIUS:
        raise ValueError(f"max_radius must be >= {TEST_RADIUS}, got {max_radius}")
    if block < 4:
        raise ValueError(f"block must be >= 4, got {block}")
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    images = _as_images(y, max_pixels)
    test_rho, test_c0, n_pixels = _fit(images, TEST_RADIUS, block, keep)
    thr = white_threshold(n_pixels) if threshold is None else float(threshold)
    statistic = max(abs(v) for d, v in test_rho.items() if d != (0, 0))
    white = statistic <= thr
    r = TEST_RADIUS if radius is None else radius
    rho, c0 = (test_rho, test_c0) if r == TEST_RADIUS else _fit(images, r, block, keep)[:2]
    unfitted = None  # the radius at which no noise autocovariance fits the residual, if the search met one
    level = max(LENGTH_LEVEL, WHITE_SPREAD_K * WHITE_SPREAD_C / math.sqrt(max(n_pixels, 1)))
    while radius is None and not white and r < max_radius and \
            max(abs(v) for (dy, dx), v in rho.items() if max(abs(dy), abs(dx)) == r) > level:
        r += 1
        rho, c0 = _fit(images, r, block, keep)[:2]
        if c0 <= 0 < test_c0:  # no noise fits the wider window: a periodic pattern (stripes), not noise
            unfitted = r
            break
    correlation = _symmetric(rho)
    length = 0 if white or unfitted else max([max(abs(dy), abs(dx)) for (dy, dx), v in correlation.items()
                                              if (dy, dx) != (0, 0) and abs(v) > level] or [0])
    f2 = 1 - correlation[(0, 1)] - correlation[(1, 0)] + 0.5 * (correlation[(1, 1)] + correlation[(1, -1)])
    haar_fraction = math.sqrt(max(f2, 0.0))
    sigma_white = float(torch.cat([estimate_gaussian_sigma(imgs[:, None]) for imgs in images]).median())
    sigma_pixel = math.sqrt(c0)
    sigma = sigma_white if white or unfitted else sigma_pixel
    binned = _binned_correlation(correlation)
    spread = statistics.median(_percentile_range(imgs) for imgs in images)
    noise_to_range = sigma_white / spread if spread > 0 else float("inf")
    advice = _pattern_advice(unfitted, statistic, thr, sigma_white) if unfitted else \
        _advice(correlation, white, statistic, thr, length, level, r, max_radius, sigma_pixel, sigma_white,
                haar_fraction, binned, noise_to_range)
    result = NoiseCorrelation(correlation=correlation, white=white, statistic=statistic, threshold=thr,
                              correlation_length=length, length_level=level, sigma=sigma, sigma_pixel=sigma_pixel,
                              sigma_white=sigma_white, haar_fraction=haar_fraction, binned_correlation=binned,
                              n_pixels=n_pixels, advice=advice, noise_to_range=noise_to_range)
    if warn and not white:
        warnings.warn(advice, CorrelatedNoiseWarning, stacklevel=2)
    return result


def _percentile_range(imgs: Tensor, max_samples: int = 2**20) -> float:
    """The 1-99 % percentile range of the pixels of ``imgs`` (an even subsample of at most ``max_samples``)."""
    flat = imgs.reshape(-1)
    flat = flat[:: max(1, flat.numel() // max_samples)]
    lo, hi = torch.quantile(flat, torch.tensor([0.01, 0.99], dtype=flat.dtype, device=flat.device)).tolist()
    return hi - lo


def _binned_correlation(correlation: dict[tuple[int, int], float], factor: int = 2) -> float:
    """Largest neighbour correlation of ``factor x factor`` block sums, from ``correlation`` (zero outside)."""
    def cov(DY: int, DX: int) -> float:
        return sum(correlation.get((factor * DY + qy - py, factor * DX + qx - px), 0.0)
                   for py in range(factor) for px in range(factor) for qy in range(factor) for qx in range(factor))

    c0 = cov(0, 0)
    return max(abs(cov(0, 1)), abs(cov(1, 0))) / c0 if c0 > 0 else 0.0


def _advice(correlation, white, statistic, threshold, length, level, radius, max_radius, sigma_pixel,
            sigma_white, haar_fraction, binned, noise_to_range: float = float("inf")) -> str:
    nb = (f"ρ(x±1) = {correlation[(0, 1)]:.2f}, ρ(y±1) = {correlation[(1, 0)]:.2f}, "
          f"ρ(x±2) = {correlation[(0, 2)]:.2f}, ρ(y±2) = {correlation[(2, 0)]:.2f}")
    if white:
        return (f"The noise reads as white ({nb}; max |ρ| = {statistic:.2f} <= {threshold:.2f}, the largest value "
                f"white noise and image texture give here). Methods assuming pixel-wise independent noise apply: "
                f"SURE / R2R with sigma = {sigma_white:.4g} (Haar-MAD), UNSURE (variant: gaussian), "
                f"Noise2Void/Noise2Self splitting, blind-spot networks, Neighbor2Neighbor. Correlations weaker "
                f"than {threshold:.2f} are not detected.")
    reach = f"{length} pixel(s) (|ρ| > {level:.2f})"
    if length >= max_radius:
        reach = f"at least {max_radius} pixels (the edge of the largest window, max_radius = {max_radius})"
    r = max(length, 1)
    return (f"The noise is spatially CORRELATED ({nb}; max |ρ| = {statistic:.2f} > {threshold:.2f}, the largest "
            f"value white noise and image texture give here); the correlation reaches {reach}. Methods that "
            f"assume pixel-wise independent noise learn to predict the noise from its correlated neighbours and "
            f"remove little of it: SURE and R2R with a scalar sigma, UNSURE (variant: gaussian), "
            f"Noise2Void/Noise2Self splitting as shipped, blind-spot networks, Neighbor2Neighbor. Methods that "
            f"stay valid: UNSURE with variant: colored and radius >= {r} (one multiplier per offset within the "
            f"radius); splitting with a structured mask, exclusion_radius >= {r} (the network never sees the "
            f"hidden pixels' neighbourhood); the autoencoder loss with the bottleneck autoencoder backbone (no "
            f"noise assumption, but not MMSE-optimal); or 2x2 binning of the measurements (it halves the "
            f"resolution and leaves a neighbour correlation of about {binned:.2f}) followed by a white-noise "
            f"method. The pixel noise standard deviation is about {sigma_pixel:.4g}; the Haar-MAD estimate "
            f"({sigma_white:.4g}) sees only {100 * haar_fraction:.0f} % of it.{_weak_noise_caveat(noise_to_range)}")


def _pattern_advice(unfitted: int, statistic: float, threshold: float, sigma_white: float) -> str:
    return (f"The measurements are not white noise on a smooth image (max |ρ| = {statistic:.2f} > {threshold:.2f}), "
            f"but no noise correlation over lags up to {unfitted} fits them either: their residual holds a periodic "
            f"pattern (stripes of period 2: image detail, or fixed-pattern row / column noise), which no finite "
            f"correlation window describes. The noise level is taken from the Haar-MAD estimate, which period-2 "
            f"stripes do not reach: sigma ≈ {sigma_white:.4g}. If the stripes are noise (a detector's column "
            f"pattern), no loss here removes them: subtract the pattern (e.g. a dark frame) first.")


def _weak_noise_caveat(noise_to_range: float) -> str:
    if not noise_to_range < WEAK_NOISE:
        return ""
    return (f" Caution: this noise is weak against the image (Haar-MAD sigma ≈ {100 * noise_to_range:.1f} % of "
            f"its 1-99 % range, below {100 * WEAK_NOISE:.0f} %): on strongly textured images white noise this weak "
            f"can read as correlated, the texture passing the test. Confirm on a flat region, a blank or dark "
            f"frame, or the difference of two exposures of the same scene.")
