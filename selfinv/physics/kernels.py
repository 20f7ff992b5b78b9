"""Convolution kernels on the DFT grid: one helper for every circular convolution in selfinv.

A ``(kh, kw)`` kernel centred at ``(kh // 2, kw // 2)`` acts on an ``H × W`` image by
circular convolution as the pointwise product of DFTs with its *centred padding*: the
kernel zero-padded to ``H × W`` and rolled so that its centre sits at index ``(0, 0)``.
Blur, the anti-aliasing filter of downsampling and coloured noise all use it.

Example::

    >>> import torch
    >>> centred_padding(torch.tensor([[0., 1., 0.]]), (1, 4))
    tensor([[1., 0., 0., 0.]])
"""

from __future__ import annotations

import torch
from torch import Tensor


def centred_padding(kernel: Tensor, size: tuple[int, int]) -> Tensor:
    """``kernel`` (``(..., kh, kw)``) zero-padded to ``size = (H, W)`` with its centre moved to ``(0, 0)``."""
    kh, kw = kernel.shape[-2:]
    H, W = int(size[0]), int(size[1])
    if kh > H or kw > W:
        raise ValueError(f"kernel {kh}x{kw} is larger than the image {H}x{W}")
    pad = kernel.new_zeros(kernel.shape[:-2] + (H, W))
    pad[..., :kh, :kw] = kernel
    return torch.roll(pad, shifts=(-(kh // 2), -(kw // 2)), dims=(-2, -1))
