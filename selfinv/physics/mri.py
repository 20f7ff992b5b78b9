"""Single-coil Cartesian MRI: ``y = M F x`` with ``F`` the centred orthonormal 2-D DFT.

Conventions
-----------
* Images and k-space are real 2-channel tensors ``(B, 2, H, W)``: channel 0 is
  the real part, channel 1 the imaginary part (``to_complex`` / ``to_channels``
  convert). ``A`` also accepts a complex tensor ``(B, 1, H, W)`` or ``(B, H, W)``
  and converts it with ``to_channels``; outputs are always real 2-channel.
* ``F z = fftshift(fft2(ifftshift(z), norm="ortho"))`` over the last two axes:
  the image origin and the k-space DC sample both sit at index ``(H // 2, W // 2)``.
  ``F`` is unitary, so ``F⁻¹ = Fᴴ = fftshift(ifft2(ifftshift(k), norm="ortho"))``.
* The mask selects k-space columns (phase-encoding lines along the width axis):
  shape ``(B or 1, 1, 1, W)``; a full 2-D mask ``(B or 1, 1, H, W)`` is accepted
  too. Non-sampled entries of ``y`` are zero.
* ``A Aᵀ = M F Fᴴ M = M`` is an orthogonal projection, hence
  ``A⁺ = Aᵀ = Fᴴ M`` (the zero-filled inverse FFT), exactly.

Computation: for even ``H`` and ``W`` and a line mask keeping the same number
``K`` of lines in every sample, ``A`` runs the FFTs along the rows and the
column FFTs on the ``K`` kept lines only, and ``Aᵀ`` the column
inverse FFTs on the ``K`` lines and the row inverse FFTs; the centring shifts are
sign changes and half-period column shifts on those ``K`` lines (``_LinePlan``).
Other masks and sizes use the full 2-D FFT with the shifts as ``(-1)^(i+j)``
modulations. Both give the same operator to rounding.

Example:
    >>> import torch
    >>> from selfinv.physics import MRI
    >>> mri = MRI((64, 64), acceleration=4, center_fraction=0.08, generator=torch.Generator().manual_seed(0))
    >>> x = torch.rand(2, 2, 64, 64, dtype=torch.float64)
    >>> y = mri.A(x)                       # k-space, zero off the 16 kept lines
    >>> int((y[0, 0].abs().sum(0) > 0).sum())
    16
    >>> bool(torch.allclose(mri.A(mri.A_adjoint(y)), y))   # A Aᵀ = M
    True

Simulated k-space from magnitude images is not real acquired MRI data (no coil
sensitivities, no phase); say so in reports. Masks follow the fastMRI challenge
(Zbontar et al., "fastMRI: An open dataset and benchmarks for accelerated MRI",
2018): a fully sampled centre plus random or equispaced lines.
"""

from __future__ import annotations

import functools
from typing import ClassVar

import torch
from torch import Tensor

from selfinv.physics.base import binary_mask
from selfinv.physics.masked import MaskedPhysics
from selfinv.physics.noise import NoiseModel
from selfinv.utils import rng
from selfinv.utils.threads import at_most_threads

ACCELERATIONS = (2, 4, 8)
#: images up to this many pixels (B x H x W) are transformed on one CPU thread: the
#: operator is then a chain of kernels of a few tens of microseconds, which a second
#: thread does not speed up and a busy machine slows down several-fold (thread barriers)
SINGLE_THREAD_PIXELS = 65_536
PATTERNS = ("random", "equispaced")


def to_complex(t: Tensor) -> Tensor:
    """``(B, 2, H, W)`` real/imag channels -> complex ``(B, 1, H, W)`` (one copy)."""
    if t.is_complex():
        return t
    if t.ndim != 4 or t.shape[1] != 2:
        raise ValueError(f"to_complex expects a real (B, 2, H, W) tensor, got shape {tuple(t.shape)}")
    if t.dtype not in (torch.float32, torch.float64):
        t = t.float()
    return torch.view_as_complex(t.permute(0, 2, 3, 1).contiguous()).unsqueeze(1)


def to_channels(z: Tensor) -> Tensor:
    """Complex ``(B, 1, H, W)`` or ``(B, H, W)`` -> real ``(B, 2, H, W)`` (real, imag)."""
    if not z.is_complex():
        raise TypeError(f"to_channels expects a complex tensor, got dtype {z.dtype}")
    if z.ndim == 3:
        z = z[:, None]
    if z.ndim != 4 or z.shape[1] != 1:
        raise ValueError(f"to_channels expects a complex (B, 1, H, W) or (B, H, W) tensor, got {tuple(z.shape)}")
    return torch.view_as_real(z[:, 0]).permute(0, 3, 1, 2)


