"""Blind-spot network and bottleneck autoencoder: structural properties checked by autograd."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from selfinv.losses import AutoencoderLoss, BlindSpotLoss
from selfinv.models import BlindSpotNet, BottleneckAutoencoder
from selfinv.physics import Denoising, GaussianNoise

DT = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("channels, size", [(1, (7, 9)), (2, (6, 5))])
def test_blindspot_jacobian_diagonal_is_exactly_zero(channels, size):
    torch.manual_seed(0)
    net = BlindSpotNet(channels, channels, channels=8, depth=3, dilations=[1, 2, 1]).to(DT)
    H, W = size
    x = torch.rand(1, channels, H, W, dtype=DT)
    J = torch.autograd.functional.jacobian(net, x).reshape(channels, H * W, channels, H * W)
    # output pixel i vs input pixel i, every channel pair: exactly zero (not just small)
    diag = torch.diagonal(J, dim1=1, dim2=3)  # (C_out, C_in, H*W)
    assert torch.count_nonzero(diag) == 0
    # ... while the four direct neighbours are seen (the net is not trivially blind)
    Jpix = J.abs().sum(dim=(0, 2)).reshape(H, W, H, W)
    i, j = H // 2, W // 2
    for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        assert Jpix[i, j, i + di, j + dj] > 0
    assert torch.all(Jpix.reshape(H * W, H * W).sum(1) > 0)


def test_blindspot_net_trains_with_blindspot_loss():
    physics = Denoising(GaussianNoise(0.1))
    net = BlindSpotNet(1, 1, channels=4, depth=2)

    class Rec(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, y, physics):
            return self.net(y)

    y = physics(torch.rand(2, 1, 8, 10), generator=torch.Generator().manual_seed(0))
    value = BlindSpotLoss()(y, physics, Rec())
    value.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    with pytest.raises(ValueError, match="expects"):
        net(torch.zeros(1, 3, 8, 8))


def test_autoencoder_bottleneck_limits_the_jacobian_rank():
    torch.manual_seed(0)
    ae = BottleneckAutoencoder(1, 1, channels=8, levels=2, latent_channels=2).to(DT)
    x = torch.rand(1, 1, 16, 16, dtype=DT)
    J = torch.autograd.functional.jacobian(ae, x).reshape(256, 256)
    code = ae.encode(x).numel()
    assert code == 2 * 4 * 4 and ae.bottleneck_ratio == pytest.approx(code / 256)
    # f = decoder(encoder(x)) factors through the code: rank(J) <= code size (= 32 < 256)
    assert int(torch.linalg.matrix_rank(J)) <= code


@pytest.mark.parametrize("size", [(16, 16), (13, 10), (5, 7)])
def test_autoencoder_accepts_any_size(size):
    ae = BottleneckAutoencoder(1, 1, channels=4, levels=3, latent_channels=2)
    y = torch.rand(2, 1, *size)
    assert ae(y).shape == y.shape

    class Rec(nn.Module):
        def forward(self, y, physics):
            return ae(y)

    AutoencoderLoss()(y, Denoising(), Rec()).backward()
    assert ae.encoder[0].weight.grad.abs().sum() > 0
