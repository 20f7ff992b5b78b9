"""Integer circular shifts ``(T_g x)[i, j] = x[i - a, j - b]`` (indices mod ``H``, ``W``).

The translation group of the discrete torus, of order ``H W``; ``T_g`` is a
permutation, hence orthogonal, and ``T_g^{-1} = T_{-g}``. Used by equivariant
imaging (Chen, Tachella & Davies 2021) for shift-invariant image sets.
"""

from __future__ import annotations

import torch
from torch import Tensor

from selfinv.transforms.base import Transform, _check_image, get_param, per_sample
from selfinv.utils import rng

#: range of the raw draws when any shift is allowed; reduced mod H (or W) at apply
#: time, the non-uniformity is at most H / 2**30 (negligible).
_ANY = 2**30


class Shift(Transform):
    """Random integer circular shifts, one per sample.

    Parameters: ``shift`` of shape ``(B, 2)`` (integers, rows then columns),
    taken modulo the image size when applied, so ``sample`` needs no image size.

    Args:
        max_shift: shifts uniform in ``[-max_shift, max_shift]`` in each direction;
            ``None`` draws any shift uniformly.
    """

    def __init__(self, max_shift: int | None = None):
        super().__init__()
        if max_shift is not None and max_shift < 0:
            raise ValueError(f"max_shift must be >= 0 or None, got {max_shift}")
        self.max_shift = max_shift

    def sample(self, batch_size: int, generator: torch.Generator | None = None,
               device: torch.device | str | None = None) -> dict[str, Tensor]:
        if self.max_shift is None:
            s = rng.randint(0, _ANY, (batch_size, 2), generator=generator, device=device)
        else:
            s = rng.randint(-self.max_shift, self.max_shift + 1, (batch_size, 2), generator=generator, device=device)
        return {"shift": s}

    def transform(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        return _roll(x, per_sample(get_param(params, "shift", "Shift"), x, "shift", "Shift"))

    def inverse(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        return _roll(x, -per_sample(get_param(params, "shift", "Shift"), x, "shift", "Shift"))

    def elements(self, img_size: tuple[int, int] | None = None) -> list[dict[str, Tensor]]:
        if img_size is None:
            raise ValueError("Shift.elements needs img_size=(H, W): the group has H*W elements")
        h, w = img_size
        if self.max_shift is not None and (2 * self.max_shift + 1 < h or 2 * self.max_shift + 1 < w):
            raise ValueError(f"Shift(max_shift={self.max_shift}) does not cover the whole group of {h}x{w} shifts")
        return [{"shift": torch.tensor([[a, b]])} for a in range(h) for b in range(w)]

    def extra_repr(self) -> str:
        return f"max_shift={self.max_shift}"


def _roll(x: Tensor, shift: Tensor) -> Tensor:
    """Per-sample ``torch.roll(x[b], shift[b], dims=(-2, -1))`` with a single gather."""
    _check_image(x, "Shift")
    b, c, h, w = x.shape
    if shift.shape[-1] != 2 or shift.ndim != 2:
        raise ValueError(f"Shift: parameter 'shift' must have shape (B, 2), got {tuple(shift.shape)}")
    shift = shift.long()
    if shift.shape[0] == 1:  # shared: a plain roll
        return torch.roll(x, (int(shift[0, 0]) % h, int(shift[0, 1]) % w), dims=(-2, -1))
    rows = (torch.arange(h, device=x.device).view(1, h, 1) - shift[:, 0].view(-1, 1, 1)) % h
    cols = (torch.arange(w, device=x.device).view(1, 1, w) - shift[:, 1].view(-1, 1, 1)) % w
    index = (rows * w + cols).view(b, 1, h * w).expand(b, c, h * w)
    return x.reshape(b, c, h * w).gather(2, index).view(b, c, h, w)
