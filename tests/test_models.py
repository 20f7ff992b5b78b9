"""Tests of selfinv.models: backbones (UNet, DnCNN) and reconstructors (BackProjection, unrolled)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from selfinv.models import BackProjection, DnCNN, UNet, UnrolledProximalGradient
from selfinv.physics import Denoising, GaussianNoise, LinearPhysics, Physics


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# -- test-only physics ---------------------------------------------------------------
class RandomMask(LinearPhysics):
    """``A x = m ⊙ x`` with a per-sample Bernoulli(keep) mask (test-only stand-in for Inpainting)."""

    param_names = ("mask",)

    def __init__(self, mask: Tensor, keep: float = 0.5):
        super().__init__()
        self.keep = keep
        self._set_param("mask", mask)

    def sample_params(self, batch_size, generator=None, device=None):
        shape = (batch_size, 1) + tuple(self.mask.shape[-2:])
        return {"mask": (torch.rand(shape, generator=generator, device=device) < self.keep).float()}

    def A(self, x):
        return self.mask * x

    def A_adjoint(self, y):
        return self.mask * y

    def A_dagger(self, y):
        return self.mask * y


class DiagonalGain(LinearPhysics):
    """``A x = w ⊙ x`` with per-sample weights ``w`` (B, 1, H, W): non-binary, so steps matter."""

    param_names = ("weight",)

    def __init__(self, weight: Tensor):
        super().__init__()
        self._set_param("weight", weight)

    def A(self, x):
        return self.weight * x

    def A_adjoint(self, y):
        return self.weight * y

    def A_dagger(self, y):
        return y / self.weight


class Cube(Physics):
    """Non-linear ``A x = x^3`` with ``A_dagger y = cbrt(y)`` and no adjoint."""

    def A(self, x):
        return x**3

    def A_dagger(self, y):
        return torch.sign(y) * y.abs() ** (1 / 3)


# -- UNet ------------------------------------------------------------------------
def test_unet_reference_size():
    m = UNet(in_channels=1, out_channels=1, scales=3)
    n = _n_params(m)
    print(f"UNet(1, 1, scales=3, base_channels=64) parameters: {n:,}")
    # the reference U-Net of the benchmarks has ~2.07 M parameters (64/128/256 channels, BN, biases)
    assert n == 2_069_441


@pytest.mark.parametrize("size", [(17, 23), (1, 3)])
@pytest.mark.parametrize("scales", [1, 3, 4])
def test_unet_any_size(size, scales):
    m = UNet(2, 2, scales=scales, base_channels=4)
    x = torch.randn(2, 2, *size, generator=_gen(0))
    assert m(x).shape == x.shape


def test_unet_residual_and_channels():
    m = UNet(1, 1, scales=3, base_channels=4).eval()
    nn.init.zeros_(m.head.weight)
    nn.init.zeros_(m.head.bias)
    x = torch.randn(2, 1, 9, 11, generator=_gen(1))
    assert torch.equal(m(x), x)  # residual with a zero last layer: the identity
    m2 = UNet(2, 3, scales=2, base_channels=4, residual=False)
    assert m2(torch.randn(1, 2, 9, 11)).shape == (1, 3, 9, 11)
    with pytest.raises(ValueError, match="in_channels == out_channels"):
        UNet(2, 3, residual=True)
    with pytest.raises(ValueError, match=r"expects \(B, 1, H, W\)"):
        m(torch.randn(2, 3, 8, 8))


def test_unet_padding_is_cropped_back_consistently():
    """On an 8x8 image no padding is used; on 7x7 the first 7x7 pixels of a reflect-padded 8x8 run come back."""
    m = UNet(1, 1, scales=4, base_channels=4).eval()
    x = torch.randn(1, 1, 7, 7, generator=_gen(2))
    padded = torch.nn.functional.pad(x, (0, 1, 0, 1), mode="reflect")
    assert torch.allclose(m(x), m(padded)[..., :7, :7] - padded[..., :7, :7] + x, atol=1e-6)


def test_unet_gradients_reach_all_parameters():
    m = UNet(1, 1, scales=3, base_channels=4)
    m(torch.randn(2, 1, 10, 12, generator=_gen(3))).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())


# -- DnCNN -----------------------------------------------------------------------
@pytest.mark.parametrize("size", [(7, 9), (1, 1), (16, 5)])
def test_dncnn_shapes(size):
    m = DnCNN(2, 2, depth=4, channels=8)
    x = torch.randn(3, 2, *size, generator=_gen(0))
    assert m(x).shape == x.shape
    assert DnCNN(1, 3, depth=3, channels=8, residual=False)(torch.randn(1, 1, *size)).shape == (1, 3) + size
    convs = [l for l in DnCNN(depth=17).modules() if isinstance(l, nn.Conv2d)]
    assert len(convs) == 17


def test_dncnn_receptive_field_and_residual():
    """A depth-d stack of 3x3 convolutions sees exactly the (2d+1)x(2d+1) neighbourhood."""
    d = 5
    m = DnCNN(1, 1, depth=d, channels=8).double().eval()
    x = torch.randn(1, 1, 21, 21, generator=_gen(4), dtype=torch.float64)
    x2 = x.clone()
    x2[0, 0, 10, 10] += 1.0
    diff = (m(x2) - m(x)).abs()[0, 0]
    rows, cols = torch.meshgrid(torch.arange(21), torch.arange(21), indexing="ij")
    outside = torch.maximum((rows - 10).abs(), (cols - 10).abs()) > d
    assert diff[outside].max() == 0
    assert diff[~outside].max() > 0
    nn.init.zeros_(m.net[-1].weight)
    nn.init.zeros_(m.net[-1].bias)
    assert torch.equal(m(x), x)


# -- BackProjection ----------------------------------------------------------------
def test_backprojection_denoising_equals_backbone():
    backbone = DnCNN(1, 1, depth=3, channels=8)
    y = torch.randn(2, 1, 8, 8, generator=_gen(0))
    physics = Denoising(GaussianNoise(0.1))
    for init in ("dagger", "adjoint"):
        assert torch.equal(BackProjection(backbone, init=init)(y, physics), backbone(y))


def test_backprojection_uses_the_batch_operator():
    backbone = DnCNN(1, 1, depth=3, channels=8)
    w = 0.5 + torch.rand(3, 1, 6, 6, generator=_gen(1))
    physics = DiagonalGain(w)
    y = torch.randn(3, 1, 6, 6, generator=_gen(2))
    assert torch.allclose(BackProjection(backbone, "dagger")(y, physics), backbone(y / w))
    assert torch.allclose(BackProjection(backbone, "adjoint")(y, physics), backbone(w * y))


def test_backprojection_nonlinear_physics_and_errors():
    model = BackProjection(nn.Identity(), init="dagger")
    x = torch.randn(2, 1, 4, 4, generator=_gen(3), dtype=torch.float64)
    assert torch.allclose(model(Cube().A(x), Cube()), x)
    with pytest.raises(TypeError, match="A_adjoint"):
        BackProjection(nn.Identity(), init="adjoint")(x, Cube())
    with pytest.raises(ValueError, match="init must be one of"):
        BackProjection(nn.Identity(), init="pinv")
    with pytest.raises(ValueError, match="2 channel.*in_channels=1"):
        BackProjection(UNet(1, 1, base_channels=4))(torch.randn(1, 2, 8, 8), Denoising())


# -- unrolled ----------------------------------------------------------------------
def test_unrolled_identity_prior_is_gradient_descent():
    """With identity priors, x_{k+1} = x_k - tau_k Aᵀ(A x_k - y) exactly, per sample."""
    model = UnrolledProximalGradient(prior=nn.Identity(), n_iter=4, step_size=0.7, init="adjoint").double()
    w = 0.5 + torch.rand(3, 1, 5, 5, generator=_gen(0), dtype=torch.float64)
    physics = DiagonalGain(w)
    y = torch.randn(3, 1, 5, 5, generator=_gen(1), dtype=torch.float64)
    x = w * y
    for _ in range(4):
        x = x - 0.7 * w * (w * x - y)
    assert torch.allclose(model.step_sizes, torch.full((4,), 0.7, dtype=torch.float64))
    assert torch.allclose(model(y, physics), x, atol=1e-12)


def test_unrolled_gradients_reach_all_parameters_with_per_sample_physics():
    model = UnrolledProximalGradient(n_iter=3)  # default DnCNN(depth 5, 32 channels) priors
    assert len(model.priors) == 3 and model.priors[0] is not model.priors[1]
    physics = RandomMask(torch.ones(1, 1, 8, 8)).resample(4, generator=_gen(0))
    assert physics.mask.shape[0] == 4 and not torch.equal(physics.mask[0], physics.mask[1])
    y = physics(torch.rand(4, 1, 8, 8, generator=_gen(1)))
    out = model(y, physics)
    assert out.shape == y.shape
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing
    assert torch.all(model.step_sizes > 0)


def test_unrolled_batched_equals_per_sample():
    """Each sample only sees its own operator: batching with per-sample masks changes nothing."""
    torch.manual_seed(0)
    model = UnrolledProximalGradient(n_iter=2, share_weights=True).eval()
    assert len(model.priors) == 1
    physics = RandomMask(torch.ones(1, 1, 8, 8)).resample(3, generator=_gen(2))
    y = physics(torch.rand(3, 1, 8, 8, generator=_gen(3)))
    batched = model(y, physics)
    for b in range(3):
        single = model(y[b:b + 1], physics.with_params(mask=physics.mask[b:b + 1]))
        assert torch.allclose(batched[b:b + 1], single, atol=1e-6)


def test_unrolled_with_inpainting_if_available():
    import selfinv.physics.inpainting as physics_mod
    op = physics_mod.Inpainting((1, 8, 8), keep_ratio=0.6, generator=_gen(0)).resample(2, generator=_gen(1))
    model = UnrolledProximalGradient(n_iter=2)
    y = op(torch.rand(2, 1, 8, 8, generator=_gen(2)))
    out = model(y, op)
    assert out.shape == y.shape
    out.sum().backward()
    assert model.step_raw.grad is not None


def test_unrolled_factory_and_errors():
    model = UnrolledProximalGradient(prior=lambda: DnCNN(2, 2, depth=3, channels=4), n_iter=2)
    assert model(torch.randn(1, 2, 6, 6), Denoising()).shape == (1, 2, 6, 6)
    with pytest.raises(ValueError, match="n_iter"):
        UnrolledProximalGradient(n_iter=0)
    with pytest.raises(ValueError, match="step_size"):
        UnrolledProximalGradient(step_size=0.0)
    with pytest.raises(TypeError, match="A_adjoint"):
        UnrolledProximalGradient(n_iter=1)(torch.randn(1, 1, 4, 4), Cube())
    with pytest.raises(TypeError, match="nn.Module"):
        UnrolledProximalGradient(prior=lambda: 3)


def test_every_network_is_reachable_from_a_config():
    from selfinv import registry

    assert registry.resolve("backbone", "unet") is UNet and registry.resolve("backbone", "dncnn") is DnCNN
    assert registry.resolve("model", "back_projection") is BackProjection
    assert registry.resolve("model", "unrolled") is UnrolledProximalGradient
    assert set(registry.available("backbone")) == set(registry.names("backbone"))
