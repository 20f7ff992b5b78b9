"""``sigma: auto`` / ``gain: auto``: the noise level estimated from the training measurements.

SURE and R2R need the noise level; users rarely know it. A config may write
``physics.noise.args: {sigma: auto}`` (Gaussian, Poisson-Gaussian) or ``{gain:
auto}`` (Poisson, Poisson-Gaussian). Before anything is built, the value is
estimated from the **training measurements** (``selfinv.physics.noise_estimation``):

* Gaussian: per-measurement robust Haar-MAD estimate (Donoho & Johnstone 1994),
  median over the measurements;
* Poisson / Poisson-Gaussian: the variance-vs-mean fit ``var = gain mu + sigma^2``
  (Foi et al. 2008) over (at most ``max_items``) measurements;
* Poisson whose measurements all lie on a lattice ``{q k : k = 0, 1, 2, ...}`` (photon counts, possibly
  scaled): ``gain = q`` exactly (``count_lattice``) — under the model ``y = gain × counts`` the smallest
  step between values is the gain, whereas the variance fit is off by up to 80 % on textured images (image
  texture adds variance that grows with brightness); the fit is kept as a check and a warning says when it
  disagrees with ``q`` by more than ``LATTICE_AGREEMENT`` (the data are then not ``q × Poisson counts``).

Both estimators read the noise off image-domain measurements, so ``auto`` is only
accepted for operators that declare ``image_domain`` (denoising, blur,
downsampling), and only for the parameters the noise model declares
``estimable``. The estimate is deterministic given the data, hence the same on
every DDP rank; it is logged, written to ``<output_dir>/noise_estimate.json`` and
stored in the checkpoint hyper-parameters (the resolved config holds the number).

Photon-counting measurements (Poisson, Poisson-Gaussian) whose fitted noise variance vanishes well
above zero carry a detector offset their model lacks: ``fit`` then gives a
``DetectorOffsetWarning`` naming the level and ``data.offset``.

On the user's image-domain measurements ``fit`` also measures the spatial
correlation of the noise (``measure_noise_correlation``) when the loss assumes
something about it (``Loss.tolerated_noise_correlation``) or ``sigma`` is
``auto``: a correlation longer than the loss tolerates is a
``CorrelatedNoiseWarning`` naming the methods that stay valid, and the
measurement is kept in ``noise_estimate.json``.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any

import torch
from torch import Tensor

from selfinv.physics.noise_estimation import CorrelatedNoiseWarning, NoiseCorrelation, estimate_noise_correlation

AUTO = "auto"


def is_auto(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower() == AUTO


def auto_noise_args(noise_name: str, noise_args: dict[str, Any]) -> list[str]:
    """Names of the noise arguments set to ``'auto'``; raises if the noise model does not declare them
    ``estimable``."""
    from selfinv import registry

    auto = [k for k, v in noise_args.items() if is_auto(v)]
    if not auto:
        return []
    allowed = registry.resolve("noise", noise_name, "physics.noise").estimable
    bad = [k for k in auto if k not in allowed]
    if bad:
        raise ValueError(f"physics.noise.args.{bad[0]}: 'auto' (estimated from the measurements) is possible for "
                         f"{list(allowed) or 'no argument'} of noise '{noise_name}'")
    return auto


def physics_is_image_domain(physics_name: str) -> bool:
    from selfinv import registry

    return bool(registry.resolve("physics", physics_name, "physics").image_domain)


def estimate_noise_args(y: Tensor | list[Tensor], noise_name: str, which: list[str],
                        max_items: int = 256) -> dict[str, float]:
    """Estimate the noise arguments ``which`` of ``noise_name`` from measurements ``y``.

    ``y`` is ``(N, C, H, W)`` or a list of ``(C, H, W)`` measurements (sizes may differ).
    Returns ``{name: value}`` for the names in ``which`` only.
    """
    from selfinv.physics.noise_estimation import estimate_gaussian_sigma, estimate_poisson_gaussian

    ys = list(y.unbind(0)) if isinstance(y, Tensor) else list(y)
    if not ys:
        raise ValueError("cannot estimate the noise level from an empty set of measurements")
    ys = ys[:max_items]
    if any(v.is_complex() or v.ndim != 3 for v in ys):
        raise ValueError(f"noise estimation expects real (C, H, W) measurements, got {tuple(ys[0].shape)} "
                         f"{ys[0].dtype}")
    if noise_name == "gaussian":
        sig = torch.cat([estimate_gaussian_sigma(v[None].float()) for v in ys])
        return {"sigma": float(sig.median())}
    gain, sigma = estimate_poisson_gaussian(_common_crops(ys))
    found = {"gain": float(gain), "sigma": float(sigma)}
    return {k: found[k] for k in which}


#: the variance fit must lie within this factor of the lattice step for the lattice to be taken silently:
#: measured on Poisson counts (100-500 photons, 4 x 256², 3 draws) of moon, camera, coins and cell, the fit
#: read 0.70-1.80 x the true gain of 1 (coins: bright, textured coins), 0.77-1.11 at 5-40 photons
LATTICE_AGREEMENT = 2.0
#: a set of values counts as a lattice only if it has at most this fraction of distinct values
LATTICE_MAX_DISTINCT = 0.5


class CountLatticeWarning(UserWarning):
    """``gain: auto`` on data that lie on a lattice of step ``q`` whose noise variance says another gain."""


def count_lattice(y: Tensor | list[Tensor], max_values: int = 2**22, dtype: torch.dtype | None = None
                  ) -> float | None:
    """The step ``q`` of the lattice ``{q k : k = 0, 1, 2, ...}`` holding every value of ``y``, or ``None``.

    Photon counts scaled by a gain ``g`` (``y = g k``, ``k`` integer) give ``q = g``: the smallest positive
    difference between two values, provided every value is a non-negative integer multiple of it (to
    ``1e-3 q + 1e-6 y``: float32 storage) and there are at most ``LATTICE_MAX_DISTINCT`` distinct values per
    value read (continuous data have about as many as pixels). The first ``max_values`` values are read. ``q`` is the
    least-squares step of the lattice, rounded to ``dtype`` (default: that of ``y``; float32 data whose
    step is 1 give exactly 1).

    Example:
        >>> import torch
        >>> counts = torch.poisson(torch.full((1, 1, 64, 64), 20.0), generator=torch.Generator().manual_seed(0))
        >>> count_lattice(2.5 * counts), count_lattice(counts + 0.1 * torch.rand(counts.shape))
        (2.5, None)
    """
    items = [y] if isinstance(y, Tensor) else list(y)
    if not items:
        return None
    v = torch.cat([t.detach().reshape(-1) for t in items])[:max_values].double()
    if v.numel() < 2 or not bool(torch.isfinite(v).all()) or float(v.min()) < 0:
        return None
    u = torch.unique(v)
    if u.numel() < 2 or u.numel() > LATTICE_MAX_DISTINCT * v.numel():
        return None
    low = u[:64]  # the smallest values carry the smallest rounding errors
    q = float((low[1:] - low[:-1]).min())
    for bound in (100.0, float("inf")):  # refine on the low values first: u / q must round right up to max(u)
        sel = u[u <= bound * q] if int((u <= bound * q).sum()) >= 2 else u
        k = (sel / q).round()
        if float(k.abs().sum()) == 0:
            return None
        q = float((sel * k).sum() / (k * k).sum())  # least squares
    if q <= 0 or float(((u - q * k).abs() - 1e-6 * u).max()) > 1e-3 * q:
        return None
    dtype = dtype or items[0].dtype
    return float(torch.tensor(q, dtype=dtype)) if dtype.is_floating_point else q


def _lattice_gain(measurements: Tensor | list[Tensor], scale: float, fitted: float) -> tuple[float, str] | None:
    """``(gain, method)`` from the count lattice of the measurements in the data's units, or None."""
    import warnings

    items = [measurements] if isinstance(measurements, Tensor) else list(measurements)
    q = count_lattice([m.double() * float(scale) for m in items], dtype=items[0].dtype)
    if q is None:
        return None
    ratio = fitted / q
    if 1 / LATTICE_AGREEMENT <= ratio <= LATTICE_AGREEMENT:
        return q, (f"count lattice: every value is an integer multiple of {q:g} (photon counts × gain), so "
                   f"gain = {q:g}; the variance-vs-mean fit (Foi et al. 2008) gave {fitted:.4g}")
    warnings.warn(f"gain: auto: the measurements are integer multiples of {q:g}, but their noise variance grows "
                  f"as {fitted:.4g} × the level ({ratio:.2f} × {q:g}): they are not {q:g} × Poisson counts (a gain "
                  f"that is not the data's step, read noise, or a detector offset); using the variance fit, "
                  f"{fitted:.4g}. Give the gain, or model read noise with poisson_gaussian",
                  CountLatticeWarning, stacklevel=3)
    return None


