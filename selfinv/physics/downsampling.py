"""Super-resolution operator ``y = S (h * x)``: anti-alias filter, then keep every ``factor``-th pixel.

``h * x`` is the circular convolution of ``selfinv.physics.blur`` (kernel centre
``(kh // 2, kw // 2)``) and ``S`` keeps the pixels ``(f i + p, f j + p)`` (``f = factor``,
sampling phase ``p``, see the filters), so
``y[i, j] = Σ_{a,b} h[a, b] x[f i + p + kh//2 - a, f j + p + kw//2 - b]`` (indices mod H, W).
The adjoint ``Aᵀ y = h ⋆ (Sᵀ y)`` inserts zeros between samples, then correlates
with the filter.

Pseudo-inverse in closed form: ``A Aᵀ = S C Cᵀ Sᵀ`` is circulant on the
low-resolution grid, with eigenvalues obtained by aliasing the ``f²`` copies of
``|H|²`` onto it:  ``G(k) = f⁻² Σ_{m ∈ {0..f-1}²} |H(k + m M)|²`` (``M = (H, W) / f``,
unnormalised DFT). Hence ``A⁺ y = Aᵀ F⁻¹[ F y / G ]`` with frequencies where
``G <= dagger_eps · max G`` set to zero (truncated pseudo-inverse; none are
truncated for the built-in filters at the default ``1e-6``).

Filters:

* ``"bicubic"``: separable Keys cubic (a = -0.5) stretched by ``factor``,
  ``4 factor`` taps at offsets ``(j - 2f + 1/2) / f``, normalised to sum 1, sampling
  phase ``p = f/2 - 1``: low-resolution pixel ``i`` is centred on the high-resolution
  coordinate ``f i + (f - 1)/2``, the centre of its ``f × f`` block — the anti-aliased
  bicubic downscaling of image resizing (equal to ``PIL.Image.resize(..., BICUBIC)``
  away from the border, tested at ``f = 2`` and ``4``), and, the sampling grid being
  symmetric about the image centre, ``A`` commutes with 90° rotations and flips.
* ``"gaussian"``: ``gaussian_kernel(σ = factor / 2)`` (size ``2⌈3σ⌉+1``), ``p = 0``
  (pixel ``i`` centred on ``f i``, an odd kernel cannot centre on ``f i + (f - 1)/2``:
  this ``A`` does not commute with rotations); its response at the low-resolution Nyquist
  frequency is ``exp(-π²/8) ≈ 0.29``.
* ``None``: plain decimation, ``p = 0``.

Used for self-supervised super-resolution in Scanvic et al., "Scale-Equivariant
Imaging" (2023); Keys, "Cubic convolution interpolation" (IEEE TASSP 1981).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from selfinv.physics.base import LinearPhysics
from selfinv.physics.blur import circular_conv, gaussian_kernel
from selfinv.physics.kernels import centred_padding
from selfinv.physics.noise import NoiseModel

FACTORS = (2, 4)
FILTERS = ("bicubic", "gaussian", None)


def keys_cubic(t: Tensor, a: float = -0.5) -> Tensor:
    """Keys' cubic convolution kernel ``w(t)`` (support ``|t| < 2``)."""
    t = t.abs()
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return torch.where(t <= 1, near, torch.where(t < 2, far, torch.zeros_like(t)))


def bicubic_kernel(factor: int) -> Tensor:
    """Separable anti-aliasing bicubic kernel, ``(4 factor, 4 factor)``, sum 1 (float32)."""
    if int(factor) != factor or factor < 1:
        raise ValueError(f"bicubic_kernel needs an integer factor >= 1, got {factor}")
    f = int(factor)
    t = (torch.arange(4 * f, dtype=torch.float64) - 2 * f + 0.5) / f
    w = keys_cubic(t)
    w = w / w.sum()
    return (w[:, None] * w[None, :]).float()


def sampling_phase(name: str | None, factor: int) -> int:
    """The sampling phase ``p`` of the filter ``name`` (module docstring): ``factor / 2 - 1`` for the
    even-size bicubic kernel (samples at block centres), 0 otherwise."""
    return int(factor) // 2 - 1 if name == "bicubic" else 0


def antialias_filter(name: str | None, factor: int) -> Tensor:
    """The 2-D filter named ``name`` for ``factor`` (see module doc)."""
    if name == "bicubic":
        return bicubic_kernel(factor)
    if name == "gaussian":
        return gaussian_kernel(factor / 2)
    if name is None:
        return torch.ones(1, 1)
    raise ValueError(f"filter must be one of {FILTERS}, got {name!r}")


