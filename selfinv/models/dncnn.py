"""DnCNN backbone: a plain stack of 3x3 convolutions.

Zhang, Zuo, Chen, Meng & Zhang (2017), "Beyond a Gaussian denoiser: residual
learning of deep CNN for image denoising". Layers: conv + ReLU, then
``depth - 2`` times conv [+ BN] + ReLU, then conv. With ``residual=True`` the
stack predicts a correction: ``x_hat = x + net(x)`` (the paper's residual
learning, with the sign absorbed into the last layer).

``batch_norm`` defaults to False: self-supervised losses often evaluate the
model on differently distributed inputs in one step (``y``, ``A T x``...), and
batch statistics would mix them; set it to True for the paper's network.
Fully convolutional: any ``H, W``.
"""

from __future__ import annotations

from torch import Tensor, nn

from selfinv.models.dtype import keeps_input_dtype


class DnCNN(nn.Module):
    """DnCNN ``x -> x_hat`` for images ``(B, in_channels, H, W)``.

    Args:
        in_channels, out_channels: image channels.
        depth: number of convolution layers (>= 2; 17 in the paper).
        channels: feature channels.
        residual: return ``x + net(x)`` (requires ``in_channels == out_channels``).
        batch_norm: batch normalisation in the middle layers.
        bias: biases in the convolutions.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, depth: int = 17, channels: int = 64,
                 residual: bool = True, batch_norm: bool = False, bias: bool = True):
        super().__init__()
        if depth < 2:
            raise ValueError(f"DnCNN needs depth >= 2, got {depth}")
        if residual and in_channels != out_channels:
            raise ValueError(
                f"DnCNN(residual=True) needs in_channels == out_channels, got {in_channels} and {out_channels}")
        self.in_channels, self.out_channels, self.depth, self.channels = in_channels, out_channels, depth, channels
        self.residual, self.batch_norm = residual, batch_norm
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 3, padding=1, bias=bias), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers.append(nn.Conv2d(channels, channels, 3, padding=1, bias=bias and not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(channels))
            layers.append(nn.ReLU(inplace=True))
        layers.append(nn.Conv2d(channels, out_channels, 3, padding=1, bias=bias))
        self.net = nn.Sequential(*layers)

    @keeps_input_dtype
    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"DnCNN expects (B, {self.in_channels}, H, W), got shape {tuple(x.shape)}")
        z = self.net(x)
        return x + z if self.residual else z

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, depth={self.depth}, "
                f"channels={self.channels}, residual={self.residual}, batch_norm={self.batch_norm}")
