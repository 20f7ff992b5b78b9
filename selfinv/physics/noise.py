"""Noise models ``y ~ p(y | z)`` with ``z = A x`` the noiseless measurement.

Each model samples with an explicit ``torch.Generator`` and exposes the facts the
self-supervised losses need: its family ``kind`` (a class attribute, which the
losses check against the family they are exact for) and its parameters
(``sigma``, ``gain``, ``shape``). Parameters are scalars or per-sample tensors
of shape ``(B,)``.

Parameters are stored in float64 exactly as given (no float32 rounding) and are
cast to the dtype of the data where they are used (``rng.as_per_sample``), so a
float64 computation sees the float64 value of ``sigma = 0.1`` and a float32 one
its float32 rounding. They follow the module across devices, but dtype
conversions of the module (``.float()``, ``.half()``, ``.to(dtype)``) leave them
in float64: they are exact constants, not weights.

| model | sampling | mean | variance |
|---|---|---|---|
| ``GaussianNoise(sigma)`` | ``y = z + sigma * n`` | z | sigma^2 |
| ``ColoredGaussianNoise(sigma, kernel)`` | ``y = z + sigma * (k * n)`` (circular) | z | sigma^2 * (k * k~) |
| ``PoissonNoise(gain)`` | ``y = gain * Poisson(z / gain)`` | z | gain * z |
| ``PoissonGaussianNoise(gain, sigma)`` | ``y = gain * Poisson(z / gain) + sigma * n`` | z | gain z + sigma^2 |
| ``GammaNoise(shape)`` | ``y ~ Gamma(shape, rate = shape / z)`` | z | z^2 / shape |
"""

from __future__ import annotations

import copy
import math
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from selfinv.physics.kernels import centred_padding
from selfinv.utils import rng

#: the noise families the losses know; ``"custom"`` is a user model no loss may assume anything about
NoiseKind = Literal["none", "unknown", "gaussian", "colored_gaussian", "poisson", "poisson_gaussian", "gamma",
                   "custom"]
#: the values a measurement can take under a noise model (``selfinv.physics.support`` checks it)
Support = Literal["real", "nonnegative", "positive"]


#: buffers holding exact constants of the noise model, kept in float64 (see the module docstring)
_EXACT_BUFFERS = ("sigma", "gain", "shape", "kernel")


def _check_param(name: str, value, *, strictly_positive: bool) -> Tensor:
    """``value`` as a float64 tensor (scalar or ``(B,)``), checked finite and (strictly) positive."""
    if isinstance(value, (str, bytes, bool)) or not isinstance(value, (int, float, Tensor, list, tuple)):
        raise TypeError(f"{name} must be a number or a per-sample 1-D tensor of numbers, got "
                        f"{type(value).__name__} {value!r}")
    try:
        t = torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"{name} must be a number or a per-sample 1-D tensor of numbers, got {value!r} ({e})") \
            from None
    if not torch.all(torch.isfinite(t)):
        raise ValueError(f"{name} must be finite, got {value}")
    if strictly_positive and torch.any(t <= 0):
        raise ValueError(f"{name} must be > 0, got {value}")
    if not strictly_positive and torch.any(t < 0):
        raise ValueError(f"{name} must be >= 0, got {value}")
    if t.ndim > 1:
        raise ValueError(f"{name} must be a scalar or a per-sample 1-D tensor, got shape {tuple(t.shape)}")
    return t


def dihedral_symmetric(k: Tensor, rtol: float = 1e-6) -> bool:
    """Whether the 2-D array ``k`` (last two axes, odd sizes: a centre pixel) equals its 8 flips / 90° rotations."""
    if k.shape[-1] != k.shape[-2] or k.shape[-1] % 2 == 0:
        return False
    tol = rtol * float(k.abs().max()) if k.numel() else 0.0
    return all(float((t - k).abs().max()) <= tol for t in (k.flip(-1), k.flip(-2), k.transpose(-1, -2)))