class Downsampling(LinearPhysics):
    """``A x = S (h * x)`` (circular boundary); closed-form ``Aᵀ`` and ``A⁺``.

    Args:
        img_size: ``(C, H, W)``; ``H`` and ``W`` must be multiples of ``factor``.
        factor: 2 or 4.
        filter: ``"bicubic"``, ``"gaussian"`` or ``None`` (see module doc).
        boundary: only ``"circular"`` is implemented.
        dagger_eps: relative threshold on the aliased spectrum ``G`` in ``A_dagger``.
        noise: the noise model.

    Measurements have shape ``(B, C, H / factor, W / factor)``. The operator is
    deterministic (no per-sample parameters).
    """

    image_domain: ClassVar[bool] = True
    filter_kernel: Tensor

    def __init__(
        self,
        img_size: tuple[int, int, int],
        factor: int = 2,
        filter: str | None = "bicubic",
        boundary: str = "circular",
        dagger_eps: float = 1e-6,
        noise: NoiseModel | None = None,
    ):
        super().__init__(noise)
        if len(img_size) != 3:
            raise ValueError(f"img_size must be (C, H, W), got {tuple(img_size)}")
        if factor not in FACTORS:
            raise ValueError(f"factor must be one of {FACTORS}, got {factor}")
        if boundary != "circular":
            raise ValueError(f"Downsampling supports boundary='circular' only, got {boundary!r}")
        C, H, W = (int(s) for s in img_size)
        if H % factor or W % factor:
            raise ValueError(f"image size {(H, W)} must be a multiple of the factor {factor}")
        kernel = antialias_filter(filter, factor)
        if kernel.shape[-2] > H or kernel.shape[-1] > W:
            raise ValueError(f"the {filter} filter {tuple(kernel.shape)} is larger than the image {(H, W)}")
        if not (0 < dagger_eps < 1):
            raise ValueError(f"dagger_eps must be in (0, 1), got {dagger_eps}")
        self.img_size = (C, H, W)
        self.factor = int(factor)
        self.filter_name = filter
        self.boundary = boundary
        self.dagger_eps = float(dagger_eps)
        self.register_buffer("filter_kernel", kernel, persistent=False)
        #: sampling phase ``p``: ``A`` keeps the pixels ``(f i + p, f j + p)`` of ``h * x`` (module docstring)
        self.phase = sampling_phase(filter, self.factor)

    def measurement_shape(self, image_shape: tuple[int, ...] | None = None) -> tuple[int, ...]:
        """``(C, H / factor, W / factor)`` (of this operator's image size by default)."""
        C, H, W = self.img_size if image_shape is None else image_shape
        return C, H // self.factor, W // self.factor

    def for_measurement(self, shape: tuple[int, ...]) -> "Downsampling":
        """The same downsampling for low-resolution measurements of ``shape`` ``(C, h, w)``: images
        ``(C, factor h, factor w)``."""
        if tuple(shape) == self.measurement_shape():
            return self
        if len(shape) != 3 or shape[0] != self.img_size[0]:
            raise ValueError(f"Downsampling expects measurements (C={self.img_size[0]}, h, w), got shape "
                             f"{tuple(shape)}")
        f = self.factor
        return Downsampling((shape[0], shape[1] * f, shape[2] * f), f, self.filter_name, self.boundary,
                            self.dagger_eps, self.noise)

    def A(self, x: Tensor) -> Tensor:
        self._check_image(x, "Downsampling.A", channels=self.img_size[0], size=self.img_size[1:])
        f, p = self.factor, self.phase
        if self.filter_name is None:
            return x[..., p::f, p::f]
        return circular_conv(x, self.filter_kernel)[..., p::f, p::f]

    def A_adjoint(self, y: Tensor) -> Tensor:
        C, h, w = self.measurement_shape()
        self._check_image(y, "Downsampling.A_adjoint", channels=C, size=(h, w))
        f, p = self.factor, self.phase
        up = y.new_zeros(y.shape[:2] + self.img_size[1:])
        up[..., p::f, p::f] = y
        if self.filter_name is None:
            return up
        return circular_conv(up, self.filter_kernel, adjoint=True)

    def aliased_spectrum(self, like: Tensor) -> Tensor:
        """Eigenvalues ``G`` of ``A Aᵀ`` on the low-resolution DFT grid, shape ``(H/f, W/f)`` (the sampling
        phase is a circular shift, which ``A Aᵀ`` does not see)."""
        _, H, W = self.img_size
        f = self.factor
        k = self.filter_kernel.to(device=like.device, dtype=like.dtype)
        power = torch.fft.fft2(centred_padding(k, (H, W))).abs() ** 2
        return power.reshape(f, H // f, f, W // f).sum(dim=(0, 2)) / f**2

    def A_dagger(self, y: Tensor) -> Tensor:
        """``Aᵀ (A Aᵀ)⁺ y`` computed per low-resolution frequency."""
        C, h, w = self.measurement_shape()
        self._check_image(y, "Downsampling.A_dagger", channels=C, size=(h, w))
        G = self.aliased_spectrum(y)
        keep = G > self.dagger_eps * G.max()
        inv = torch.where(keep, 1.0 / torch.where(keep, G, torch.ones_like(G)), torch.zeros_like(G))
        z = torch.fft.ifft2(torch.fft.fft2(y) * inv).real
        return self.A_adjoint(z)

    def extra_repr(self) -> str:
        return (f"img_size={self.img_size}, factor={self.factor}, filter={self.filter_name!r}, "
                f"kernel={tuple(self.filter_kernel.shape)}, boundary={self.boundary!r}")