def _common_crops(ys: list[Tensor]) -> Tensor:
    """``(N, C, h, w)``: the measurements cropped to their smallest common even size (all of each when sizes
    agree), for the variance-against-level fits that pool them."""
    h = min(v.shape[-2] for v in ys) // 2 * 2
    w = min(v.shape[-1] for v in ys) // 2 * 2
    return torch.stack([v[..., :h, :w] for v in ys]).float()


def resolve_auto_noise(cfg, measurements: list[Tensor] | Tensor, scale: float = 1.0,
                       correlation: NoiseCorrelation | None = None) -> tuple[Any, dict | None]:
    """Return ``(cfg', record)``: a copy of ``cfg`` with every ``auto`` noise argument replaced by its
    estimate from ``measurements`` (the training measurements, in normalised units ``y / scale``), converted
    back to the data's own units (``sigma`` and ``gain`` scale with the data), and a record
    ``{"noise": name, "estimated": {...}, "n_measurements": N, "method": ...}`` (None when nothing was
    ``auto``; then ``cfg`` itself is returned)."""
    noise = cfg.physics.noise
    which = auto_noise_args(noise.name, noise.args)
    if not which:
        return cfg, None
    if not physics_is_image_domain(cfg.physics.name):
        raise ValueError(f"physics.noise.args: 'auto' needs image-domain measurements (denoising, blur, "
                         f"downsampling), got physics '{cfg.physics.name}'; give the noise level")
    n = measurements.shape[0] if isinstance(measurements, Tensor) else len(measurements)
    if n == 0:
        raise ValueError("physics.noise.args: 'auto' estimates the noise level from the user's measurements "
                         "(data.path); simulated data have the noise level the config gives")
    # Haar-MAD even when the noise reads as correlated: no loss that takes a scalar sigma is valid for
    # correlated noise (the warning says so and gives the pixel-level sigma), while small strongly
    # textured images can read as correlated and their pixel-level sigma then includes texture
    values = {k: v * float(scale) for k, v in estimate_noise_args(measurements, noise.name, which).items()}
    method = "variance-vs-mean fit (Foi et al. 2008)"
    if noise.name == "poisson" and "gain" in values:
        lattice = _lattice_gain(measurements, scale, values["gain"])
        if lattice is not None:
            values["gain"], method = lattice
    out = copy.deepcopy(cfg)
    out.physics.noise.args = {**noise.args, **values}
    if noise.name == "gaussian":
        method = "Haar-MAD, median over measurements (Donoho & Johnstone 1994)"
        if correlation is not None and not correlation.white:
            method += (f"; the noise reads as spatially correlated, with a pixel-level sigma of "
                       f"{correlation.sigma_pixel:.4g} (Haar-MAD sees about {correlation.haar_fraction:.0%} of it)")
    return out, {"noise": noise.name, "estimated": values, "n_measurements": int(n), "method": method}


