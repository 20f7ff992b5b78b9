"""Convolutional autoencoder with a strong bottleneck.

Encoder: a ``3×3`` convolution then ``levels`` stride-2 convolutions (each
halves ``H`` and ``W``), then a ``1×1`` projection to ``latent_channels``;
decoder mirrors it with nearest-neighbour upsampling + ``3×3`` convolutions.
The code has ``latent_channels · H W / 4^levels`` entries, i.e. a fraction
``bottleneck_ratio = latent_channels / (in_channels · 4^levels)`` of the input:
the network cannot reproduce the (high-dimensional) noise, only the
low-dimensional signal (tutorial Part 2, "Autoencoders"). Any ``H, W``: the
input is reflection-padded to a multiple of ``2^levels`` and the output cropped.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from selfinv.models.dtype import keeps_input_dtype


class BottleneckAutoencoder(nn.Module):
    """Conv encoder → ``latent_channels`` code at ``1/2^levels`` resolution → conv decoder."""

    def __init__(self, in_channels: int = 1, out_channels: int = 1, channels: int = 32, levels: int = 3,
                 latent_channels: int = 4):
        super().__init__()
        if levels < 1 or latent_channels < 1:
            raise ValueError(f"levels and latent_channels must be >= 1, got {levels}, {latent_channels}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.levels, self.latent_channels = levels, latent_channels
        enc: list[nn.Module] = [nn.Conv2d(in_channels, channels, 3, padding=1), nn.LeakyReLU(0.1)]
        for _ in range(levels):
            enc += [nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.LeakyReLU(0.1)]
        enc.append(nn.Conv2d(channels, latent_channels, 1))
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv2d(latent_channels, channels, 1), nn.LeakyReLU(0.1)]
        for _ in range(levels):
            dec += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(channels, channels, 3, padding=1),
                    nn.LeakyReLU(0.1)]
        dec.append(nn.Conv2d(channels, out_channels, 3, padding=1))
        self.decoder = nn.Sequential(*dec)

    @property
    def bottleneck_ratio(self) -> float:
        """Code entries / input entries."""
        return self.latent_channels / (self.in_channels * 4**self.levels)

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    @keeps_input_dtype
    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"BottleneckAutoencoder expects (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        H, W = x.shape[-2:]
        s = 2**self.levels
        ph, pw = (-H) % s, (-W) % s
        if ph or pw:
            mode = "reflect" if ph < H and pw < W else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        return self.decoder(self.encoder(x))[..., :H, :W]

    def extra_repr(self) -> str:
        return f"levels={self.levels}, latent_channels={self.latent_channels}, ratio={self.bottleneck_ratio:.4f}"
