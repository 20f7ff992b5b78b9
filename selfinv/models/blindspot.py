"""Blind-spot network: output pixel ``i`` never depends on input pixel ``i``.

Laine, Karras, Lehtinen & Aila (2019), "High-quality self-supervised deep
image denoising": a trunk of *upward-only* convolutions (each ``k×k``
convolution is padded with ``k-1`` rows on top and none below, so output row
``r`` sees input rows ``<= r`` only), followed by a one-row downward shift (row
``r`` now sees rows ``< r`` only: a strict upper half-plane). The trunk is
applied, with shared weights, to the four 90° rotations of the input; each
result is rotated back, so the four half-planes (above, left, below, right of
the pixel) cover every pixel except the centre. The four feature maps are
concatenated and mixed by ``1×1`` convolutions, which cannot re-introduce the
centre. Hence ``∂f_i/∂y_i = 0`` exactly (for every channel pair), for any ``H, W``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfinv.models.dtype import keeps_input_dtype


class UpwardConv2d(nn.Conv2d):
    """``k×k`` convolution whose receptive field is the rows at or above the output row (Laine et al. 2019)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1,
                 bias: bool = True):
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        super().__init__(in_channels, out_channels, kernel_size, dilation=dilation, padding=0, bias=bias)
        self.reach = dilation * (kernel_size - 1)

    def forward(self, x: Tensor) -> Tensor:
        r = self.reach
        # left, right, top, bottom: horizontally centred, vertically only upward
        return super().forward(F.pad(x, (r // 2, r // 2, r, 0)))


class BlindSpotNet(nn.Module):
    """Blind-spot backbone ``x -> x_hat`` (four rotated upward-only branches, shared weights).

    Args:
        in_channels, out_channels: image channels.
        channels: feature channels of the trunk.
        depth: number of upward convolutions in the trunk (receptive field ``depth`` rows
            above the pixel, before dilation).
        dilations: optional per-layer dilations (length ``depth``) to grow the receptive field.
        head_depth: number of ``1×1`` mixing layers after the branches are merged.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, channels: int = 32, depth: int = 5,
                 dilations: list[int] | None = None, head_depth: int = 2):
        super().__init__()
        if depth < 1 or head_depth < 1:
            raise ValueError(f"depth and head_depth must be >= 1, got {depth}, {head_depth}")
        dilations = [1] * depth if dilations is None else list(dilations)
        if len(dilations) != depth:
            raise ValueError(f"dilations must have {depth} entries, got {len(dilations)}")
        self.in_channels, self.out_channels = in_channels, out_channels
        layers: list[nn.Module] = []
        c = in_channels
        for d in dilations:
            layers += [UpwardConv2d(c, channels, 3, dilation=d), nn.LeakyReLU(0.1)]
            c = channels
        self.trunk = nn.Sequential(*layers)
        head: list[nn.Module] = []
        c = 4 * channels
        for _ in range(head_depth - 1):
            head += [nn.Conv2d(c, channels, 1), nn.LeakyReLU(0.1)]
            c = channels
        head.append(nn.Conv2d(c, out_channels, 1))
        self.head = nn.Sequential(*head)

    def _branch(self, x: Tensor, k: int) -> Tensor:
        feat = self.trunk(torch.rot90(x, k, dims=(-2, -1)))
        feat = F.pad(feat, (0, 0, 1, 0))[..., :-1, :]  # shift down one row: strictly above
        return torch.rot90(feat, -k, dims=(-2, -1))

    @keeps_input_dtype
    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"BlindSpotNet expects (B, {self.in_channels}, H, W), got shape {tuple(x.shape)}")
        return self.head(torch.cat([self._branch(x, k) for k in range(4)], dim=1))
