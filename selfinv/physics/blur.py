"""Convolution blur ``y = k * x`` with three boundary models.

Convention: ``(k * x)[i] = Σ_j k[j] x[i + c - j]`` with ``c = (kh // 2, kw // 2)``
the kernel centre (a true convolution: the kernel is flipped; symmetric kernels
are unaffected).

* ``"circular"``: periodic boundary, computed by FFT; output ``(H, W)``.
  ``A_dagger`` is the truncated-spectrum pseudo-inverse
  ``x = F⁻¹[ conj(K) / |K|² · 1{|K| > eps·max|K|} · F y ]`` — the exact
  Moore–Penrose inverse of the circulant matrix once singular values below
  ``eps · max|K|`` are treated as zero (``dagger_eps``, default ``1e-3``:
  noise amplification at most 1000×; raise it for noisy data).
* ``"valid"``: only the fully overlapping positions, output
  ``(H - kh + 1, W - kw + 1)``; the adjoint is the full transposed convolution.
* ``"reflect"``: reflect-pad by ``(kh - 1 - c, c)`` rows / columns, then
  ``"valid"``; output ``(H, W)``. The adjoint of the padding folds the padded
  rows/columns back onto the pixels they copy, so ``Aᵀ`` is exact.

``valid`` and ``reflect`` use the conjugate-gradient ``A_dagger`` of
``LinearPhysics``. Kernels of Scale-Equivariant Imaging (Scanvic et al., 2023):
Gaussian σ ∈ {1, 2, 3}, box radius ∈ {2, 3, 4}.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from selfinv.physics.base import LinearPhysics
from selfinv.physics.kernels import centred_padding
from selfinv.physics.noise import NoiseModel
from selfinv.utils import rng

BOUNDARIES = ("circular", "valid", "reflect")


def gaussian_kernel(sigma: float, size: int | None = None) -> Tensor:
    """Isotropic Gaussian ``k[i, j] ∝ exp(-(i² + j²) / (2 σ²))`` sampled on integer offsets, ``Σ k = 1``.

    Shape ``(size, size)`` (float32); ``size`` defaults to ``2 ⌈3σ⌉ + 1``.
    ``sigma = 0`` gives the 1×1 identity kernel.
    """
    sigma = float(sigma)
    if not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"gaussian_kernel needs sigma >= 0, got {sigma}")
    if size is None:
        size = 2 * math.ceil(3 * sigma) + 1
    size = int(size)
    if size < 1:
        raise ValueError(f"kernel size must be >= 1, got {size}")
    if sigma == 0:
        k = torch.zeros(size, size)
        k[size // 2, size // 2] = 1.0
        return k
    t = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-t**2 / (2 * sigma**2))
    k = g[:, None] * g[None, :]
    return (k / k.sum()).float()


def box_kernel(radius: int) -> Tensor:
    """Uniform ``(2r+1) × (2r+1)`` kernel of sum 1 (float32)."""
    if int(radius) != radius or radius < 0:
        raise ValueError(f"box_kernel needs an integer radius >= 0, got {radius}")
    n = 2 * int(radius) + 1
    return torch.full((n, n), 1.0 / n**2)


def _as_kernel_batch(kernel: Tensor) -> Tensor:
    """Validate a kernel ``(kh, kw)`` or ``(B or 1, 1 or C, kh, kw)`` and return it 4-D."""
    if not isinstance(kernel, Tensor):
        raise TypeError(f"kernel must be a tensor, got {type(kernel).__name__}")
    if kernel.ndim == 2:
        kernel = kernel[None, None]
    if kernel.ndim != 4:
        raise ValueError(f"kernel must have shape (kh, kw) or (B or 1, 1 or C, kh, kw), got {tuple(kernel.shape)}")
    if not kernel.is_floating_point():
        kernel = kernel.float()
    if not bool(torch.isfinite(kernel).all()):
        raise ValueError("kernel must be finite")
    sums = kernel.flatten(1).sum(1)
    if bool((sums == 0).any()):
        raise ValueError(f"kernel must not sum to 0 (a blur keeps the mean: its taps sum to 1), got sums "
                         f"{sums.tolist()[:4]}")
    return kernel


def _transfer(kernel: Tensor, size: tuple[int, int]) -> Tensor:
    """``rfft2`` of the kernel's centred padding to ``size`` (``selfinv.physics.kernels``)."""
    return torch.fft.rfft2(centred_padding(kernel, size))


def circular_conv(x: Tensor, kernel: Tensor, adjoint: bool = False) -> Tensor:
    """Circular convolution with a (batch of) centred kernel(s); ``adjoint`` correlates instead."""
    H, W = x.shape[-2:]
    K = _transfer(kernel.to(x), (H, W))
    if adjoint:
        K = K.conj()
    return torch.fft.irfft2(torch.fft.rfft2(x) * K, s=x.shape[-2:])