def write_noise_record(record: dict, output_dir: str) -> str:
    """Write the estimate to ``<output_dir>/noise_estimate.json`` and return the path."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, "noise_estimate.json")
    with open(path, "w") as f:
        json.dump(record, f, indent=2)
    return path


def measure_noise_correlation(measurements: list[Tensor], tolerated: int | None, loss_name: str,
                              scale: float = 1.0) -> tuple[NoiseCorrelation, str | None]:
    """The spatial correlation of the noise of the (image-domain) training measurements (normalised
    ``y / scale``: measured in the data's units ``y``, so the noise levels it reports are), and the warning
    to give when it is longer than the ``tolerated`` correlation length of the loss
    (``Loss.tolerated_noise_correlation``; ``None``: the loss assumes nothing): such a loss learns to
    predict the noise from its correlated neighbours and removes little of it (e.g. cryo-EM micrographs)."""
    corr = estimate_noise_correlation([m * float(scale) for m in measurements], warn=False)
    if corr.white or tolerated is None or corr.correlation_length <= tolerated:
        return corr, None
    return corr, (f"{loss_name} assumes noise correlated over at most {tolerated} pixel(s), but the training "
                  f"measurements' noise reaches {corr.correlation_length}. {corr.advice}")


#: photon-counting models whose noise variance is ``gain * y (+ sigma^2)``: a detector offset breaks them
PHOTON_NOISE = ("poisson", "poisson_gaussian")
#: the variance's zero level counts as an offset above this fraction of the data's 99.5th percentile.
#: Measured under Poisson noise (gain 2, peaks of 10, 40 and 200 photons, 3 draws each) on four 256x256
#: scikit-image images (cell, moon, camera, coins) and on a linear ramp: without an offset the fitted
#: zero level lies within -0.027..0.034 of that percentile; with an offset of 100 it reads 0.20-0.78
#: (99-106 in the data's units)
OFFSET_LEVEL = 0.1


class DetectorOffsetWarning(UserWarning):
    """The measurements' noise variance vanishes well above 0: a detector offset the noise model lacks."""


def detector_offset_level(measurements: list[Tensor], noise_name: str, offset: float, scale: float = 1.0,
                          max_items: int = 256) -> float | None:
    """Where the noise variance of photon-counting measurements (normalised ``(y - offset) / scale``) vanishes,
    in the data's units, when it is far from their offset: the fitted variance ``a mu + b`` is zero at
    ``mu_0 = -b / a``; returned (``mu_0 · scale + offset``) when ``mu_0`` lies above ``OFFSET_LEVEL`` of their
    99.5th percentile (``variance_zero_level``); ``None`` otherwise, for other noise models, or when the fit
    is not possible (too few intensity levels)."""
    from selfinv.physics.noise_estimation import variance_zero_level

    if noise_name not in PHOTON_NOISE or not measurements:
        return None
    ys = [v for v in measurements[:max_items] if not v.is_complex() and v.ndim == 3]
    if not ys:
        return None
    batch = _common_crops(ys)
    try:
        mu0 = variance_zero_level(batch)
    except ValueError:  # too small, or too few intensity levels to fit the line
        return None
    top = float(torch.quantile(batch.flatten()[:1_000_000].abs(), 0.995))
    if not (mu0 == mu0 and top > 0 and mu0 > OFFSET_LEVEL * top):
        return None
    return mu0 * float(scale) + float(offset)


def detector_offset_warning(measurements: list[Tensor], noise_name: str, offset: float,
                            scale: float = 1.0, max_items: int = 256,
                            what: str = "the training measurements") -> str | None:
    """The warning to give when photon-counting measurements look offset (``detector_offset_level``);
    ``None`` when they do not."""
    level = detector_offset_level(measurements, noise_name, offset, scale, max_items)
    return None if level is None else detector_offset_message(level, noise_name, offset, what)


def detector_offset_message(level: float, noise_name: str, offset: float, what: str) -> str:
    """What ``detector_offset_warning`` says for a variance that vanishes at ``level`` (the data's units)."""
    return (f"the noise variance of {what} falls to zero at y ≈ {level:.4g} (in your units), "
            f"not at {float(offset):.4g}: {noise_name} noise has variance gain × y, with no offset. If your "
            f"detector adds a constant (camera bias, dark level), set data.offset to it (about {level:.4g}; a "
            f"read noise puts the true offset somewhat higher); otherwise the noise model does not fit the data")


class NeighbourDetailWarning(UserWarning):
    """The images change more from a pixel to its neighbours than the noise does: a loss that predicts each
    pixel from its neighbours cannot beat the noisy input."""


#: warn when the images' 4-neighbour interpolation error exceeds this multiple of the noise level, both as
#: ``neighbour_detail`` estimates them from the noisy data. Measured with Noise2Void (default network) on
#: scikit-image's camera at half size (×50 + 1000, uint16) under Gaussian noise σ = 900 / 600 / 400: the
#: estimates read 0.46 / 0.74 / 1.09 (the true ratios are 0.70 / 1.06 / 1.60: on such a textured image the
#: Haar-MAD σ reads 10-25 % high, and e low with it), and Noise2Void improved the input at σ = 900 (rms error 654
#: against 896, 400 steps), did not at 600 (606 vs 600) and made it worse at 400 (546-616 vs 400, 300-1500
#: steps). So this limit warns where the input was made worse, not where it merely was not improved.
NEIGHBOUR_DETAIL_LIMIT = 1.0


def neighbour_detail(measurements: list[Tensor], max_items: int = 64) -> tuple[float, float]:
    """``(e, σ)``: the images' own 4-neighbour interpolation error ``e`` and the noise level ``σ`` (Haar-MAD),
    estimated from noisy images ``(C, H, W)``: with independent noise of variance ``σ²`` the residual
    ``y - mean₄(y)`` has variance ``e² + 1.25 σ²``, so ``e² = var(y - mean₄(y)) - 1.25 σ²``."""
    import torch.nn.functional as F

    from selfinv.physics.noise_estimation import estimate_gaussian_sigma

    residual, sigma2, n = 0.0, 0.0, 0
    for y in measurements[:max_items]:
        if y.is_complex() or y.ndim != 3 or min(y.shape[-2:]) < 8:
            continue
        img = y.double()[:, None]  # channels as separate images
        kernel = torch.tensor([[0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=img.dtype).reshape(1, 1, 3, 3) / 4
        r = (img[..., 1:-1, 1:-1] - F.conv2d(img, kernel)).flatten(1)
        residual += float(r.var(dim=1).sum())
        sigma2 += float(estimate_gaussian_sigma(img).pow(2).sum())
        n += img.shape[0]
    if n == 0:
        return float("nan"), float("nan")
    residual, sigma2 = residual / n, sigma2 / n
    return max(residual - 1.25 * sigma2, 0.0) ** 0.5, sigma2 ** 0.5


def neighbour_detail_warning(measurements: list[Tensor], loss_name: str, scale: float = 1.0) -> str | None:
    """The warning (``fit``) or note (``advise --data``) to give, about ``loss_name``, when a loss that predicts
    each pixel from its neighbours
    (``Loss.predicts_from_neighbours``) trains on images (normalised ``y / scale``) whose neighbour-interpolation
    error exceeds ``NEIGHBOUR_DETAIL_LIMIT`` times the noise level (``neighbour_detail``); ``None`` otherwise."""
    e, sigma = neighbour_detail(measurements)
    if not (sigma > 0 and e > NEIGHBOUR_DETAIL_LIMIT * sigma):
        return None
    return (f"{loss_name}: trained to predict each pixel from its neighbours, but these images change "
            f"more from a pixel to its neighbours (≈ {e * scale:.4g} in your units, measured on the noisy data) "
            f"than the noise does (σ ≈ {sigma * scale:.4g}, {e / sigma:.1f}x less): it is unlikely to beat the "
            f"noisy input here. A loss that sees the pixel itself does: sure or r2r with physics.noise "
            f"{{name: gaussian, args: {{sigma: auto}}}} (white noise), or noise2noise with data.pairs")


def correlation_record(corr: NoiseCorrelation) -> dict:
    """What ``noise_estimate.json`` keeps of the correlation measurement (noise levels in the data's units)."""
    return {"white": corr.white, "statistic": round(corr.statistic, 4), "threshold": round(corr.threshold, 4),
            "correlation_length": corr.correlation_length,
            "neighbours": {k: round(v, 4) for k, v in corr.neighbours().items()},
            "sigma_pixel": corr.sigma_pixel, "sigma_white_haar_mad": corr.sigma_white}


__all__ = ["AUTO", "CorrelatedNoiseWarning", "DetectorOffsetWarning", "NeighbourDetailWarning", "correlation_record",
           "detector_offset_level", "detector_offset_message", "detector_offset_warning",
           "estimate_noise_args", "is_auto", "measure_noise_correlation",
           "neighbour_detail", "neighbour_detail_warning", "resolve_auto_noise", "write_noise_record"]