@functools.lru_cache(maxsize=16)
def _checkerboard(h: int, w: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``(-1)^(i + j)`` on an ``h x w`` grid."""
    i = torch.arange(h, device=device).reshape(-1, 1)
    j = torch.arange(w, device=device).reshape(1, -1)
    return (1 - 2 * ((i + j) % 2)).to(dtype)


def _centred(transform, z: Tensor, in_weight: Tensor | None = None, out_weight: Tensor | None = None) -> Tensor:
    """``out_weight ⊙ fftshift(transform(ifftshift(in_weight ⊙ z)))`` over the last two dims.

    For even sizes the shifts are modulations: with ``s = (-1)^(i+j)`` and
    ``c = (-1)^((H+W)/2)``, ``fftshift(F(ifftshift(z))) = c · s ⊙ F(s ⊙ z)`` (a shift by
    N/2 in one domain multiplies the other by ``(-1)^k``), so the shifts and the
    (mask) weights cost one multiplication on each side and no copies.
    """
    h, w = z.shape[-2:]
    if h % 2 or w % 2:
        z = z if in_weight is None else z * in_weight
        out = torch.fft.fftshift(transform(torch.fft.ifftshift(z, dim=(-2, -1))), dim=(-2, -1))
        return out if out_weight is None else out * out_weight
    s = _checkerboard(h, w, z.device, z.real.dtype)
    s_in = s if in_weight is None else s * in_weight
    s_out = s if ((h + w) // 2) % 2 == 0 else -s
    if out_weight is not None:
        s_out = s_out * out_weight
    return transform(z * s_in) * s_out


def _fft2(z: Tensor) -> Tensor:
    return torch.fft.fft2(z, norm="ortho")


def _ifft2(z: Tensor) -> Tensor:
    return torch.fft.ifft2(z, norm="ortho")


def centered_fft2(x: Tensor) -> Tensor:
    """Unitary centred 2-D DFT of a real ``(B, 2, H, W)`` image, returned in the same layout."""
    return to_channels(_centred(_fft2, to_complex(x)))


def centered_ifft2(k: Tensor) -> Tensor:
    """Inverse (= adjoint) of ``centered_fft2``."""
    return to_channels(_centred(_ifft2, to_complex(k)))


class _LinePlan:
    """The kept k-space columns of a line mask and the signs of the pruned centred FFT.

    For even ``H`` and ``W`` the centred DFT factorises into 1-D transforms with
    ``C_n(v)[p] = (-1)^(p + n/2) F_n((-1)^j v)[p]`` along each axis, and
    ``F_n((-1)^j v)[p] = F_n(v)[(p + n/2) mod n]`` (a shift by half the period). So
    ``A x = M C_H C_W x`` needs ``F_W`` on every row, then ``F_H`` on the ``K`` kept
    columns only (read at ``q = (k + W/2) mod W``); ``A^T`` runs ``F_H^-1`` on the
    ``K`` columns and ``F_W^-1`` on every row, its output sign ``(-1)^(p + W/2)``
    becoming the same half-period shift of the columns. No full-size multiplication,
    and every full-size temporary has the size of the image (so the allocator reuses
    the same blocks from call to call).

    In ``A`` the output sign ``(-1)^(p + H/2)`` of ``C_H`` is a shift of its input rows
    by ``H/2`` (``(-1)^p F(v)[p] = F(v[(i - H/2) mod H])[p]``), folded into the index that
    gathers the ``K`` columns; they are gathered transposed, ``(K, H)``, so ``F_H`` runs
    on contiguous rows, and the one remaining sign ``(-1)^(i + k + W/2)`` is a complex
    constant of the plan.
    """

    def __init__(self, mask: Tensor, h: int, w: int, dtype: torch.dtype, device: torch.device):
        keep = mask[:, 0, 0] != 0  # (B or 1, W)
        self.batch, k = keep.shape[0], int(keep[0].sum())
        self.cols = keep.nonzero()[:, 1].reshape(self.batch, 1, 1, k).to(device)  # kept columns, ascending
        self.shifted = (self.cols + w // 2) % w  # where F_W's output holds them
        r = torch.arange(h, device=device).reshape(1, h, 1)
        def sign(e):
            return (1 - 2 * (e % 2)).to(dtype)
        cols = self.cols[:, 0]  # (B or 1, 1, K)
        q = self.shifted[:, 0]  # (B or 1, 1, K)
        # A: gather F_W's rows shifted by H/2 (the output sign of C_H), times (-1)^(i + k + W/2),
        # both laid out (K, H): v[k, i] = (-1)^(i + q_k) u[(i - H/2) mod H, q_k]
        self.gather_index = ((r - h // 2) % h * w + q).transpose(1, 2).reshape(self.batch, k * h)
        complex_dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        self.gather_sign = sign(r + q).transpose(1, 2).contiguous().to(complex_dtype)  # (B or 1, K, H)
        # A^T: (-1)^(i + k) before F_H^-1; (-1)^(r + H/2 + W/2) after it
        self.in_sign = sign(r + cols)
        self.back_sign = sign(r + h // 2 + w // 2)  # (1, H, 1)

    @staticmethod
    def applies(mask: Tensor, h: int, w: int) -> bool:
        if h % 2 or w % 2 or mask.shape[-2] != 1:
            return False
        counts = (mask[:, 0, 0] != 0).sum(1)
        return bool((counts == counts[0]).all()) and int(counts[0]) > 0

    def forward(self, x: Tensor) -> Tensor:
        """``M C x`` for real 2-channel images ``(B, 2, H, W)``, zero off the kept columns."""
        B, _, H, W = x.shape
        K = self.cols.shape[-1]
        u = torch.fft.fft(torch.complex(x[:, 0], x[:, 1]), dim=-1, norm="ortho")  # F_W, (B, H, W)
        v = u.view(B, H * W).gather(1, self.gather_index.expand(B, -1)).view(B, K, H).mul_(self.gather_sign)
        del u
        v = torch.fft.fft(v, dim=-1, norm="ortho")  # F_H on the K kept columns, (B, K, H)
        out = x.new_zeros(B, 2, H, W)
        return out.scatter_(-1, self.cols.expand(B, 2, H, K), torch.view_as_real(v).permute(0, 3, 2, 1))

    def adjoint(self, y: Tensor) -> Tensor:
        """``C^-1 M y`` for real 2-channel k-space ``(B, 2, H, W)``, as complex ``(B, H, W)``."""
        B, _, H, W = y.shape
        K = self.cols.shape[-1]
        g = y.gather(-1, self.cols.expand(B, 2, H, K))  # (B, 2, H, K)
        v = torch.complex(g[:, 0], g[:, 1]).mul_(self.in_sign)
        v = torch.fft.ifft(v, dim=-2, norm="ortho").mul_(self.back_sign)
        full = v.new_zeros(B, H, W)
        full.scatter_(-1, self.shifted[:, 0].expand(B, H, K), v)
        return torch.fft.ifft(full, dim=-1, norm="ortho")


def mri_mask(
    width: int,
    acceleration: int = 4,
    center_fraction: float = 0.08,
    pattern: str = "random",
    batch_size: int = 1,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Cartesian line masks of shape ``(batch_size, 1, 1, width)`` (float 0/1).

    ``n_center = round(width * center_fraction)`` central columns (around
    ``width // 2``, the DC line) are always kept; ``n_total = round(width /
    acceleration)`` columns are kept in total. The remaining
    ``n_total - n_center`` lines are drawn among the outer columns either
    uniformly without replacement (``"random"``) or equispaced with a random
    offset (``"equispaced"``: spacing ``(width - n_center) / (n_total - n_center)``
    over the outer columns). Each sample of the batch gets its own draw.
    """
    if acceleration not in ACCELERATIONS:
        raise ValueError(f"acceleration must be one of {ACCELERATIONS}, got {acceleration}")
    if pattern not in PATTERNS:
        raise ValueError(f"pattern must be one of {PATTERNS}, got {pattern!r}")
    width = int(width)
    if width < acceleration:
        raise ValueError(f"width must be at least the acceleration {acceleration}, got {width}")
    n_total = max(1, round(width / acceleration))
    n_center = round(width * float(center_fraction))
    if not (0.0 <= center_fraction <= 1.0) or n_center > n_total:
        raise ValueError(
            f"center_fraction={center_fraction} keeps {n_center} central lines, more than the "
            f"{n_total} lines allowed by acceleration {acceleration} on width {width}; "
            f"expected center_fraction <= {n_total / width:.4f}"
        )
    start = width // 2 - n_center // 2
    center = torch.zeros(width, dtype=torch.bool)
    center[start:start + n_center] = True
    outer = (~center).nonzero().flatten()  # (width - n_center,)
    n_extra = n_total - n_center
    device = torch.device(device) if device is not None else torch.device("cpu")
    mask = center.to(device).float().expand(batch_size, width).clone()
    if n_extra > 0:
        outer = outer.to(device)
        if pattern == "random":
            # the n_extra smallest of i.i.d. uniforms = a uniform subset without replacement
            u = rng.rand((batch_size, outer.numel()), generator=generator, device=device)
            pick = u.argsort(dim=1)[:, :n_extra]
        else:
            spacing = outer.numel() / n_extra
            offset = rng.rand((batch_size, 1), generator=generator, device=device, dtype=torch.float64) * spacing
            steps = torch.arange(n_extra, device=device, dtype=torch.float64)[None]
            pick = (offset + steps * spacing).floor().long().clamp_max(outer.numel() - 1)
        mask.scatter_(1, outer[pick], 1.0)
    return mask[:, None, None, :]


class MRI(MaskedPhysics):
    """Undersampled single-coil Cartesian MRI ``A x = M F x``; ``Aᵀ = A⁺ = Fᴴ M``.

    Args:
        img_size: ``(H, W)`` (a leading channel 2 is tolerated: ``(2, H, W)``).
        acceleration: 2, 4 or 8 — about ``W / acceleration`` lines are kept.
        center_fraction: fraction of fully sampled central lines.
        pattern: ``"random"`` or ``"equispaced"`` (see ``mri_mask``).
        mask: a fixed user mask ``(B or 1, 1, 1, W)``, ``(B or 1, 1, H, W)``, ``(W,)`` or
            ``(H, W)`` of 0/1; the operator is then deterministic.
        noise: noise model on the 2-channel k-space; ``physics(x)`` returns
            ``M noise(M F x)``, so unsampled entries stay exactly zero.
        generator: draws the construction-time mask (shape ``(1, 1, 1, W)``).

    ``sample_params(B)`` draws ``B`` fresh masks from the same distribution.
    """

    param_names: tuple[str, ...] = ("mask",)
    complex_image: ClassVar[bool] = True

    def __init__(
        self,
        img_size: tuple[int, int] | tuple[int, int, int],
        acceleration: int = 4,
        center_fraction: float = 0.08,
        pattern: str = "random",
        mask: Tensor | None = None,
        noise: NoiseModel | None = None,
        generator: torch.Generator | None = None,
    ):
        super().__init__(noise)
        size = tuple(int(s) for s in img_size)
        if len(size) == 3 and size[0] == 2:
            size = size[1:]
        if len(size) != 2:
            raise ValueError(f"img_size must be (H, W) (or (2, H, W)), got {tuple(img_size)}")
        self.img_size = size
        self.acceleration = int(acceleration)
        self.center_fraction = float(center_fraction)
        self.pattern = pattern
        self._fixed_user_mask = mask is not None
        if mask is None:
            device = generator.device if generator is not None else None
            mask = mri_mask(size[1], acceleration, center_fraction, pattern, 1, generator, device)
        elif acceleration not in ACCELERATIONS:
            raise ValueError(f"acceleration must be one of {ACCELERATIONS}, got {acceleration}")
        self._set_param("mask", mask)

    def _set_param(self, name: str, value: Tensor) -> None:
        if name == "mask":
            value = self._validate_mask(value)
        super()._set_param(name, value)

    def _validate_mask(self, mask: Tensor) -> Tensor:
        if not isinstance(mask, Tensor):
            raise TypeError(f"mask must be a tensor, got {type(mask).__name__}")
        H, W = self.img_size
        if mask.ndim == 1:
            mask = mask.reshape(1, 1, 1, -1)
        elif mask.ndim == 2:
            mask = mask[None, None]
        if mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[-1] != W or mask.shape[-2] not in (1, H):
            raise ValueError(
                f"MRI mask must have shape (B or 1, 1, 1, {W}) or (B or 1, 1, {H}, {W}), got {tuple(mask.shape)}"
            )
        return binary_mask(mask, "MRI")

    def sample_params(self, batch_size: int, generator: torch.Generator | None = None,
                      device: torch.device | str | None = None) -> dict[str, Tensor]:
        """``B`` fresh line masks ``(B, 1, 1, W)``; ``{}`` for a fixed user mask."""
        if self._fixed_user_mask:
            return {}
        device = self.mask.device if device is None else device
        return {"mask": mri_mask(self.img_size[1], self.acceleration, self.center_fraction, self.pattern,
                                 batch_size, generator, device)}

    @property
    def is_random(self) -> bool:
        return not self._fixed_user_mask

    def measurement_shape(self, image_shape: tuple[int, ...]) -> tuple[int, ...]:
        """k-space of the image's size, as 2 real channels: ``(2, H, W)``."""
        return 2, image_shape[-2], image_shape[-1]

    def for_measurement(self, shape: tuple[int, ...]) -> "MRI":
        """The same sampling (acceleration, centre fraction, pattern, noise) for k-space ``(2, H', W')``.
        The mask of a measurement of another size comes with it (a fastMRI file's ``mask``) or from
        ``mask_from_measurement``."""
        if len(shape) != 3 or shape[0] != 2:
            raise ValueError(f"MRI expects k-space as 2 real channels (2, H, W), got shape {tuple(shape)}")
        if tuple(shape[1:]) == self.img_size:
            return self
        if self._fixed_user_mask:
            raise ValueError(f"this MRI operator has a fixed mask for {self.img_size} k-space; it cannot take "
                             f"k-space of size {tuple(shape[1:])}")
        _, H, W = shape
        return MRI((H, W), self.acceleration, self.center_fraction, self.pattern, noise=self.noise,
                   generator=torch.Generator(device=self.mask.device).manual_seed(0))

    def mask_from_measurement(self, y: Tensor) -> Tensor:
        """``(B, 1, 1, W)``: the k-space columns (phase-encoding lines) holding any non-zero sample."""
        if y.is_complex():
            y = to_channels(y)
        return (y != 0).flatten(1, 2).any(dim=1).to(y.dtype)[:, None, None, :]

    @property
    def acceleration_achieved(self) -> float:
        """``H W / (number of kept k-space samples)``, averaged over the batch of masks."""
        return float(1.0 / self.mask.float().mean())

    # -- the maps ------------------------------------------------------------------
    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Simulate ``y = M noise(M F x)``: no measurement (hence no noise) off the mask."""
        y = self.noise(self.A(x), generator=generator)
        return y * self.mask.to(device=y.device, dtype=y.dtype)

    def measurement_mask(self, y: Tensor) -> Tensor:
        """The k-space mask ``M`` (``(B or 1, 1, 1 or H, W)``, broadcast over the real and
        imaginary channels of ``y``): unsampled entries of ``y`` are exactly 0 and noiseless."""
        return self._prepare(y, "MRI.measurement_mask")[1]

    def _prepare(self, t: Tensor, who: str) -> tuple[Tensor, Tensor]:
        if isinstance(t, Tensor) and t.is_complex():
            t = to_channels(t)
        self._check_image(t, who, channels=2, size=self.img_size)
        return t, self._param_for("mask", t, who)

    def _line_plan(self, m: Tensor, t: Tensor) -> _LinePlan | None:
        """The pruned-FFT plan of the current mask on ``t``'s dtype/device (cached), or None
        (odd sizes, 2-D masks, samples keeping different numbers of lines)."""
        key = (t.dtype, t.device)
        cached = self.__dict__.get("_line_cache")
        if cached is not None and cached[0] is self.mask and cached[1] == self.mask._version and cached[2] == key:
            return cached[3]
        H, W = self.img_size
        plan = _LinePlan(m, H, W, t.dtype, t.device) if _LinePlan.applies(m, H, W) else None
        self.__dict__["_line_cache"] = (self.mask, self.mask._version, key, plan)
        return plan

    @staticmethod
    def _threads(t: Tensor) -> int | None:
        return 1 if t.shape[0] * t.shape[-2] * t.shape[-1] <= SINGLE_THREAD_PIXELS else None

    def A(self, x: Tensor) -> Tensor:
        x, m = self._prepare(x, "MRI.A")
        plan = self._line_plan(m, x)
        with at_most_threads(x, self._threads(x)):
            if plan is not None:
                return plan.forward(x if x.dtype in (torch.float32, torch.float64) else x.float())
            return to_channels(_centred(_fft2, to_complex(x), out_weight=m.to(x.dtype)))

    def A_adjoint(self, y: Tensor) -> Tensor:
        y, m = self._prepare(y, "MRI.A_adjoint")
        plan = self._line_plan(m, y)
        with at_most_threads(y, self._threads(y)):
            if plan is not None:
                return to_channels(plan.adjoint(y))
            return to_channels(_centred(_ifft2, to_complex(y), in_weight=m.to(y.dtype)))

    def A_dagger(self, y: Tensor) -> Tensor:
        """Zero-filled inverse FFT ``Fᴴ M y`` — the exact pseudo-inverse."""
        return self.A_adjoint(y)

    def extra_repr(self) -> str:
        kind = "user mask" if self._fixed_user_mask else (
            f"acceleration={self.acceleration}, center_fraction={self.center_fraction}, pattern={self.pattern!r}")
        return f"img_size={self.img_size}, {kind}, mask={tuple(self.mask.shape)}"

