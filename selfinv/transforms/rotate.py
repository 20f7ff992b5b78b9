"""Rotations about the image centre.

* ``Rotate()`` (default, ``multiples_of_90=True``): the cyclic group of the four
  rotations by ``k * 90°`` of a square image — exact permutations of the pixels
  (``torch.rot90``), orthogonal, with an exact inverse.
* ``Rotate(multiples_of_90=False, degrees=...)``: arbitrary angles by bicubic
  (default) or bilinear interpolation (``grid_sample``) with zero or reflection
  padding. This is only an approximation of a rotation of the continuous image:
  corners leave the field of view and interpolation smooths, so ``inverse`` (the
  rotation by ``-θ``) is approximate, accurate only in the interior disc and
  for band-limited images.

Why bicubic: equivariant imaging applies ``T`` to the network's own output and
trains the network to reproduce ``T x̂`` from ``A T x̂``. Bilinear resampling is
a low-pass filter (a half-pixel shift averages two pixels), so a bilinear ``T``
teaches the network to return slightly blurred images. Bicubic (Keys)
resampling keeps much more of the high frequencies (see
``tests/test_transforms.py::test_rotation_round_trip_keeps_detail``).

Angles are counter-clockwise as displayed with row 0 at the top, the same
direction as ``torch.rot90(x, k, dims=(-2, -1))``.
Equivariant imaging uses rotations for rotation-invariant image sets (Chen,
Tachella & Davies 2021).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from selfinv.transforms.base import Transform, _check_image, get_param, per_sample
from selfinv.utils import rng

_PADDINGS = {"zeros": "zeros", "reflect": "reflection", "reflection": "reflection", "border": "border"}


class Rotate(Transform):
    """Random rotations, one per sample.

    Parameters: ``k`` ``(B,)`` integers in 0..3 (multiples of 90°), or ``angle``
    ``(B,)`` in degrees (arbitrary angles).

    Args:
        multiples_of_90: exact rotations by ``k * 90°`` (square images only).
        degrees: for arbitrary angles, the range ``(low, high)`` of the uniform
            angle, or ``a`` for ``(-a, a)``; default ``(-180, 180)``.
        padding: ``"zeros"`` or ``"reflect"`` outside the image (arbitrary angles).
        interpolation: ``"bicubic"`` (default) or ``"bilinear"`` (arbitrary angles).
    """

    def __init__(self, multiples_of_90: bool = True, degrees: float | tuple[float, float] = (-180.0, 180.0),
                 padding: str = "zeros", interpolation: str = "bicubic"):
        super().__init__()
        if padding not in _PADDINGS:
            raise ValueError(f"padding must be one of {sorted(_PADDINGS)}, got {padding!r}")
        if interpolation not in ("bilinear", "bicubic", "nearest"):
            raise ValueError(f"interpolation must be 'bilinear', 'bicubic' or 'nearest', got {interpolation!r}")
        if not isinstance(degrees, (tuple, list)):
            degrees = (-abs(float(degrees)), abs(float(degrees)))
        if len(degrees) != 2 or degrees[0] > degrees[1]:
            raise ValueError(f"degrees must be a number or a (low, high) pair with low <= high, got {degrees}")
        self.multiples_of_90 = multiples_of_90
        self.degrees = (float(degrees[0]), float(degrees[1]))
        self.padding, self.interpolation = padding, interpolation
        self.exact_inverse = multiples_of_90

    def sample(self, batch_size: int, generator: torch.Generator | None = None,
               device: torch.device | str | None = None) -> dict[str, Tensor]:
        if self.multiples_of_90:
            return {"k": rng.randint(0, 4, (batch_size,), generator=generator, device=device)}
        lo, hi = self.degrees
        u = rng.rand((batch_size,), generator=generator, device=device)
        return {"angle": lo + (hi - lo) * u}

    def transform(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        _check_image(x, "Rotate")
        if self.multiples_of_90:
            return _rot90_per_sample(x, per_sample(get_param(params, "k", "Rotate"), x, "k", "Rotate"))
        return self._rotate(x, per_sample(get_param(params, "angle", "Rotate"), x, "angle", "Rotate"))

    def inverse(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        _check_image(x, "Rotate")
        if self.multiples_of_90:
            return _rot90_per_sample(x, -per_sample(get_param(params, "k", "Rotate"), x, "k", "Rotate"))
        return self._rotate(x, -per_sample(get_param(params, "angle", "Rotate"), x, "angle", "Rotate"))

    def elements(self, img_size: tuple[int, int] | None = None) -> list[dict[str, Tensor]]:
        if not self.multiples_of_90:
            raise NotImplementedError("Rotate with arbitrary angles is not a finite group; use multiples_of_90=True")
        return [{"k": torch.tensor([k])} for k in range(4)]

    def _rotate(self, x: Tensor, angle: Tensor) -> Tensor:
        """Resample ``x`` at ``R(-θ) u`` about the centre, ``u`` in pixel units (aspect ratio kept)."""
        b, _, h, w = x.shape
        ct = x.dtype if x.dtype == torch.float64 else torch.float32  # grid arithmetic precision
        theta = torch.deg2rad(angle.reshape(-1).to(ct))
        cos, sin = torch.cos(theta).view(-1, 1, 1), torch.sin(theta).view(-1, 1, 1)
        # centred pixel coordinates: column u (right), row v (down)
        v = torch.arange(h, device=x.device, dtype=ct).view(1, h, 1) - (h - 1) / 2
        u = torch.arange(w, device=x.device, dtype=ct).view(1, 1, w) - (w - 1) / 2
        # counter-clockwise on screen (rows down): source = rotation by -θ of the target point
        u_src = cos * u - sin * v
        v_src = sin * u + cos * v
        # align_corners=False: pixel centre p (centred) -> normalised 2 p / size
        grid = torch.stack(((2 / w) * u_src, (2 / h) * v_src), dim=-1).to(x.dtype)
        if grid.shape[0] == 1 and b > 1:
            grid = grid.expand(b, h, w, 2)
        return F.grid_sample(x, grid, mode=self.interpolation, padding_mode=_PADDINGS[self.padding],
                             align_corners=False)

    def extra_repr(self) -> str:
        if self.multiples_of_90:
            return "multiples_of_90=True"
        return f"degrees={self.degrees}, padding={self.padding!r}, interpolation={self.interpolation!r}"


def _rot90_per_sample(x: Tensor, k: Tensor) -> Tensor:
    """``torch.rot90(x[b], k[b], dims=(-2, -1))`` for each sample, grouped by ``k`` (at most 4 groups)."""
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"Rotate(multiples_of_90=True) needs square images, got shape {tuple(x.shape)}")
    k = k.reshape(-1).long() % 4
    if k.numel() == 1:
        return torch.rot90(x, int(k), dims=(-2, -1))
    out = torch.empty_like(x)
    for kk in range(4):
        idx = (k == kk).nonzero(as_tuple=True)[0]
        if idx.numel():
            out[idx] = torch.rot90(x[idx], kk, dims=(-2, -1))
    return out
