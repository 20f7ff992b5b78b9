"""Tiled prediction: apply a network to images larger than memory allows.

``tiled_apply(fn, y, tile, overlap)`` cuts ``y`` into ``tile x tile`` tiles that
overlap by at least ``overlap`` pixels (the last tile of a row/column is moved
back to end at the image border), applies ``fn`` to a few tiles at a time and
blends the outputs with separable window weights ``w``:

    out(p) = sum_t w_t(p) fn(y_t)(p) / sum_t w_t(p).

Along each axis the window is 1 in the tile interior and at image borders; on a
side shared with another tile it is 0 on the first ``margin`` pixels, then a
``sin^2`` ramp up to 1 over the next ``overlap - 2 margin`` pixels. Two tiles
overlapping by exactly ``overlap`` thus have weights summing to one (a partition
of unity), and a tile never contributes within ``margin`` pixels of a cut.
Consequences:

* for a pointwise ``fn``, ``out == fn(y)`` (up to float rounding);
* for a convolutional network whose receptive field radius is ``<= margin``
  (default ``overlap // 4``), ``out == fn(y)`` too; with a larger (but
  ``< overlap``) receptive field the error is confined to the blended band and
  small, the ``sin^2`` ramp avoids visible seams.

Only meaningful when the physics acts locally (denoising, inpainting, small
blurs): MRI, tomography or any operator mixing the whole image cannot be tiled,
because a tile of ``y`` does not determine the tile of ``x``. For operators with
per-pixel parameters (an inpainting mask), pass them in ``spatial`` so they are
cropped with ``y``::

    tiled_apply(lambda y, mask: model(y, physics.with_params(mask=mask)), y,
                spatial={"mask": physics.mask})
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, Mapping

import torch
from torch import Tensor


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start indices of the tiles along one axis (one tile if ``length <= tile``)."""
    if length <= tile:
        return [0]
    step = tile - overlap
    return list(range(0, length - tile, step)) + [length - tile]


def blend_ramp(overlap: int, margin: int, *, dtype=torch.float32, device=None) -> Tensor:
    """Rising edge of the window, length ``overlap``: ``margin`` zeros then a ``sin^2`` ramp to 1."""
    width = overlap - 2 * margin
    i = torch.arange(overlap, dtype=torch.float64, device=device)
    t = ((i - margin + 0.5) / width).clamp(0.0, 1.0) if width > 0 else (i >= margin).double()
    return torch.sin(0.5 * math.pi * t).pow(2).to(dtype)


def window_1d(start: int, length: int, total: int, overlap: int, margin: int, *,
              dtype=torch.float32, device=None) -> Tensor:
    """Weights of one tile along one axis; ramps only on sides shared with another tile."""
    w = torch.ones(length, dtype=dtype, device=device)
    if length == total or overlap == 0:
        return w
    ramp = blend_ramp(overlap, margin, dtype=dtype, device=device)
    if start > 0:
        w[:overlap] = torch.minimum(w[:overlap], ramp)
    if start + length < total:
        w[-overlap:] = torch.minimum(w[-overlap:], ramp.flip(0))
    return w


def _pair(v: int | tuple[int, int], name: str) -> tuple[int, int]:
    t = (int(v), int(v)) if isinstance(v, int) else tuple(int(u) for u in v)
    if len(t) != 2:
        raise ValueError(f"{name} must be an int or a pair (h, w), got {v}")
    return t  # type: ignore[return-value]


