"""U-Net backbone: an encoder/decoder with skip connections.

Ronneberger, Fischer & Brox (2015), "U-Net: Convolutional networks for
biomedical image segmentation". Each scale applies two 3x3 convolutions
(+ batch norm) + ReLU; the encoder halves the resolution by 2x2 max pooling and
doubles the channels, the decoder upsamples (nearest, x2) + 3x3 convolution,
concatenates the skip connection and applies two convolutions again. With
``residual=True`` the network learns a correction, ``x + net(x)``.

Any ``H, W`` is accepted: the input is padded (reflect, or replicate when the
image is too small to reflect) up to a multiple of ``2**(scales-1)`` and the
output is cropped back.

``UNet(1, 1, scales=3, base_channels=64)`` (channels 64/128/256, batch norm,
biases) has 2,069,441 parameters, the size of the usual reference U-Net used in
self-supervised imaging benchmarks.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfinv.models.dtype import keeps_input_dtype


def _conv_block(cin: int, cout: int, batch_norm: bool, bias: bool) -> nn.Sequential:
    """Two (3x3 conv [+ BN] + ReLU) layers."""
    layers: list[nn.Module] = []
    for c_in in (cin, cout):
        layers.append(nn.Conv2d(c_in, cout, 3, padding=1, bias=bias))
        if batch_norm:
            layers.append(nn.BatchNorm2d(cout))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _up_block(cin: int, cout: int, batch_norm: bool, bias: bool, upsample: str = "nearest") -> nn.Sequential:
    """Nearest x2 upsampling + 3x3 conv [+ BN] + ReLU, or a (linear) 2x2 stride-2 transposed conv."""
    if upsample == "transposed":
        return nn.Sequential(nn.ConvTranspose2d(cin, cout, 2, stride=2, bias=bias))
    layers: list[nn.Module] = [nn.Upsample(scale_factor=2, mode="nearest"),
                               nn.Conv2d(cin, cout, 3, padding=1, bias=bias)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def pad_to_multiple(x: Tensor, multiple: int) -> tuple[Tensor, tuple[int, int]]:
    """Pad ``x`` (B, C, H, W) at the bottom/right to multiples of ``multiple``.

    Reflect padding when possible (pad < size), replicate otherwise. Returns the
    padded tensor and the original ``(H, W)`` for cropping back. No copy when
    nothing needs padding.
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x, (h, w)
    mode = "reflect" if (ph < h and pw < w) else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode), (h, w)


class UNet(nn.Module):
    """U-Net ``x -> x_hat`` for images ``(B, in_channels, H, W)`` of any size.

    Args:
        in_channels, out_channels: image channels (2 for complex MRI as real/imag).
        scales: number of resolutions (``scales - 1`` poolings), >= 1.
        base_channels: channels at the finest scale; doubled at each coarser one.
        batch_norm: batch normalisation after each convolution.
        residual: return ``x + net(x)`` (requires ``in_channels == out_channels``).
        bias: biases in the convolutions.
        unshuffle: run the whole U-Net at ``1/unshuffle`` resolution on the ``unshuffle²`` polyphase
            components of the image (``pixel_unshuffle`` in, ``pixel_shuffle`` out; Shi et al. 2016), as
            FFDNet does (Zhang, Zuo & Zhang 2018): a quarter of the full-resolution cost at 2.
        upsample: ``"nearest"`` (nearest x2 + 3x3 convolution) or ``"transposed"`` (2x2 stride-2
            transposed convolution, cheaper).
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, scales: int = 3,
                 base_channels: int = 64, batch_norm: bool = True, residual: bool = True,
                 bias: bool = True, unshuffle: int = 1, upsample: Literal["nearest", "transposed"] = "nearest"):
        super().__init__()
        if scales < 1:
            raise ValueError(f"UNet needs scales >= 1, got {scales}")
        if unshuffle < 1:
            raise ValueError(f"UNet needs unshuffle >= 1, got {unshuffle}")
        if upsample not in ("nearest", "transposed"):
            raise ValueError(f"UNet upsample must be 'nearest' or 'transposed', got {upsample!r}")
        if residual and in_channels != out_channels:
            raise ValueError(
                f"UNet(residual=True) needs in_channels == out_channels, got {in_channels} and {out_channels}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.scales, self.base_channels = scales, base_channels
        self.batch_norm, self.residual, self.bias = batch_norm, residual, bias
        self.unshuffle, self.upsample = int(unshuffle), upsample
        u2 = self.unshuffle**2
        chans = [base_channels * 2**k for k in range(scales)]
        self.encoders = nn.ModuleList(_conv_block(cin, cout, batch_norm, bias)
                                      for cin, cout in zip([in_channels * u2] + chans[:-1], chans, strict=True))
        self.pool = nn.MaxPool2d(2)
        # decoder from coarse to fine: upsample chans[k+1] -> chans[k], concat skip, conv 2*chans[k] -> chans[k]
        self.ups = nn.ModuleList(_up_block(chans[k + 1], chans[k], batch_norm, bias, upsample)
                                 for k in reversed(range(scales - 1)))
        self.decoders = nn.ModuleList(_conv_block(2 * chans[k], chans[k], batch_norm, bias)
                                      for k in reversed(range(scales - 1)))
        self.head = nn.Conv2d(chans[0], out_channels * u2, 1, bias=bias)

    @keeps_input_dtype
    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"UNet expects (B, {self.in_channels}, H, W), got shape {tuple(x.shape)}")
        z, (h, w) = pad_to_multiple(x, self.unshuffle * 2 ** (self.scales - 1))
        if self.unshuffle > 1:
            z = F.pixel_unshuffle(z, self.unshuffle)
        skips = []
        for k, enc in enumerate(self.encoders):
            if k > 0:
                z = self.pool(z)
            z = enc(z)
            skips.append(z)
        skips.pop()  # the coarsest features are z itself
        for up, dec in zip(self.ups, self.decoders, strict=True):
            z = dec(torch.cat((skips.pop(), up(z)), dim=1))
        z = self.head(z)
        if self.unshuffle > 1:
            z = F.pixel_shuffle(z, self.unshuffle)
        if z.shape[-2:] != (h, w):
            z = z[..., :h, :w]
        return x + z if self.residual else z

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, scales={self.scales}, "
                f"base_channels={self.base_channels}, batch_norm={self.batch_norm}, "
                f"residual={self.residual}, bias={self.bias}, unshuffle={self.unshuffle}, "
                f"upsample={self.upsample!r}")