def _grouped(x: Tensor, kernel: Tensor) -> tuple[Tensor, Tensor, int]:
    """Reshape for one grouped conv: x -> (1, B*C, h, w), kernel -> (B*C, 1, kh, kw)."""
    B, C = x.shape[:2]
    w = kernel.to(x).expand(B, C, *kernel.shape[-2:]).reshape(B * C, 1, *kernel.shape[-2:])
    return x.reshape(1, B * C, *x.shape[-2:]), w, B * C


def valid_conv(x: Tensor, kernel: Tensor) -> Tensor:
    """``(k * x)`` on the fully overlapping positions: ``(H - kh + 1, W - kw + 1)``."""
    B, C = x.shape[:2]
    xg, w, g = _grouped(x, kernel)
    y = F.conv2d(xg, w.flip(-2, -1), groups=g)
    return y.reshape(B, C, *y.shape[-2:])


def valid_conv_adjoint(y: Tensor, kernel: Tensor) -> Tensor:
    """Transpose of ``valid_conv``: full transposed convolution, output ``(h + kh - 1, w + kw - 1)``."""
    B, C = y.shape[:2]
    yg, w, g = _grouped(y, kernel)
    kh, kw = w.shape[-2:]
    # a stride-1 transposed convolution is the correlation of the zero-padded input with the flipped
    # weight; written as conv2d, which oneDNN runs an order of magnitude faster than conv_transpose2d
    # on one-channel images (benchmarks/operators.py)
    x = F.conv2d(F.pad(yg, (kw - 1, kw - 1, kh - 1, kh - 1)), w, groups=g)
    return x.reshape(B, C, *x.shape[-2:])


def _reflect_fold(t: Tensor, before: int, after: int, dim: int) -> Tensor:
    """Adjoint of reflect padding along ``dim``: add the padded slices back onto their sources."""
    n = t.shape[dim] - before - after
    core = t.narrow(dim, before, n).clone()
    if before > 0:
        # padded index before - s copies x[s], s = 1..before
        src = t.narrow(dim, 0, before).flip(dim)
        core.narrow(dim, 1, before).add_(src)
    if after > 0:
        # padded index before + n - 1 + s copies x[n - 1 - s], s = 1..after
        src = t.narrow(dim, before + n, after).flip(dim)
        core.narrow(dim, n - 1 - after, after).add_(src)
    return core


def _check_kernel_batch(kernel: Tensor, x: Tensor, who: str) -> None:
    if kernel.shape[0] not in (1, x.shape[0]) or kernel.shape[1] not in (1, x.shape[1]):
        raise ValueError(
            f"{who}: kernel of shape {tuple(kernel.shape)} does not fit a batch of shape {tuple(x.shape)}; "
            f"expected (B or 1, 1 or C, kh, kw) = ({x.shape[0]} or 1, 1 or {x.shape[1]}, kh, kw)"
        )


