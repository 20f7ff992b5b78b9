"""Multi-coil (parallel-imaging) Cartesian MRI: ``y_c = M F (S_c x)``, ``c = 1..C`` receive coils.

Conventions (those of ``selfinv.physics.mri`` for the image, the FFT and the mask):

* the image ``x`` is complex, stored as 2 real channels ``(B, 2, H, W)``;
* the coil sensitivities ``S`` are a per-sample parameter ``(B or 1, C, 2, H, W)`` (real, imaginary),
  normalised so that ``Σ_c |S_c|² = 1`` where the object is and 0 outside (``normalise_sensitivities``):
  ``x`` is then the coil-combined image in the coils' own units, and ``A`` has norm ≤ 1;
* the k-space ``y`` is ``(B, 2C, H, W)``: coil ``c`` in channels ``2c`` (real) and ``2c + 1`` (imaginary);
* ``Aᵀ y = Σ_c S̄_c Fᴴ M y_c`` (the SENSE coil combination of the zero-filled coil images);
  ``A⁺ = (Aᵀ A)⁺ Aᵀ`` by conjugate gradient on the normal equations from 0 (the minimum-norm
  least-squares solution: SENSE, Pruessmann et al., "SENSE: sensitivity encoding for fast MRI", MRM 1999).
  Fully sampled, ``A⁺ = Aᵀ``. Undersampled with a random line mask, ``Aᵀ A`` has a null space (k-space
  columns farther from every sampled one than the maps' bandwidth) and tiny eigenvalues: CG reaches
  ``A⁺`` slowly (relative residual ~1e-4 after ``cg_max_iter = 200`` steps) and ``A⁺ y`` amplifies noise.
  Networks are better started from ``Aᵀ y`` (``init: adjoint``), as the shipped config does.

Sensitivities come with the data (``estimate_sensitivities``: ESPIRiT maps self-calibrated from a file's
fully sampled central lines) or, to simulate from images, from ``simulated_sensitivities`` (smooth coils
around the field of view). Coil noise is taken white and uncorrelated between coils (pre-whiten the file
with its noise scan if it has one). Pixels that no coil sees are in the null space of every measurement;
reconstructors set them to 0 (``restrict_to_field_of_view``).

Example:
    >>> import torch
    >>> from selfinv.physics.mri_multicoil import MultiCoilMRI
    >>> mri = MultiCoilMRI((32, 32), coils=4, generator=torch.Generator().manual_seed(0))
    >>> x = torch.rand(2, 2, 32, 32, dtype=torch.float64)
    >>> y = mri.A(x)
    >>> tuple(y.shape)                     # 4 coils x (real, imaginary)
    (2, 8, 32, 32)
    >>> residual = mri.A(mri.A_dagger(y)) - y       # A A⁺ y = y on the range of A (to CG's accuracy)
    >>> bool(residual.norm() < 1e-3 * y.norm())
    True
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from selfinv.physics.mri import MRI, _centred, _fft2, _ifft2, to_channels, to_complex
from selfinv.physics.noise import NoiseModel


def coils_to_complex(t: Tensor) -> Tensor:
    """``(B, 2C, H, W)`` (or ``(B, C, 2, H, W)``) real channels -> complex ``(B, C, H, W)``."""
    if t.ndim == 4:
        if t.shape[1] % 2:
            raise ValueError(f"multi-coil k-space must have an even number of channels (real, imaginary per coil), "
                             f"got shape {tuple(t.shape)}")
        t = t.reshape(t.shape[0], t.shape[1] // 2, 2, *t.shape[-2:])
    if t.dtype not in (torch.float32, torch.float64):
        t = t.float()
    return torch.view_as_complex(t.movedim(2, -1).contiguous())


def coils_to_channels(z: Tensor) -> Tensor:
    """Complex ``(B, C, H, W)`` -> real ``(B, 2C, H, W)`` (coil ``c``: channels ``2c``, ``2c + 1``)."""
    b, c, h, w = z.shape
    return torch.view_as_real(z).movedim(-1, 2).reshape(b, 2 * c, h, w)


def normalise_sensitivities(s: Tensor, support_threshold: float = 0.0) -> Tensor:
    """Complex maps ``(..., C, H, W)`` divided by their root-sum-of-squares, so that ``Σ_c |S_c|² = 1``; pixels
    whose root-sum-of-squares is at most ``support_threshold`` × its maximum (outside the object) get 0."""
    rss = s.abs().pow(2).sum(-3, keepdim=True).sqrt()
    peak = rss.flatten(-3).amax(-1)[..., None, None, None]
    inside = (rss > support_threshold * peak) & (rss > 0)
    return torch.where(inside, s / torch.where(inside, rss, torch.ones_like(rss)), torch.zeros_like(s))


def simulated_sensitivities(coils: int, height: int, width: int, dtype: torch.dtype = torch.float32,
                            device: torch.device | str | None = None) -> Tensor:
    """``(1, C, 2, H, W)`` smooth maps of ``C`` coils placed evenly on a circle around the field of view (each
    a Gaussian fall-off with distance and a phase ramp along its direction), normalised
    (``Σ_c |S_c|² = 1`` everywhere): for simulating multi-coil k-space from images."""
    if coils < 1:
        raise ValueError(f"coils must be at least 1, got {coils}")
    yy = torch.linspace(-1, 1, height, dtype=torch.float64, device=device).reshape(-1, 1)
    xx = torch.linspace(-1, 1, width, dtype=torch.float64, device=device).reshape(1, -1)
    maps = []
    for c in range(coils):
        angle = 2 * math.pi * c / coils
        cy, cx = 1.2 * math.sin(angle), 1.2 * math.cos(angle)
        magnitude = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 0.6 ** 2))
        phase = 0.5 * math.pi * (math.cos(angle) * xx + math.sin(angle) * yy)
        maps.append(torch.polar(magnitude, phase.expand_as(magnitude)))
    s = normalise_sensitivities(torch.stack(maps))
    return torch.view_as_real(s).movedim(-1, 1)[None].to(dtype)


def calibration_lines(mask: Tensor) -> tuple[int, int]:
    """``(start, stop)``: the contiguous run of sampled k-space columns around the centre ``W // 2`` of a line
    mask ``(W,)`` (the auto-calibration lines of a fastMRI-type mask)."""
    m = mask.reshape(-1) > 0
    w = m.numel()
    centre = w // 2
    if not bool(m[centre]):
        raise ValueError("the k-space centre column is not sampled: no calibration lines to estimate the coil "
                         "sensitivities from (a fastMRI mask keeps a fully sampled centre)")
    start, stop = centre, centre + 1
    while start > 0 and bool(m[start - 1]):
        start -= 1
    while stop < w and bool(m[stop]):
        stop += 1
    return start, stop


def estimate_sensitivities(kspace: Tensor, mask: Tensor, kernel: int = 6, threshold: float = 0.02,
                           crop: float = 0.9, grid: int = 48) -> Tensor:
    """Self-calibrated coil sensitivities ``(C, 2, H, W)`` of one slice of multi-coil k-space, by ESPIRiT
    (Uecker et al., "ESPIRiT — an eigenvalue approach to autocalibrating parallel MRI", MRM 2014).

    ``kspace``: complex ``(C, H, W)``, centred as ``MultiCoilMRI`` measures it; ``mask``: its line mask ``(W,)``.

    1. The fully sampled central lines (``calibration_lines``; at most 64 central rows) give the calibration
       matrix: one row per ``k x k`` k-space patch of all coils (``k`` = ``kernel``, or less when the lines
       hold fewer patches than a patch has entries). Its right singular vectors with
       singular values above ``threshold`` x the largest span every patch the data's coils can produce.
    2. In the image, each such vector ``v_r`` is ``g_r(p) = Σ_δ v_r(δ) e^{2πi δ·p / N}`` (one value per coil),
       and the coils' maps at ``p`` are the eigenvector of ``G(p) = k⁻² Σ_r g_r(p) g_r(p)ᴴ`` whose eigenvalue
       is 1: the maps of the data are exactly what the calibration reproduces. ``G`` is smooth (a
       trigonometric polynomial of degree ``kernel``): it is evaluated on a ``grid x grid`` lattice and the
       maps interpolated to the image.
    3. The maps are unit vectors (``Σ_c |S_c|² = 1``), their phase taken relative to the data's leading
       virtual coil, and 0 where the eigenvalue is below ``crop`` (no coil sees the pixel: outside the
       object or the field of view).

    Example:
        >>> import torch
        >>> from selfinv.physics.mri_multicoil import MultiCoilMRI, estimate_sensitivities, simulated_sensitivities
        >>> s = simulated_sensitivities(4, 32, 32)
        >>> x = torch.zeros(1, 2, 32, 32); x[..., 8:24, 8:24] = 1
        >>> k = MultiCoilMRI((32, 32), mask=torch.ones(32), sensitivities=s).A(x)
        >>> estimate_sensitivities(torch.complex(k[0, 0::2], k[0, 1::2]), torch.ones(32)).shape
        torch.Size([4, 2, 32, 32])
    """
    import torch.nn.functional as F

    if not kspace.is_complex() or kspace.ndim != 3:
        raise ValueError(f"estimate_sensitivities expects complex k-space (coils, H, W), got "
                         f"{'complex' if kspace.is_complex() else kspace.dtype} {tuple(kspace.shape)}")
    c, h, w = kspace.shape
    start, stop = calibration_lines(mask)
    if stop - start < 3:
        raise ValueError(f"the mask keeps {stop - start} fully sampled central k-space line(s): at least 3 are "
                         f"needed to estimate the coil sensitivities")
    rows = min(h, 64)
    # the largest kernel up to ``kernel`` whose calibration matrix has at least as many patches as unknowns
    k = max([2] + [q for q in range(2, int(kernel) + 1)
                   if (rows - q + 1) * (stop - start - q + 1) >= c * q * q and q <= stop - start])
    z = kspace.to(torch.complex128)
    top = h // 2 - rows // 2
    calib = z[:, top:top + rows, start:stop]
    patches = calib.unfold(1, k, 1).unfold(2, k, 1)  # (C, R', L', k, k)
    matrix = patches.permute(1, 2, 0, 3, 4).reshape(-1, c * k * k)
    _, values, vh = torch.linalg.svd(matrix, full_matrices=False)
    kernels = vh[values > threshold * values[0]].reshape(-1, c, k, k)  # (r, C, k, k)
    # g_r(p) on a grid x grid lattice of cell centres, p centred on the image origin (H // 2, W // 2)
    gy, gx = min(grid, h), min(grid, w)
    py = (torch.arange(gy, dtype=torch.float64) + 0.5) * h / gy - 0.5 - h // 2
    px = (torch.arange(gx, dtype=torch.float64) + 0.5) * w / gx - 0.5 - w // 2
    d = torch.arange(k, dtype=torch.float64)
    ey = torch.polar(torch.ones(gy, k, dtype=torch.float64), 2 * math.pi * py[:, None] * d[None] / h)
    ex = torch.polar(torch.ones(gx, k, dtype=torch.float64), 2 * math.pi * px[:, None] * d[None] / w)
    g = torch.einsum("rcuv,yu,xv->yxrc", kernels, ey, ex)  # (gy, gx, r, C)
    gram = torch.einsum("yxrc,yxrd->yxcd", g, g.conj()) / (k * k)  # G(p), Hermitian (gy, gx, C, C)
    eigenvalues, eigenvectors = torch.linalg.eigh(gram)
    maps, top_value = eigenvectors[..., -1], eigenvalues[..., -1]  # (gy, gx, C), (gy, gx)
    flat = z.reshape(c, -1)
    virtual = torch.linalg.eigh(flat @ flat.conj().T)[1][:, -1]  # the data's leading virtual coil (C,)
    reference = (maps @ virtual.conj())[..., None]
    maps = maps * torch.where(reference.abs() > 0, reference.conj() / reference.abs().clamp_min(1e-300), 1)
    stacked = torch.cat([maps.real, maps.imag, top_value[..., None]], -1).permute(2, 0, 1)[None]
    full = F.interpolate(stacked, size=(h, w), mode="bilinear", align_corners=False)[0]
    maps = torch.complex(full[:c], full[c:2 * c])
    maps = normalise_sensitivities(maps) * (full[2 * c] >= crop)
    if not bool((maps != 0).any()):
        raise ValueError(f"no coil sensitivity could be estimated from the {stop - start} central k-space lines "
                         f"({c} coils): too few calibration lines for this many coils")
    return torch.view_as_real(maps).movedim(-1, 1).to(kspace.real.dtype)


class MultiCoilMRI(MRI):
    """Undersampled multi-coil Cartesian MRI ``y_c = M F (S_c x)``; ``Aᵀ y = Σ_c S̄_c Fᴴ M y_c``; ``A⁺`` by CG.

    Args:
        img_size: ``(H, W)`` (a leading channel 2 is tolerated: ``(2, H, W)``).
        acceleration, center_fraction, pattern, mask: the line mask, as for ``MRI``.
        sensitivities: coil maps ``(B or 1, C, 2, H, W)`` (see the module docstring); default: ``coils``
            simulated coils (``simulated_sensitivities``). Data read from a multi-coil file bring their own.
        coils: the number of simulated coils when ``sensitivities`` is not given.
        noise: noise model on the k-space of every coil (white, independent between coils).
        generator: draws the construction-time mask.

    ``sample_params(B)`` draws fresh masks; the sensitivities are not drawn (they belong to the data).
    """

    param_names = ("mask", "sensitivities")
    #: a multi-coil file is read coil by coil (with its sensitivities estimated), not compressed to one coil
    keeps_coils: ClassVar[bool] = True
    cg_max_iter = 200
    cg_tol = 1e-6
    sensitivities: Tensor

    def __init__(
        self,
        img_size: tuple[int, int] | tuple[int, int, int],
        acceleration: int = 4,
        center_fraction: float = 0.08,
        pattern: str = "random",
        mask: Tensor | None = None,
        sensitivities: Tensor | None = None,
        coils: int = 8,
        noise: NoiseModel | None = None,
        generator: torch.Generator | None = None,
    ):
        super().__init__(img_size, acceleration, center_fraction, pattern, mask, noise, generator)
        if sensitivities is None:
            sensitivities = simulated_sensitivities(int(coils), *self.img_size, device=self.mask.device)
        self._set_param("sensitivities", sensitivities)

    @property
    def coils(self) -> int:
        return int(self.sensitivities.shape[1])

    def _set_param(self, name: str, value: Tensor) -> None:
        if name == "sensitivities":
            if not isinstance(value, Tensor):
                raise TypeError(f"sensitivities must be a tensor, got {type(value).__name__}")
            if value.ndim == 4:
                value = value[None]
            H, W = self.img_size
            if value.ndim != 5 or value.shape[2] != 2 or tuple(value.shape[-2:]) != (H, W) or value.shape[1] < 1:
                raise ValueError(f"MultiCoilMRI sensitivities must have shape (B or 1, coils, 2, {H}, {W}) (real and "
                                 f"imaginary parts of each coil's map), got {tuple(value.shape)}")
            if not value.is_floating_point():
                value = value.float()
        super()._set_param(name, value)

    def measurement_shape(self, image_shape: tuple[int, ...]) -> tuple[int, ...]:
        """``(2C, H, W)``: every coil's k-space as 2 real channels."""
        return 2 * self.coils, image_shape[-2], image_shape[-1]

    def for_measurement(self, shape: tuple[int, ...]) -> "MultiCoilMRI":
        """The same sampling for multi-coil k-space ``(2C, H', W')``; the measurement brings its own mask and
        sensitivities (``with_params``), simulated maps stand in until then."""
        if len(shape) != 3 or shape[0] % 2:
            raise ValueError(f"MultiCoilMRI expects k-space as 2 real channels per coil (2C, H, W), got shape "
                             f"{tuple(shape)}")
        if tuple(shape) == self.measurement_shape((2, *self.img_size)):
            return self
        if self._fixed_user_mask and tuple(shape[1:]) != self.img_size:
            raise ValueError(f"this MRI operator has a fixed mask for {self.img_size} k-space; it cannot take "
                             f"k-space of size {tuple(shape[1:])}")
        mask = self.mask if self._fixed_user_mask else None
        return MultiCoilMRI((int(shape[1]), int(shape[2])), self.acceleration, self.center_fraction, self.pattern,
                            mask=mask, coils=shape[0] // 2, noise=self.noise,
                            generator=torch.Generator(device=self.mask.device).manual_seed(0))

    def _coil_maps(self, t: Tensor, who: str) -> Tensor:
        s = self._param_for("sensitivities", t, who)
        return torch.view_as_complex(s.movedim(2, -1).contiguous())  # (B or 1, C, H, W)

    def A(self, x: Tensor) -> Tensor:
        x, m = self._prepare(x, "MultiCoilMRI.A")
        x = x if x.dtype in (torch.float32, torch.float64) else x.float()
        s = self._coil_maps(x, "MultiCoilMRI.A")
        return coils_to_channels(_centred(_fft2, to_complex(x) * s, out_weight=m.to(x.dtype)))

    def A_adjoint(self, y: Tensor) -> Tensor:
        y = coils_to_channels(y) if y.is_complex() else y
        self._check_image(y, "MultiCoilMRI.A_adjoint", channels=2 * self.coils, size=self.img_size)
        y = y if y.dtype in (torch.float32, torch.float64) else y.float()
        m = self._param_for("mask", y, "MultiCoilMRI.A_adjoint")
        s = self._coil_maps(y, "MultiCoilMRI.A_adjoint")
        images = _centred(_ifft2, coils_to_complex(y), in_weight=m.to(y.dtype))
        return to_channels((s.conj() * images).sum(1, keepdim=True))

    def A_dagger(self, y: Tensor) -> Tensor:
        """SENSE: the minimum-norm least-squares image, by conjugate gradient on ``Aᵀ A x = Aᵀ y``."""
        return super(MRI, self).A_dagger(y)

    def restrict_to_field_of_view(self, x: Tensor) -> Tensor:
        """``x`` with 0 where every coil's sensitivity is 0 (outside the object, or cropped by ESPIRiT)."""
        s = self._param_for("sensitivities", x, "MultiCoilMRI.restrict_to_field_of_view")
        return x * (s.pow(2).sum((1, 2)) > 0).unsqueeze(1).to(x.dtype)

    def image_channels(self, measurement_channels: int) -> int:
        """2 (real, imaginary): one complex image behind every coil's k-space."""
        return 2

    def image_estimate(self, y: Tensor) -> Tensor:
        """``Aᵀ y``, the coil-combined zero-filled image (``A⁺ y`` amplifies noise, see the module docstring)."""
        return self.A_adjoint(y)

    def measurement_mask(self, y: Tensor) -> Tensor:
        """The k-space mask ``M`` (``(B or 1, 1, 1 or H, W)``), broadcast over every coil's channels."""
        self._check_image(y, "MultiCoilMRI.measurement_mask", channels=2 * self.coils, size=self.img_size)
        return self._param_for("mask", y, "MultiCoilMRI.measurement_mask")

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, coils={self.coils}"