def tiled_apply(fn: Callable[..., Tensor], y: Tensor, tile: int | tuple[int, int] = 128,
                overlap: int | tuple[int, int] = 32, *, margin: int | tuple[int, int] | None = None,
                batch_size: int = 4, spatial: Mapping[str, Tensor] | None = None,
                no_grad: bool = True, progress: Callable[[int, int], None] | None = None) -> Tensor:
    """Apply ``fn`` tile by tile to ``y`` ``(B, C, H, W)`` and blend (see the module doc).

    Args:
        fn: maps ``(n, C, th, tw)`` tiles (and the ``spatial`` tiles as keyword
            arguments) to ``(n, C_out, th, tw)``.
        tile: tile size; images smaller than a tile along an axis use one tile
            of the image's size there.
        overlap: minimal overlap between neighbouring tiles (``< tile``).
        margin: pixels next to a cut that get weight 0 (``< overlap / 2``);
            default ``overlap // 4``.
        batch_size: tile positions processed per call of ``fn`` (memory bound:
            ``batch_size * B`` tiles at a time).
        spatial: extra ``(B or 1, ..., H, W)`` tensors cropped like ``y``.
        no_grad: run under ``torch.no_grad()`` (prediction).
        progress: called as ``progress(done, total)`` after each group of tiles.
    """
    if not isinstance(y, Tensor) or y.ndim != 4:
        raise ValueError(f"tiled_apply expects y of shape (B, C, H, W), got "
                         f"{tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__}")
    B, _, H, W = y.shape
    th, tw = _pair(tile, "tile")
    oh, ow = _pair(overlap, "overlap")
    mh, mw = _pair(margin if margin is not None else (oh // 4, ow // 4), "margin")
    for t, o, m, ax in ((th, oh, mh, "height"), (tw, ow, mw, "width")):
        if t < 1 or not 0 <= o < t:
            raise ValueError(f"tile {ax}: need tile >= 1 and 0 <= overlap < tile, got tile={t}, overlap={o}")
        if o > 0 and not 0 <= 2 * m < o:
            raise ValueError(f"tile {ax}: need 0 <= margin < overlap / 2, got margin={m}, overlap={o}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    spatial = dict(spatial or {})
    for k, v in spatial.items():
        if v.ndim < 3 or tuple(v.shape[-2:]) != (H, W) or v.shape[0] not in (1, B):
            raise ValueError(f"spatial tensor '{k}' must have shape (B={B} or 1, ..., {H}, {W}), "
                             f"got {tuple(v.shape)}")
    th, tw = min(th, H), min(tw, W)
    positions = list(itertools.product(tile_starts(H, th, oh), tile_starts(W, tw, ow)))

    ctx = torch.no_grad() if no_grad else torch.enable_grad()
    with ctx:
        out = None
        wsum = torch.zeros(H, W, dtype=torch.float64, device=y.device)
        for k in range(0, len(positions), batch_size):
            chunk = positions[k:k + batch_size]
            tiles = torch.cat([y[..., h:h + th, w:w + tw] for h, w in chunk])
            extra = {name: torch.cat([v.expand(B, *v.shape[1:])[..., h:h + th, w:w + tw] for h, w in chunk])
                     for name, v in spatial.items()}
            res = fn(tiles, **extra)
            if res.ndim != 4 or res.shape[0] != len(chunk) * B or tuple(res.shape[-2:]) != (th, tw):
                raise ValueError(f"fn must return ({len(chunk) * B}, C_out, {th}, {tw}) for tiles of shape "
                                 f"{tuple(tiles.shape)}, got {tuple(res.shape)}")
            if out is None:
                out = res.new_zeros((B, res.shape[1], H, W))
            for j, (h, w) in enumerate(chunk):
                wh = window_1d(h, th, H, oh, mh, dtype=torch.float64, device=y.device)
                ww = window_1d(w, tw, W, ow, mw, dtype=torch.float64, device=y.device)
                w2 = wh[:, None] * ww[None, :]
                wsum[h:h + th, w:w + tw] += w2
                out[..., h:h + th, w:w + tw] += res[j * B:(j + 1) * B] * w2.to(res.dtype)
            if progress is not None:
                progress(min(k + batch_size, len(positions)), len(positions))
        assert out is not None
        if bool((wsum <= 0).any()):  # cannot happen with margin < overlap / 2; guard anyway
            raise RuntimeError("tiled_apply: some pixels got no weight; increase overlap or decrease margin")
        return out / wsum.to(out.dtype)
