"""2-D parallel-beam computed tomography: the discrete Radon transform.

``Tomography`` maps an image ``x`` of shape ``(B, C, N, N)`` to a sinogram
``y = A x`` of shape ``(B, C, n_views, n_detectors)``:

    (A x)[v, k] = (1 / dt) * integral over detector bin k of  R x(theta_v, t) dt,
    R x(theta, t) = integral of x along the line  X cos(theta) + Y sin(theta) = t,

where ``x`` is taken as piecewise constant on square pixels (the *strip-integral*
or exact-footprint projector): a pixel of side ``s`` projects onto the detector as
a trapezoid of area ``s^2`` (the convolution of two boxes of widths
``s |cos theta|`` and ``s |sin theta|``), and each detector bin of width ``dt = s``
receives the mean of that trapezoid over the bin. Hence every column of ``A`` has at
most three non-zeros per view and the matrix is stored as a torch sparse CSR matrix
(with its transpose), so ``A_adjoint`` is the *exact* transpose of ``A``. The kernel
(matrix, symmetry plan, cache, threads) is ``selfinv.physics.radon``.

Geometry (``centering="skimage"``, the default: the convention of
``skimage.transform.radon(image, theta, circle=False)`` and ``iradon``):

* the centre of rotation is the centre of pixel ``(N // 2, N // 2)``: pixel
  ``(j, i)`` (row, column) sits at ``X = (i - N//2) s``, ``Y = (N//2 - j) s``
  (``Y`` points up); angles in degrees, counter-clockwise, ``theta = 0`` sums down
  the columns (bin ``k`` then holds column ``i = k - D//2 + N//2``);
* detector bin ``k`` is centred at ``t_k = (k - D//2) s``; by default
  ``D = ceil(sqrt(2) N)``, the height of skimage's ``circle=False`` sinogram, so a
  sinogram ``radon(image, theta, circle=False)`` of an ``N x N`` image is ``A x``
  transposed (``(D, views)`` there, ``(views, D)`` here) with ``pixel_size=1``.
  Every pixel inside the disc inscribed in the image projects entirely onto the
  detector; at views near 45 and 135 degrees the footprints of a few corner pixels
  overhang its ends (by at most 1.2 bins), as in skimage. Pass a larger
  ``n_detectors`` to keep them whole;
* ``centering="geometric"`` puts the centre of rotation at the centre of the image
  square, ``(N-1)/2``, and the detector centre at ``(D-1)/2`` (the convention
  of selfinv 0.1.0; for odd ``N`` and ``D`` both conventions coincide). Its
  default ``D`` is ``ceil(sqrt(2) N)`` rounded up to the parity of ``N``, so that
  pixel centres fall on bin centres at 0 and 90 degrees (an odd ``D - N`` puts them
  on bin edges and blurs FBP);
* **default pixel size ``s = 1 / N``**: the image fills the unit square, so a
  line through an image of ones has integral at most ``sqrt(2)`` and ``A x`` is
  O(1) for ``x`` in [0, 1] whatever ``N``. ``pixel_size=1`` gives the scale of
  ``skimage.transform.radon``.

``A_dagger`` is filtered back-projection (Ram-Lak ramp filter in its spatial form,
optionally windowed; Kak & Slaney, *Principles of Computerized Tomographic
Imaging*, 1988, ch. 3): ``x ~ pi / (n_views s^2) A^T (h * y)``.

Accuracy (float64; ``tests/test_tomography.py`` holds the measurements):

* ``A`` against ``skimage.transform.radon(circle=False)``: 0.1-0.4 % relative
  difference at N = 32-65, every parity of ``N`` and ``D`` (skimage interpolates
  a rotated image, we integrate exact footprints); against the analytic Radon
  transform of a pixel-averaged disc: 0.7 % at 64x64, 1.4 % at 32x32 (the
  pixelised edge, O(1/N));
* FBP (Ram-Lak, 60 views) of ``A x``: as accurate as skimage's ``iradon`` of its
  own ``radon`` (``camera()`` at 64x64: 5.33 % vs 5.34 %); 1.6 % at 64x64 and
  2.4 % at 32x32 on a smoothed Shepp-Logan phantom (the same with 180 views: the
  error is the filter / footprint discretisation, not angular undersampling). A
  Hann window doubles the error on clean data and damps noise.

Speed: the angle set is reduced by the symmetries of the square pixel grid about
the centre of rotation, so the default 60 evenly spaced views need the matrix of
16 base angles applied to 4 permuted copies of the batch (one sparse-dense
product). Matrices are cached per (size, angles, centring, device, dtype); the
first call at 256x256 builds one in about 0.5-1 s. On CPU a projection runs on
``selfinv.physics.radon.SPARSE_CPU_THREADS`` (default 1) threads (see there).

``BeerLambertCT`` is the non-linear transmission model
``y ~ Poisson(I0 exp(-mu A x))`` with its log-linearisation.

Example:
    >>> import torch
    >>> from selfinv.physics import Tomography
    >>> ct = Tomography(64, n_views=60)          # D = ceil(sqrt(2) 64) = 91 bins
    >>> x = torch.rand(2, 1, 64, 64)
    >>> y = ct.A(x)
    >>> tuple(y.shape)
    (2, 1, 60, 91)
    >>> tuple(ct.A_dagger(y).shape)              # FBP
    (2, 1, 64, 64)
    >>> tuple(ct.for_image_size(128).A(torch.rand(1, 1, 128, 128)).shape)  # same angles, 128x128
    (1, 1, 60, 182)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor

from selfinv.physics.base import LinearPhysics, Physics
from selfinv.physics.noise import NoiseModel, PoissonNoise
from selfinv.physics.radon import (
    CENTERINGS,
    RadonPlan,
    backproject,
    cpu_threads,
    default_detectors,
    project,
    radon_matrix,
    radon_plan,
)
from selfinv.utils import rng

__all__ = ["BeerLambertCT", "Tomography", "radon_matrix", "ramp_filter"]

#: filter windows accepted by ``Tomography.fbp`` (multiplying the ramp's spectrum)
WINDOWS = ("ram-lak", "shepp-logan", "cosine", "hamming", "hann")


# ---------------------------------------------------------------------------------
# Filtered back-projection
# ---------------------------------------------------------------------------------
def ramp_filter(n_detectors: int, window: str = "ram-lak", dtype=torch.float64, device=None) -> Tensor:
    """Real spectrum (``rfft`` of length ``n_pad``) of the band-limited ramp filter.

    Spatial Ram-Lak kernel in detector units (Kak & Slaney 1988, eq. 3.61):
    ``h[0] = 1/4``, ``h[n] = -1 / (pi n)^2`` for odd ``n``, 0 for even ``n``,
    zero-padded to ``n_pad >= 2 D`` (a power of two) to avoid wrap-around, then
    multiplied in frequency by the window (``f`` = frequency / Nyquist in [0, 1]):
    shepp-logan ``sinc(f/2)``, cosine ``cos(pi f / 2)``, hamming
    ``0.54 + 0.46 cos(pi f)``, hann ``(1 + cos(pi f)) / 2``.
    """
    if window not in WINDOWS:
        raise ValueError(f"unknown FBP window '{window}'; expected one of {WINDOWS}")
    n_pad = 1 << max(6, math.ceil(math.log2(2 * n_detectors)))
    idx = torch.arange(n_pad, dtype=torch.float64, device=device)
    m = torch.minimum(idx, n_pad - idx)  # circular distance
    h = torch.where(m % 2 == 1, -1.0 / (math.pi * m.clamp_min(1)) ** 2, torch.zeros_like(m))
    h[0] = 0.25
    spec = torch.fft.rfft(h).real
    f = torch.fft.rfftfreq(n_pad, device=device, dtype=torch.float64) / 0.5
    if window == "shepp-logan":
        spec = spec * torch.sinc(f / 2)
    elif window == "cosine":
        spec = spec * torch.cos(math.pi * f / 2)
    elif window == "hamming":
        spec = spec * (0.54 + 0.46 * torch.cos(math.pi * f))
    elif window == "hann":
        spec = spec * (1 + torch.cos(math.pi * f)) / 2
    return spec.to(dtype)


# ---------------------------------------------------------------------------------
# The physics
# ---------------------------------------------------------------------------------
_ANGLE_SAMPLING = ("fixed", "offset", "uniform")


def _square_size(img_size: int | Sequence[int], who: str) -> int:
    """``N`` from an int, an ``(N, N)`` pair or a ``(C, N, N)`` image shape."""
    if isinstance(img_size, (tuple, list, torch.Size)):
        if len(img_size) == 3:
            img_size = tuple(img_size)[1:]
        if len(img_size) != 2 or img_size[0] != img_size[1]:
            raise ValueError(f"{who} needs square images, got img_size={tuple(img_size)}")
        img_size = img_size[0]
    n = int(cast(int, img_size))  # an int, or anything int() takes (a NumPy integer, a 0-d tensor)
    if n < 2:
        raise ValueError(f"{who}: img_size must be >= 2, got {img_size}")
    return n


class Tomography(LinearPhysics):
    """Parallel-beam CT ``y = noise(A x)``, ``A`` the strip-integral Radon transform.

    Args:
        img_size: side ``N`` of the square images (an int, an ``(N, N)`` pair, or a
            ``(C, N, N)`` image shape as the config layer passes it; channels are
            projected independently).
        n_views: number of evenly spaced angles in [0, 180) (ignored if ``angles`` given).
        angles: angles in degrees, shape ``(n_views,)`` (shared) or ``(B, n_views)``
            (one set per sample).
        n_detectors: detector bins (default ``default_detectors(N, centering)``:
            ``ceil(sqrt(2) N)``, skimage's ``circle=False`` sinogram height).
        pixel_size: pixel (= detector bin) size; default ``1/N`` (unit-square image).
        noise: noise model on the sinogram.
        dagger: ``"fbp"`` (filtered back-projection, default) or ``"cg"``
            (least squares by conjugate gradient on ``A^T A``).
        window: FBP filter window, one of ``WINDOWS``.
        angle_sampling: what ``sample_params`` draws: ``"fixed"`` (nothing; the
            operator is deterministic), ``"offset"`` (the evenly spaced set rotated
            by a per-sample uniform offset in ``[0, 180/n_views)``) or
            ``"uniform"`` (``n_views`` i.i.d. uniform angles per sample, sorted).
        use_symmetry: reduce the angle set by the symmetries of the pixel grid
            (faster, same matrix up to float rounding).
        centering: ``"skimage"`` (default; rotation centre at pixel ``(N//2, N//2)``,
            detector centre at bin ``D//2``, as ``skimage.transform.radon``) or
            ``"geometric"`` (centre of the square ``(N-1)/2``, detector ``(D-1)/2``);
            see the module docstring.

    ``for_image_size(N')`` and ``for_sinogram(y)`` give the same geometry for another
    image size (e.g. a back-projection network trained on 64x64 crops applied to a
    128x128 slice: only the physics is rebuilt).

    Per-sample angle sets cost one matrix build per distinct set (cached: at most
    ``CACHE_SIZE`` plans and ``CACHE_MAX_NNZ`` non-zeros). Evenly spaced sets
    containing 0 degrees are reduced by the grid symmetries; offset or random sets
    are not, so drawing new angles every step (``angle_sampling='offset'`` or
    ``'uniform'``) rebuilds the full matrix each time: ~0.1 s per sample at 64x64,
    seconds at 256x256 -- fine for small training crops, slow for large images.
    Gradients flow to ``x`` (through ``A`` and ``A^T``), never to the angles.
    """

    param_names = ("angles",)
    angles: Tensor

    def __init__(self, img_size: int | Sequence[int], n_views: int = 60, angles: Tensor | Sequence[float] | None = None,
                 n_detectors: int | None = None, pixel_size: float | None = None,
                 noise: NoiseModel | None = None, dagger: str = "fbp", window: str = "ram-lak",
                 angle_sampling: str = "fixed", use_symmetry: bool = True, centering: str = "skimage"):
        super().__init__(noise)
        self.img_size = _square_size(img_size, "Tomography")
        if dagger not in ("fbp", "cg"):
            raise ValueError(f"dagger must be 'fbp' or 'cg', got '{dagger}'")
        if window not in WINDOWS:
            raise ValueError(f"unknown FBP window '{window}'; expected one of {WINDOWS}")
        if angle_sampling not in _ANGLE_SAMPLING:
            raise ValueError(f"angle_sampling must be one of {_ANGLE_SAMPLING}, got '{angle_sampling}'")
        self.dagger, self.window, self.angle_sampling = dagger, window, angle_sampling
        if centering not in CENTERINGS:
            raise ValueError(f"centering must be one of {CENTERINGS}, got {centering!r}")
        self.use_symmetry = bool(use_symmetry)
        self.centering = centering
        # the rules (None: the default for the image size), kept to rebuild for another size
        self._n_detectors_arg = None if n_detectors is None else int(n_detectors)
        self._pixel_size_arg = None if pixel_size is None else float(pixel_size)
        self.n_detectors = (self._n_detectors_arg if self._n_detectors_arg is not None
                            else default_detectors(self.img_size, centering))
        if self.n_detectors < 1:
            raise ValueError(f"n_detectors must be >= 1, got {n_detectors}")
        self.pixel_size = 1.0 / self.img_size if pixel_size is None else float(pixel_size)
        if not self.pixel_size > 0:
            raise ValueError(f"pixel_size must be > 0, got {pixel_size}")
        if angles is None:
            if int(n_views) < 1:
                raise ValueError(f"n_views must be >= 1, got {n_views}")
            angles = torch.arange(int(n_views), dtype=torch.float64) * (180.0 / int(n_views))
        self._set_param("angles", torch.as_tensor(angles))

    # -- parameters --------------------------------------------------------------------
    def _set_param(self, name: str, value: Tensor) -> None:
        if name == "angles":
            if not isinstance(value, Tensor):
                raise TypeError(f"angles must be a tensor (degrees), got {type(value).__name__}")
            if not value.is_floating_point():
                value = value.double()
            if value.ndim == 1:
                value = value.unsqueeze(0)
            if value.ndim != 2 or value.shape[1] < 1:
                raise ValueError(f"angles must have shape (n_views,) or (B, n_views), got {tuple(value.shape)}")
            if not torch.isfinite(value).all():
                raise ValueError("angles must be finite (degrees)")
        super()._set_param(name, value)

    @property
    def n_views(self) -> int:
        return int(self.angles.shape[-1])

    @property
    def is_random(self) -> bool:
        return self.angle_sampling != "fixed"

    def sample_params(self, batch_size: int, generator: torch.Generator | None = None,
                      device: torch.device | str | None = None) -> dict[str, Tensor]:
        """Fresh per-sample angle sets ``(B, n_views)`` (``{}`` when ``angle_sampling='fixed'``)."""
        if self.angle_sampling == "fixed":
            return {}
        device = self.angles.device if device is None else torch.device(device)
        V = self.n_views
        if self.angle_sampling == "offset":
            u = rng.rand((batch_size, 1), generator=generator, device=device, dtype=torch.float64)
            base = torch.arange(V, device=device, dtype=torch.float64) * (180.0 / V)
            return {"angles": base + u * (180.0 / V)}
        u = rng.rand((batch_size, V), generator=generator, device=device, dtype=torch.float64)
        return {"angles": torch.sort(180.0 * u, dim=1).values}

    # -- the maps ------------------------------------------------------------------------
    def _groups(self, batch: int):
        """(plan key angles, sample indices or None) for each distinct angle set."""
        ang = self.angles
        if ang.shape[0] not in (1, batch):
            raise ValueError(f"Tomography has angles for {ang.shape[0]} samples but the batch has {batch}")
        if ang.shape[0] == 1 or bool((ang == ang[:1]).all()):
            return [(ang[0], None)]
        uniq, inverse = torch.unique(ang, dim=0, return_inverse=True)
        return [(uniq[u], (inverse == u).nonzero().reshape(-1)) for u in range(uniq.shape[0])]

    def _plan(self, angles: Tensor, ref: Tensor) -> RadonPlan:
        return radon_plan(self.img_size, angles.detach().cpu(), self.n_detectors, self.pixel_size,
                          ref.dtype, ref.device, self.centering, self.use_symmetry)

    def A(self, x: Tensor) -> Tensor:
        """Sinogram ``(B, C, n_views, n_detectors)`` of images ``(B, C, N, N)``."""
        self._check_image(x, "Tomography.A", size=(self.img_size, self.img_size))
        B, C, N, _ = x.shape
        out = x.new_empty(B, C, self.n_views, self.n_detectors)
        for angles, idx in self._groups(B):
            xs = x if idx is None else x.index_select(0, idx.to(x.device))
            ys = project(xs.reshape(-1, N * N), self._plan(angles, x))
            ys = ys.reshape(xs.shape[0], C, self.n_views, self.n_detectors)
            if idx is None:
                return ys
            out = out.index_copy(0, idx.to(x.device), ys)
        return out

    def A_adjoint(self, y: Tensor) -> Tensor:
        """Back-projection ``A^T y``: the exact transpose of ``A``."""
        self._check_sinogram(y, "Tomography.A_adjoint")
        B, C = y.shape[:2]
        N = self.img_size
        out = y.new_empty(B, C, N, N)
        for angles, idx in self._groups(B):
            ys = y if idx is None else y.index_select(0, idx.to(y.device))
            xs = backproject(ys.reshape(-1, self.n_views, self.n_detectors), self._plan(angles, y))
            xs = xs.reshape(ys.shape[0], C, N, N)
            if idx is None:
                return xs
            out = out.index_copy(0, idx.to(y.device), xs)
        return out

    def fbp(self, y: Tensor, window: str | None = None) -> Tensor:
        """Filtered back-projection ``pi / (n_views s^2) A^T (h * y)`` (Kak & Slaney 1988).

        Exact for band-limited images in the limit of many views; with few views
        it has angular-undersampling streaks.
        """
        self._check_sinogram(y, "Tomography.fbp")
        spec = ramp_filter(self.n_detectors, window or self.window, dtype=y.dtype, device=y.device)
        n_pad = 2 * (spec.numel() - 1)
        with cpu_threads(y, y.numel() * int(math.log2(n_pad))):  # small FFTs: see SPARSE_CPU_THREADS
            q = torch.fft.irfft(torch.fft.rfft(y, n=n_pad, dim=-1) * spec, n=n_pad, dim=-1)[..., : self.n_detectors]
        return self.A_adjoint(q) * (math.pi / (self.n_views * self.pixel_size**2))

    def A_dagger(self, y: Tensor) -> Tensor:
        """FBP (``dagger='fbp'``) or least squares by CG (``dagger='cg'``)."""
        if self.dagger == "fbp":
            return self.fbp(y)
        self._check_sinogram(y, "Tomography.A_dagger")
        return super().A_dagger(y)

    # -- the same geometry at another size ------------------------------------------------
    def for_image_size(self, img_size: int | Sequence[int], n_detectors: int | None = None) -> Tomography:
        """This operator for ``N' x N'`` images: same angles, centring, filter, noise and sampling.

        The detector count and the pixel size follow the rules this operator was built
        with: the defaults become ``default_detectors(N')`` and ``1 / N'``; an explicit
        ``pixel_size`` is kept (the same physical pixel); an explicit ``n_detectors``
        cannot be guessed for another size and must be passed again.

        Example:
            >>> ct64 = Tomography(64, n_views=60)
            >>> ct128 = ct64.for_image_size(128)
            >>> ct128.n_detectors, bool((ct128.angles == ct64.angles).all())
            (182, True)
        """
        n = _square_size(img_size, "Tomography.for_image_size")
        if n_detectors is not None:
            if int(n_detectors) < 1:
                raise ValueError(f"n_detectors must be >= 1, got {n_detectors}")
            explicit = int(n_detectors)
        elif self._n_detectors_arg is None:
            explicit = None
        elif n == self.img_size:
            explicit = self.n_detectors
        else:
            raise ValueError(
                f"this Tomography has an explicit n_detectors={self.n_detectors} for {self.img_size}x"
                f"{self.img_size} images; pass n_detectors for {n}x{n} images (the default rule gives "
                f"{default_detectors(n, self.centering)})")
        new = self._shallow_copy()
        new.img_size = n
        new._n_detectors_arg = explicit
        new.n_detectors = default_detectors(n, self.centering) if explicit is None else explicit
        new.pixel_size = 1.0 / n if self._pixel_size_arg is None else self._pixel_size_arg
        return new

    def measurement_shape(self, image_shape: tuple[int, ...]) -> tuple[int, ...]:
        """``(C, n_views, n_detectors)`` of the image size's geometry (``for_image_size``)."""
        n = image_shape[-1]
        op = self if n == self.img_size else self.for_image_size(n)
        return (*image_shape[:-2], op.n_views, op.n_detectors)

    def for_measurement(self, shape: tuple[int, ...]) -> Tomography:
        """This operator for a sinogram of ``shape`` ``(C, n_views, D)`` (see ``for_sinogram``)."""
        return self.for_sinogram(tuple(shape))

    def for_sinogram(self, y: Tensor | Sequence[int], img_size: int | None = None) -> Tomography:
        """This operator for sinograms of shape ``(..., n_views, D)`` (a tensor or its shape).

        The number of views must match the angles. The image size is ``img_size`` when
        given (the detector count is then ``D``), else the one ``N`` whose default detector
        count is ``D`` (``ceil(sqrt(2) N)``: the size of ``skimage.transform.radon(...,
        circle=False)``). Returns ``self`` when the shape is already this operator's.

        Example:
            >>> ct = Tomography(64, n_views=60)
            >>> ct.for_sinogram((1, 1, 60, 182)).img_size
            128
        """
        shape = tuple(y.shape) if isinstance(y, Tensor) else tuple(int(d) for d in y)
        if len(shape) < 2:
            raise ValueError(f"Tomography.for_sinogram expects a sinogram shape (..., n_views, n_detectors), "
                             f"got {shape}")
        views, D = shape[-2:]
        if views != self.n_views:
            raise ValueError(f"the sinogram has {views} views (shape {shape}) but this Tomography has "
                             f"{self.n_views} angles; expected shape (..., {self.n_views}, D)")
        if img_size is not None:
            n = _square_size(img_size, "Tomography.for_sinogram")
            if n == self.img_size and D == self.n_detectors:
                return self
            return self.for_image_size(n, n_detectors=D)
        if D == self.n_detectors:
            return self
        if self._n_detectors_arg is not None:
            raise ValueError(
                f"the sinogram has {D} detector bins but this Tomography has an explicit n_detectors="
                f"{self.n_detectors} (for {self.img_size}x{self.img_size} images): the image size cannot be "
                f"inferred; pass img_size")
        guess = max(1, int(D / math.sqrt(2)))
        candidates = range(max(1, guess - 2), guess + 3)
        matches = [n for n in candidates if default_detectors(n, self.centering) == D]
        if not matches:
            near = ", ".join(f"N={n} gives {default_detectors(n, self.centering)}" for n in candidates)
            raise ValueError(
                f"the sinogram has {D} detector bins, which no image size gives with the default detector "
                f"count of this Tomography ({near}; it has {self.n_detectors} for {self.img_size}x"
                f"{self.img_size}); pass img_size to use {D} bins for an image size of your choice")
        return self.for_image_size(matches[0])

    def _check_sinogram(self, y: Tensor, who: str) -> None:
        if not isinstance(y, Tensor):
            raise TypeError(f"{who} expects a torch.Tensor, got {type(y).__name__}")
        if y.ndim != 4 or tuple(y.shape[-2:]) != (self.n_views, self.n_detectors):
            raise ValueError(f"{who} expects a sinogram (B, C, {self.n_views}, {self.n_detectors}), "
                             f"got shape {tuple(y.shape)}")
        if not y.is_floating_point():
            raise TypeError(f"{who} expects a floating-point tensor, got dtype {y.dtype}")

    def extra_repr(self) -> str:
        shared = "shared" if self.angles.shape[0] == 1 else f"per-sample x{self.angles.shape[0]}"
        return (f"img_size={self.img_size}, n_views={self.n_views} ({shared}), n_detectors={self.n_detectors}, "
                f"pixel_size={self.pixel_size:g}, dagger='{self.dagger}', window='{self.window}', "
                f"angle_sampling='{self.angle_sampling}', centering='{self.centering}'")


class BeerLambertCT(Physics):
    """Transmission CT: ``y ~ Poisson(I0 exp(-mu A x))`` photon counts (Beer-Lambert law).

    ``A`` is a ``Tomography`` (pixel size ``1/N`` by default, so ``A x <= sqrt(2)``
    for ``x`` in [0, 1]); ``mu`` is the attenuation of a unit-valued image per
    image width: with the default ``mu = 3`` a disc of ones filling the image lets
    ``exp(-3) ~ 5 %`` of the photons through its centre (about 500 counts at
    ``I0 = 1e4``). ``A(x)`` returns the mean counts ``I0 exp(-mu A x)``; the
    default noise is ``PoissonNoise(gain=1)`` (the counts themselves).

    ``linearise(y) = -log(max(y, 1) / I0) / mu`` is approximately ``A x`` (bias
    and variance O(1/counts)), and ``A_dagger(y)`` is the FBP of it.
    """

    def __init__(self, tomography: Tomography, I0: float | Tensor = 1e4, mu: float = 3.0,
                 noise: NoiseModel | None = None):
        super().__init__(noise if noise is not None else PoissonNoise(1.0))
        if not isinstance(tomography, Tomography):
            raise TypeError(f"BeerLambertCT needs a Tomography, got {type(tomography).__name__}")
        I0 = torch.as_tensor(I0, dtype=torch.float64)
        if I0.ndim > 1 or not torch.all(I0 > 0) or not torch.all(torch.isfinite(I0)):
            raise ValueError(f"I0 must be a positive scalar or per-sample (B,) tensor, got {I0}")
        if not mu > 0:
            raise ValueError(f"mu must be > 0, got {mu}")
        self.tomography = tomography
        self.I0 = I0
        self.mu = float(mu)

    param_names = ("angles",)

    @property
    def angles(self) -> Tensor:
        return self.tomography.angles

    def _set_param(self, name: str, value: Tensor) -> None:
        self.tomography = self.tomography.with_params(**{name: value})

    @property
    def is_random(self) -> bool:
        return self.tomography.is_random

    def sample_params(self, batch_size: int, generator: torch.Generator | None = None,
                      device: torch.device | str | None = None) -> dict[str, Tensor]:
        return self.tomography.sample_params(batch_size, generator, device)

    def A(self, x: Tensor) -> Tensor:
        """Mean photon counts ``I0 exp(-mu A x)``."""
        z = self.tomography.A(x)
        return rng.as_per_sample(self.I0, z, "I0") * torch.exp(-self.mu * z)

    def linearise(self, y: Tensor) -> Tensor:
        """Log-transformed data ``-log(max(y, 1) / I0) / mu ~ A x``."""
        i0 = rng.as_per_sample(self.I0, y, "I0")
        return -torch.log(y.clamp_min(1.0) / i0) / self.mu

    def A_dagger(self, y: Tensor) -> Tensor:
        """FBP of the linearised counts."""
        return self.tomography.A_dagger(self.linearise(y))

    def for_image_size(self, img_size: int | Sequence[int], n_detectors: int | None = None) -> BeerLambertCT:
        """The same model for ``N' x N'`` images (see ``Tomography.for_image_size``)."""
        new = self._shallow_copy()
        new.tomography = self.tomography.for_image_size(img_size, n_detectors)
        return new

    def for_measurement(self, shape: tuple[int, ...]) -> BeerLambertCT:
        """The same model for a count sinogram of ``shape`` ``(C, n_views, D)``."""
        return self.for_sinogram(tuple(shape))

    def for_sinogram(self, y: Tensor | Sequence[int], img_size: int | None = None) -> BeerLambertCT:
        """The same model for count sinograms of shape ``(..., n_views, D)`` (see ``Tomography.for_sinogram``)."""
        tomography = self.tomography.for_sinogram(y, img_size)
        if tomography is self.tomography:
            return self
        new = self._shallow_copy()
        new.tomography = tomography
        return new

    def extra_repr(self) -> str:
        return f"I0={self.I0.tolist()}, mu={self.mu:g}"
