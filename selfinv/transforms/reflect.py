"""Reflections (flips) of the image axes.

Flipping a subset of ``dims`` gives the group ``(Z/2)^len(dims)`` (order 2 for
one axis, 4 for both); every element is a pixel permutation, orthogonal, and
its own inverse.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

from selfinv.transforms.base import Transform, _check_image, get_param, per_sample
from selfinv.utils import rng


class Reflect(Transform):
    """Random flips, each axis of ``dims`` flipped with probability 1/2, independently per sample.

    Parameters: ``flip`` ``(B, len(dims))`` booleans.

    Args:
        dims: image axes that may be flipped, among ``-2`` (rows) and ``-1`` (columns).
    """

    def __init__(self, dims: tuple[int, ...] = (-1,)):
        super().__init__()
        dims = tuple(int(d) for d in dims)
        if not dims or any(d not in (-1, -2) for d in dims) or len(set(dims)) != len(dims):
            raise ValueError(f"dims must be distinct values among (-2, -1), got {dims}")
        self.dims = dims

    def sample(self, batch_size: int, generator: torch.Generator | None = None,
               device: torch.device | str | None = None) -> dict[str, Tensor]:
        return {"flip": rng.rand((batch_size, len(self.dims)), generator=generator, device=device) < 0.5}

    def transform(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        _check_image(x, "Reflect")
        flip = per_sample(get_param(params, "flip", "Reflect"), x, "flip", "Reflect")
        if flip.ndim != 2 or flip.shape[1] != len(self.dims):
            raise ValueError(f"Reflect: parameter 'flip' must have shape (B, {len(self.dims)}), "
                             f"got {tuple(flip.shape)}")
        flip = flip.bool()
        for j, d in enumerate(self.dims):
            f = flip[:, j]
            if f.shape[0] == 1:  # shared by the batch
                x = x.flip(d) if bool(f) else x
            else:
                x = torch.where(f.view(-1, 1, 1, 1), x.flip(d), x)
        return x

    def inverse(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        return self.transform(x, params)  # every element is an involution

    def elements(self, img_size: tuple[int, int] | None = None) -> list[dict[str, Tensor]]:
        return [{"flip": torch.tensor([bits], dtype=torch.bool)}
                for bits in itertools.product((False, True), repeat=len(self.dims))]

    def extra_repr(self) -> str:
        return f"dims={self.dims}"