class NoiseModel(nn.Module):
    """Base class: ``noise(z, generator)`` draws ``y ~ p(y | z)``.

    Subclasses set the class attribute ``kind`` to the family whose parameters
    they expose; a loss exact for one family (SURE, R2R, Noise2Score...) compares
    ``physics.noise.kind`` with it. A user model keeps ``"custom"``.
    """

    kind: ClassVar[NoiseKind] = "custom"
    #: parameters that ``sigma: auto`` / ``gain: auto`` may estimate from the measurements
    estimable: ClassVar[tuple[str, ...]] = ()
    #: the values a measurement can take
    support: ClassVar[Support] = "real"

    def __init__(self):
        super().__init__()
        # The facts a loss may ask for; None when the model has no such part:
        # ``sigma`` (Gaussian std), ``gain`` (Poisson gamma), ``shape`` (Gamma ell).
        for name in ("sigma", "gain", "shape"):
            self.register_buffer(name, None, persistent=False)

    def sample(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError

    def _apply(self, fn, recurse: bool = True):
        """Move the float64 parameters with the module but keep their dtype (device changes only)."""
        exact = {n: b for n in _EXACT_BUFFERS if (b := self._buffers.get(n)) is not None}
        out = super()._apply(fn, recurse)
        for name, value in exact.items():
            moved = self._buffers[name]
            assert moved is not None  # _apply maps each tensor buffer to a tensor
            if moved.device != value.device:
                try:
                    moved = value.to(device=moved.device)
                except (TypeError, RuntimeError):  # a device without float64 (MPS): keep fn's cast
                    pass
            else:
                moved = value
            self._buffers[name] = moved
        return out

    def forward(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.sample(z, generator)

    def variance(self, z: Tensor) -> Tensor:
        """Per-entry variance of ``y`` given ``z`` (used by tests and estimators)."""
        raise NotImplementedError

    def dihedral_invariant(self) -> bool:
        """Whether ``T(noise(z))`` has the law of ``noise(T z)`` for the 8 flips / 90° rotations ``T`` of the
        image grid: true for noise drawn entry by entry (Gaussian, Poisson, Gamma...); a custom or unknown
        model says no (its correlations may have a direction). Used by ``Physics.commutes_with_dihedral``."""
        return self.kind in ("none", "gaussian", "poisson", "poisson_gaussian", "gamma")

    def scaled(self, factor: float) -> "NoiseModel":
        """The noise model of the measurements multiplied by ``factor`` (``y -> factor · y``): Gaussian
        ``sigma`` and Poisson ``gain`` scale with it, the Gamma shape does not. Used to express a noise level
        given in the user's units in the normalised units of training."""
        if not (factor > 0 and math.isfinite(factor)):
            raise ValueError(f"scale factor must be finite and > 0, got {factor}")
        new = copy.copy(self)
        new._buffers = dict(self._buffers)
        for name in ("sigma", "gain"):
            value = new._buffers.get(name)
            if value is not None:
                new._buffers[name] = value * float(factor)
        return new


class NoNoise(NoiseModel):
    """Noiseless measurements ``y = z``."""

    kind: ClassVar[NoiseKind] = "none"

    def sample(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return z

    def variance(self, z: Tensor) -> Tensor:
        return torch.zeros_like(z)


class UnknownNoise(NoiseModel):
    """Measured data whose noise is not modelled: the default for a user's own measurements.

    Losses that need no noise model (Noise2Void, UNSURE, Neighbor2Neighbor, autoencoders, MC + EI)
    train with it; losses that need the noise statistics (SURE, R2R, Noise2Score) refuse it with a
    message naming the noise model to declare; simulating measurements with it is an error.
    """

    kind: ClassVar[NoiseKind] = "unknown"

    def sample(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        raise ValueError("the noise model is unknown (physics.noise: {name: unknown}), so measurements cannot be "
                         "simulated: declare one, e.g. physics.noise: {name: gaussian, args: {sigma: 0.1}}")

    def variance(self, z: Tensor) -> Tensor:
        raise ValueError("the noise model is unknown (physics.noise: {name: unknown}): its variance is not known")


class GaussianNoise(NoiseModel):
    """``y = z + sigma * n``, ``n ~ N(0, I)``; ``sigma`` scalar or per-sample ``(B,)``."""

    kind: ClassVar[NoiseKind] = "gaussian"
    estimable: ClassVar[tuple[str, ...]] = ("sigma",)

    def __init__(self, sigma: float | Tensor):
        super().__init__()
        self.sigma = _check_param("sigma", sigma, strictly_positive=False)

    def sample(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        s = rng.as_per_sample(self.sigma, z, "sigma")
        return z + s * rng.randn_like(z, generator)

    def variance(self, z: Tensor) -> Tensor:
        return (rng.as_per_sample(self.sigma, z, "sigma") ** 2).expand_as(z).clone()

    def extra_repr(self) -> str:
        return f"sigma={self.sigma.tolist()}"


class ColoredGaussianNoise(NoiseModel):
    """Stationary coloured Gaussian noise ``y = z + sigma * (k ⊛ n)`` (circular convolution).

    ``kernel`` is a 2-D tensor (kh, kw), normalised to unit l2 norm so that
    ``sigma`` is the marginal standard deviation. The covariance is the
    circulant matrix with first row ``sigma^2 (k ⋆ k)``.
    """

    kind: ClassVar[NoiseKind] = "colored_gaussian"
    kernel: Tensor

    def __init__(self, sigma: float | Tensor, kernel: Tensor):
        super().__init__()
        kernel = torch.as_tensor(kernel, dtype=torch.float64)
        if kernel.ndim != 2:
            raise ValueError(f"kernel must be 2-D (kh, kw), got shape {tuple(kernel.shape)}")
        if not torch.isfinite(kernel).all() or kernel.norm() == 0:
            raise ValueError("kernel must be finite and non-zero")
        self.sigma = _check_param("sigma", sigma, strictly_positive=False)
        self.register_buffer("kernel", kernel / kernel.norm(), persistent=False)

    def _filter(self, n: Tensor) -> Tensor:
        H, W = n.shape[-2:]
        pad = centred_padding(self.kernel.to(n), (H, W))
        return torch.fft.irfft2(torch.fft.rfft2(n) * torch.fft.rfft2(pad), s=(H, W))

    def sample(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        s = rng.as_per_sample(self.sigma, z, "sigma")
        return z + s * self._filter(rng.randn_like(z, generator))

    def variance(self, z: Tensor) -> Tensor:
        return (rng.as_per_sample(self.sigma, z, "sigma") ** 2).expand_as(z).clone()

    def dihedral_invariant(self) -> bool:
        """The covariance ``σ² (k ⋆ k)`` is invariant when the kernel's autocorrelation is (e.g. an isotropic
        kernel); a kernel that correlates along rows only is not."""
        k = self.kernel
        auto = torch.nn.functional.conv2d(k[None, None], k[None, None], padding=(k.shape[0] - 1, k.shape[1] - 1))[0, 0]
        return dihedral_symmetric(auto)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma.tolist()}, kernel={tuple(self.kernel.shape)}"


class PoissonNoise(NoiseModel):
    """``y = gain * Poisson(z / gain)``: mean ``z``, variance ``gain * z``. Needs ``z >= 0``."""

    kind: ClassVar[NoiseKind] = "poisson"
    estimable: ClassVar[tuple[str, ...]] = ("gain",)
    support: ClassVar[Support] = "nonnegative"

    def __init__(self, gain: float | Tensor):
        super().__init__()
        self.gain = _check_param("gain", gain, strictly_positive=True)

    def sample(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_nonnegative(z, type(self).__name__)
        g = rng.as_per_sample(self.gain, z, "gain")
        return g * rng.poisson(z / g, generator)

    def variance(self, z: Tensor) -> Tensor:
        return rng.as_per_sample(self.gain, z, "gain") * z

    def extra_repr(self) -> str:
        return f"gain={self.gain.tolist()}"


class PoissonGaussianNoise(NoiseModel):
    """``y = gain * Poisson(z / gain) + sigma * n``: variance ``gain z + sigma^2``."""

    kind: ClassVar[NoiseKind] = "poisson_gaussian"
    estimable: ClassVar[tuple[str, ...]] = ("gain", "sigma")

    def __init__(self, gain: float | Tensor, sigma: float | Tensor):
        super().__init__()
        self.gain = _check_param("gain", gain, strictly_positive=True)
        self.sigma = _check_param("sigma", sigma, strictly_positive=False)

    def sample(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_nonnegative(z, type(self).__name__)
        g = rng.as_per_sample(self.gain, z, "gain")
        s = rng.as_per_sample(self.sigma, z, "sigma")
        return g * rng.poisson(z / g, generator) + s * rng.randn_like(z, generator)

    def variance(self, z: Tensor) -> Tensor:
        g = rng.as_per_sample(self.gain, z, "gain")
        s = rng.as_per_sample(self.sigma, z, "sigma")
        return g * z + s**2

    def extra_repr(self) -> str:
        return f"gain={self.gain.tolist()}, sigma={self.sigma.tolist()}"


class GammaNoise(NoiseModel):
    """``y ~ Gamma(shape=ell, rate=ell / z)``: mean ``z``, variance ``z^2 / ell``. Needs ``z > 0``."""

    kind: ClassVar[NoiseKind] = "gamma"
    support: ClassVar[Support] = "positive"

    def __init__(self, shape: float | Tensor):
        super().__init__()
        self.shape = _check_param("shape", shape, strictly_positive=True)

    def sample(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if torch.any(z <= 0):
            raise ValueError(
                f"GammaNoise needs a strictly positive noiseless measurement, got min {z.min().item():g}"
            )
        ell = rng.as_per_sample(self.shape, z, "shape")
        g = rng.standard_gamma(ell.expand_as(z).contiguous(), generator)
        return g * z / ell

    def variance(self, z: Tensor) -> Tensor:
        return z**2 / rng.as_per_sample(self.shape, z, "shape")

    def extra_repr(self) -> str:
        return f"shape={self.shape.tolist()}"


def _check_nonnegative(z: Tensor, who: str) -> None:
    if torch.any(z < 0):
        raise ValueError(
            f"{who} needs a non-negative noiseless measurement (photon counts), got min "
            f"{z.min().item():g}; clip or rescale the images to [0, 1] first"
        )