class Blur(LinearPhysics):
    """Blur ``A x = k * x`` (circular, valid or reflect boundary).

    Args:
        kernel: a user kernel ``(kh, kw)`` or ``(B or 1, 1 or C, kh, kw)``; when
            given, ``kind`` / ``sigma`` / ``radius`` are ignored.
        kind: ``"gaussian"`` (``sigma``) or ``"box"`` (``radius``).
        sigma: Gaussian standard deviation in pixels (>= 0).
        radius: box radius in pixels (integer >= 0).
        boundary: ``"circular"``, ``"valid"`` or ``"reflect"`` (see module doc).
        sigma_range: ``(lo, hi)`` makes the operator random: ``sample_params``
            draws one Gaussian σ ~ U(lo, hi) per sample (kernel size fixed by ``hi``).
        dagger_eps: relative spectral threshold of the circular pseudo-inverse.
        noise: the noise model.

    The kernel is the per-sample parameter ``kernel`` (``with_params(kernel=...)``).
    """

    image_domain: ClassVar[bool] = True

    param_names = ("kernel",)
    kernel: Tensor

    def __init__(
        self,
        kernel: Tensor | None = None,
        kind: str = "gaussian",
        sigma: float = 2.0,
        radius: int = 2,
        boundary: str = "circular",
        sigma_range: tuple[float, float] | None = None,
        dagger_eps: float = 1e-3,
        noise: NoiseModel | None = None,
    ):
        super().__init__(noise)
        if boundary not in BOUNDARIES:
            raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}")
        if not (0 < dagger_eps < 1):
            raise ValueError(f"dagger_eps must be in (0, 1), got {dagger_eps}")
        self.boundary = boundary
        self.dagger_eps = float(dagger_eps)
        self.kind = "user" if kernel is not None else kind
        self.sigma_range = None
        if sigma_range is not None:
            lo, hi = (float(v) for v in sigma_range)
            if not (0 <= lo <= hi):
                raise ValueError(f"sigma_range must satisfy 0 <= lo <= hi, got {sigma_range}")
            self.sigma_range = (lo, hi)
        if kernel is None:
            if kind == "gaussian":
                size = None if self.sigma_range is None else 2 * math.ceil(3 * max(sigma, self.sigma_range[1])) + 1
                kernel = gaussian_kernel(sigma, size)
            elif kind == "box":
                kernel = box_kernel(radius)
            else:
                raise ValueError(f"kind must be 'gaussian' or 'box', got {kind!r}")
        self.sigma = float(sigma) if self.kind == "gaussian" else None
        self.radius = int(radius) if self.kind == "box" else None
        self._set_param("kernel", kernel)

    def _set_param(self, name: str, value: Tensor) -> None:
        if name == "kernel":
            value = _as_kernel_batch(value)
        super()._set_param(name, value)

    def sample_params(self, batch_size: int, generator: torch.Generator | None = None,
                      device: torch.device | str | None = None) -> dict[str, Tensor]:
        """Gaussian kernels with σ ~ U(sigma_range), ``(B, 1, k, k)``; ``{}`` without ``sigma_range``."""
        if self.sigma_range is None:
            return {}
        device = self.kernel.device if device is None else device
        lo, hi = self.sigma_range
        sig = lo + (hi - lo) * rng.rand((batch_size,), generator=generator, device=device, dtype=torch.float64)
        size = self.kernel.shape[-1]
        t = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
        g = torch.exp(-t[None] ** 2 / (2 * sig[:, None].clamp_min(1e-6) ** 2))  # (B, size)
        k = g[:, :, None] * g[:, None, :]
        k = k / k.sum((-2, -1), keepdim=True)
        return {"kernel": k[:, None].float()}

    @property
    def is_random(self) -> bool:
        return self.sigma_range is not None

    def commutes_with_dihedral(self) -> bool:
        """True for kernels (every sample's) with a centre pixel that equal their flips and transposition — a
        Gaussian or box blur — under pixel-wise noise, with any boundary; a random operator (``sigma_range``)
        draws isotropic kernels too."""
        from selfinv.physics.noise import dihedral_symmetric

        return self.noise.dihedral_invariant() and all(dihedral_symmetric(k) for k in self.kernel.flatten(0, 1))

    # -- the maps ------------------------------------------------------------------
    def _check(self, t: Tensor, who: str) -> None:
        self._check_image(t, who)
        _check_kernel_batch(self.kernel, t, who)

    def measurement_shape(self, image_shape: tuple[int, ...]) -> tuple[int, ...]:
        """``(C, H, W)``, or ``(C, H - kh + 1, W - kw + 1)`` with ``boundary='valid'``."""
        if self.boundary == "valid":
            kh, kw = self.kernel.shape[-2:]
            return (*image_shape[:-2], image_shape[-2] - kh + 1, image_shape[-1] - kw + 1)
        return tuple(image_shape)

    def A(self, x: Tensor) -> Tensor:
        self._check(x, "Blur.A")
        k = self.kernel
        kh, kw = k.shape[-2:]
        if self.boundary == "circular":
            return circular_conv(x, k)
        if x.shape[-2] < kh or x.shape[-1] < kw:
            raise ValueError(f"Blur.A: image {tuple(x.shape[-2:])} smaller than the kernel {(kh, kw)}")
        if self.boundary == "valid":
            return valid_conv(x, k)
        ph, pw = kh // 2, kw // 2
        if max(ph, kh - 1 - ph) >= x.shape[-2] or max(pw, kw - 1 - pw) >= x.shape[-1]:
            raise ValueError(f"Blur.A: reflect padding needs images larger than half the kernel, got {tuple(x.shape)}")
        xp = F.pad(x, (kw - 1 - pw, pw, kh - 1 - ph, ph), mode="reflect")
        return valid_conv(xp, k)

    def A_adjoint(self, y: Tensor) -> Tensor:
        self._check(y, "Blur.A_adjoint")
        k = self.kernel
        kh, kw = k.shape[-2:]
        if self.boundary == "circular":
            return circular_conv(y, k, adjoint=True)
        xp = valid_conv_adjoint(y, k)
        if self.boundary == "valid":
            return xp
        ph, pw = kh // 2, kw // 2
        xp = _reflect_fold(xp, kh - 1 - ph, ph, dim=-2)
        return _reflect_fold(xp, kw - 1 - pw, pw, dim=-1)

    def A_dagger(self, y: Tensor) -> Tensor:
        if self.boundary != "circular":
            return super().A_dagger(y)
        self._check(y, "Blur.A_dagger")
        H, W = y.shape[-2:]
        K = _transfer(self.kernel.to(y), (H, W))
        mag = K.abs()
        keep = mag > self.dagger_eps * mag.amax(dim=(-2, -1), keepdim=True)
        inv = torch.where(keep, K.conj() / torch.where(keep, mag**2, torch.ones_like(mag)), torch.zeros_like(K))
        return torch.fft.irfft2(torch.fft.rfft2(y) * inv, s=y.shape[-2:])

    def extra_repr(self) -> str:
        what = {"gaussian": f"sigma={self.sigma}", "box": f"radius={self.radius}"}.get(self.kind, "user kernel")
        rnd = f", sigma_range={self.sigma_range}" if self.sigma_range else ""
        return f"{what}, kernel={tuple(self.kernel.shape)}, boundary={self.boundary!r}{rnd}"
