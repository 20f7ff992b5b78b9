"""Training patches and fixed test crops, deterministic given a seed.

Images are ``(C, H, W)`` tensors (a list, possibly of different sizes) or one
``(N, C, H, W)`` tensor. All functions return ``(n, C, size, size)`` tensors.

* ``random_patches``: ``n`` patches drawn uniformly over *all* possible patch
  positions of all images (an image with more positions is drawn more often).
* ``grid_patches``: every patch at top-left corners ``0, stride, 2 stride, ...``
  that fits inside the image (the remainder at the bottom/right is not covered),
  as ``Tensor.unfold``.
* ``fixed_crops``: non-overlapping crops (``stride = size``), e.g. the 64 test
  crops 64 x 64 of the 512 x 512 ``camera`` image of the reference benchmark.
* ``PatchDataset``: a ``torch.utils.data.Dataset`` over a fixed set of patch
  positions (grid or seeded random), cropped on access.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

from selfinv.utils import rng


def _as_image_list(images: Tensor | Sequence[Tensor], who: str) -> list[Tensor]:
    if isinstance(images, Tensor):
        if images.ndim == 3:
            return [images]
        if images.ndim != 4:
            raise ValueError(f"{who} expects (N, C, H, W) or (C, H, W) images, got shape {tuple(images.shape)}")
        return list(images.unbind(0))
    out = list(images)
    if not out:
        raise ValueError(f"{who} got no images")
    for i, im in enumerate(out):
        if not isinstance(im, Tensor) or im.ndim != 3:
            shape = tuple(im.shape) if isinstance(im, Tensor) else type(im).__name__
            raise ValueError(f"{who} expects every image to be a (C, H, W) tensor; image {i} is {shape}")
    if len({im.shape[0] for im in out}) != 1:
        raise ValueError(f"{who}: images have different channel counts {[im.shape[0] for im in out]}")
    return out


def _check_size(size: int, images: list[Tensor], who: str) -> int:
    size = int(size)
    if size < 1:
        raise ValueError(f"{who}: patch size must be >= 1, got {size}")
    too_small = [i for i, im in enumerate(images) if min(im.shape[-2:]) < size]
    if too_small:
        shapes = [tuple(images[i].shape) for i in too_small[:5]]
        raise ValueError(f"{who}: patch size {size} is larger than image(s) {too_small[:5]} of shape {shapes}")
    return size


def grid_positions(height: int, width: int, size: int, stride: int) -> list[tuple[int, int]]:
    """Top-left corners ``(top, left)`` of the grid patches, row-major."""
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    return [(t, l) for t in range(0, height - size + 1, stride) for l in range(0, width - size + 1, stride)]


def random_positions(images: Sequence[Tensor], size: int, n: int,
                     generator: torch.Generator | None = None) -> Tensor:
    """``(n, 3)`` int64 rows ``(image index, top, left)``, uniform over all patch positions."""
    counts = torch.tensor([(im.shape[-2] - size + 1) * (im.shape[-1] - size + 1) for im in images],
                          dtype=torch.float64)
    cdf = torch.cumsum(counts, 0) / counts.sum()
    u = rng.rand((n,), generator=generator, dtype=torch.float64)
    idx = torch.searchsorted(cdf, u, right=True).clamp_max(len(images) - 1)
    hmax = torch.tensor([im.shape[-2] - size + 1 for im in images])[idx]
    wmax = torch.tensor([im.shape[-1] - size + 1 for im in images])[idx]
    u2 = rng.rand((2, n), generator=generator, dtype=torch.float64)
    top = (u2[0] * hmax).floor().long().minimum(hmax - 1)
    left = (u2[1] * wmax).floor().long().minimum(wmax - 1)
    return torch.stack([idx, top, left], 1)


def _crop(images: Sequence[Tensor], positions: Tensor, size: int) -> Tensor:
    return torch.stack([images[int(i)][:, int(t):int(t) + size, int(l):int(l) + size]
                        for i, t, l in positions.tolist()]) if len(positions) else \
        images[0].new_zeros((0, images[0].shape[0], size, size))


def random_patches(images: Tensor | Sequence[Tensor], size: int, n: int,
                   generator: torch.Generator | None = None) -> Tensor:
    """``n`` random ``size x size`` patches, uniform over all positions of all images.

    Draws use ``generator`` (CPU), so a seeded generator gives the same patches.
    """
    ims = _as_image_list(images, "random_patches")
    size = _check_size(size, ims, "random_patches")
    return _crop(ims, random_positions(ims, size, int(n), generator), size)


def grid_patches(image: Tensor, size: int, stride: int) -> Tensor:
    """All ``size x size`` patches of one image (``(C, H, W)`` or ``(N, C, H, W)``) on a
    grid of step ``stride``; the bottom/right remainder that does not fit is dropped."""
    ims = _as_image_list(image, "grid_patches")
    size = _check_size(size, ims, "grid_patches")
    stride = int(stride)
    pos = [(i, t, l) for i, im in enumerate(ims) for t, l in grid_positions(*im.shape[-2:], size, stride)]
    return _crop(ims, torch.tensor(pos, dtype=torch.long).reshape(-1, 3), size)


def fixed_crops(images: Tensor | Sequence[Tensor], size: int) -> Tensor:
    """Non-overlapping ``size x size`` crops of every image (row-major, image by image)."""
    ims = _as_image_list(images, "fixed_crops")
    return torch.cat([grid_patches(im, size, size) for im in ims])


class PatchDataset(Dataset):
    """Patches of a fixed list of images, cropped on access (no copy of all patches).

    Give exactly one of ``n_patches`` (that many seeded random positions, drawn
    once at construction with ``torch.Generator().manual_seed(seed)``) or
    ``stride`` (every grid position). Items are ``(C, patch_size, patch_size)``.
    ``positions`` holds the ``(image index, top, left)`` rows.
    """

    def __init__(self, images: Tensor | Sequence[Tensor], patch_size: int, n_patches: int | None = None,
                 stride: int | None = None, seed: int = 0):
        super().__init__()
        if (n_patches is None) == (stride is None):
            raise ValueError(f"PatchDataset needs exactly one of n_patches or stride, got "
                             f"n_patches={n_patches}, stride={stride}")
        self.images = _as_image_list(images, "PatchDataset")
        self.patch_size = _check_size(patch_size, self.images, "PatchDataset")
        self.seed = int(seed)
        if n_patches is not None:
            g = torch.Generator().manual_seed(self.seed)
            self.positions = random_positions(self.images, self.patch_size, int(n_patches), g)
        else:
            pos = [(i, t, l) for i, im in enumerate(self.images)
                   for t, l in grid_positions(*im.shape[-2:], self.patch_size, int(stride))]
            self.positions = torch.tensor(pos, dtype=torch.long).reshape(-1, 3)
        self.n_patches, self.stride = n_patches, stride

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, index: int) -> Tensor:
        i, t, l = self.positions[index].tolist()
        p = self.patch_size
        return self.images[i][:, t:t + p, l:l + p]

    def tensor(self) -> Tensor:
        """All patches stacked, ``(len, C, p, p)``."""
        return _crop(self.images, self.positions, self.patch_size)

    def extra_repr(self) -> str:
        mode = f"n_patches={self.n_patches}, seed={self.seed}" if self.n_patches is not None \
            else f"stride={self.stride}"
        return f"images={len(self.images)}, patch_size={self.patch_size}, {mode}, len={len(self)}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"
