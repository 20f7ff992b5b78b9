"""The validation-loss contract (``Loss.validation_loss``): the checkpoint-selection criterion is comparable
across training — the loss itself by default, a state-free criterion for UNSURE, Neighbor2Neighbor and
Noise2Score — and the engine's validation step uses it."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from selfinv.losses import UNSURE, MeasurementConsistency, Neighbor2Neighbor, Noise2Score, WeightedSum
from selfinv.losses.base import Loss
from selfinv.physics import Denoising, GammaNoise, GaussianNoise, PoissonGaussianNoise
from selfinv.physics.inpainting import Inpainting
from selfinv.training.module import SelfSupervisedModule

DT = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


class Scale(nn.Module):
    def __init__(self, c: float):
        super().__init__()
        self.c = c

    def forward(self, y, physics):
        return self.c * y


class Smooth(nn.Module):
    """A fixed 3x3 smoothing filter (centre 0.4): a linear denoiser with divergence 0.4 per pixel."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect", bias=False).to(DT)
        w = torch.full((3, 3), 0.6 / 8, dtype=DT)
        w[1, 1] = 0.4
        self.conv.weight.data[:] = w
        self.requires_grad_(False)

    def forward(self, y, physics):
        return self.conv(y)


def smooth_images(n: int, size: int = 64, lo: float = 0.2, hi: float = 0.9) -> torch.Tensor:
    r = torch.arange(size, dtype=DT)[:, None] / size
    c = torch.arange(size, dtype=DT)[None, :] / size
    phase = torch.linspace(0, 1, n, dtype=DT)[:, None, None]
    img = 0.5 + 0.5 * torch.sin(2 * math.pi * r + phase) * torch.cos(math.pi * c + 0.3)
    return (lo + (hi - lo) * img)[:, None]


def test_default_validation_loss_is_the_loss():
    physics = Denoising(GaussianNoise(0.1))
    y = torch.rand(2, 1, 8, 8, dtype=DT, generator=torch.Generator().manual_seed(0))
    loss = MeasurementConsistency()
    assert float(loss.validation_loss(y, physics, Scale(0.5))) == pytest.approx(float(loss(y, physics, Scale(0.5))))


def test_weighted_sum_validates_each_term_with_its_own_criterion():
    class Constant(Loss):
        def forward(self, y, physics, model, x=None, generator=None):
            return y.new_tensor(1.0)

        def validation_loss(self, y, physics, model, x=None, generator=None):
            return y.new_tensor(7.0)

    physics = Denoising(GaussianNoise(0.1))
    y = torch.rand(2, 1, 8, 8, dtype=DT, generator=torch.Generator().manual_seed(0))
    loss = WeightedSum([MeasurementConsistency(), Constant()], [1.0, 2.0], ["mc", "c"])
    mc = float(((y - 0.5 * y) ** 2).mean())
    assert float(loss(y, physics, Scale(0.5))) == pytest.approx(mc + 2.0)
    assert float(loss.validation_loss(y, physics, Scale(0.5))) == pytest.approx(mc + 14.0)
    assert float(loss.last_terms["c"]) == 7.0


def test_unsure_validation_does_not_depend_on_the_multiplier_and_estimates_the_risk():
    sigma = 0.1
    physics = Denoising(GaussianNoise(sigma))
    x = smooth_images(64)
    y = physics(x, generator=torch.Generator().manual_seed(0))
    model = Smooth()
    values = []
    for eta in (0.0, 0.05):
        loss = UNSURE(eta_init=eta).eval()
        values.append(float(loss.validation_loss(y, physics, model, generator=torch.Generator().manual_seed(1))))
        assert float(loss.eta) == pytest.approx(eta)  # validation never moves the multiplier
    assert values[0] == values[1]
    # the Lagrangian itself does depend on the multiplier (the reason for the override)
    lag = [float(UNSURE(eta_init=e).eval()(y, physics, model, generator=torch.Generator().manual_seed(1)))
           for e in (0.0, 0.05)]
    assert abs(lag[1] - lag[0]) > 0.01
    risk = float(((model(y, physics) - x) ** 2).mean())
    # SURE with the MAD noise estimate: unbiased up to the estimate's error (a few %) and the Monte-Carlo
    # divergence (one probe over 262144 entries); forgetting the constant sigma² would be off by 0.01
    assert values[0] == pytest.approx(risk, abs=1.5e-3)
    # the identity scores the noise variance, a good denoiser less: the criterion ranks them right
    ident = float(UNSURE().eval().validation_loss(y, physics, Scale(1.0), generator=torch.Generator().manual_seed(1)))
    assert ident == pytest.approx(sigma**2, rel=0.1)
    assert values[0] < ident


def test_unsure_poisson_gaussian_validation_estimates_the_risk():
    physics = Denoising(PoissonGaussianNoise(0.02, 0.02))
    x = smooth_images(64)
    y = physics(x, generator=torch.Generator().manual_seed(0))
    model = Smooth()
    val = float(UNSURE(variant="poisson_gaussian").eval().validation_loss(
        y, physics, model, generator=torch.Generator().manual_seed(1)))
    risk = float(((model(y, physics) - x) ** 2).mean())
    noise_var = float((0.02 * x + 0.02**2).mean())  # the size of the error a forgotten constant would make
    assert val == pytest.approx(risk, abs=0.15 * noise_var)


def test_unsure_warns_where_it_cannot_estimate_the_noise():
    with pytest.warns(UserWarning, match="last.ckpt"):
        UNSURE().check(Inpainting((1, 8, 8), 0.5, noise=GaussianNoise(0.1)))
    with pytest.warns(UserWarning, match="last.ckpt"):
        UNSURE(variant="colored").check(Denoising(GaussianNoise(0.1)))


def test_neighbor2neighbor_validates_without_the_regulariser():
    physics = Denoising(GaussianNoise(0.1))
    y = torch.rand(3, 1, 8, 8, dtype=DT, generator=torch.Generator().manual_seed(0))
    loss = Neighbor2Neighbor(gamma=2.0)
    model = Scale(0.5)
    val = float(loss.validation_loss(y, physics, model, generator=torch.Generator().manual_seed(1)))
    pairs = loss.sample_pairs(y, torch.Generator().manual_seed(1))
    g1, g2 = loss.subsample(y, pairs[:, 0]), loss.subsample(y, pairs[:, 1])
    assert val == pytest.approx(float(((0.5 * g1 - g2) ** 2).mean()))
    train = float(loss(y, physics, model, generator=torch.Generator().manual_seed(1)))
    assert train > val  # the regulariser is positive for this non-identity model
    # for the identity the regulariser vanishes: with it an untrained (identity) network would look good
    assert float(loss(y, physics, Scale(1.0), generator=torch.Generator().manual_seed(1))) == pytest.approx(
        float(loss.validation_loss(y, physics, Scale(1.0), generator=torch.Generator().manual_seed(1))))


def test_noise2score_validation_ignores_the_annealing_clock():
    physics = Denoising(GammaNoise(10.0))  # Gaussian noise validates with SURE instead (test below)
    y = 0.1 + torch.rand(2, 1, 8, 8, dtype=DT, generator=torch.Generator().manual_seed(0))
    loss = Noise2Score(noise="gamma", sigma_max=0.1, sigma_min=0.01, anneal_steps=10)
    model = Scale(-3.0)
    before = float(loss.validation_loss(y, physics, model, generator=torch.Generator().manual_seed(1)))
    loss.step.fill_(10)
    after = float(loss.validation_loss(y, physics, model, generator=torch.Generator().manual_seed(1)))
    assert before == after
    assert float(loss(y, physics, model, generator=torch.Generator().manual_seed(1))) == pytest.approx(after)


def test_gaussian_noise2score_validates_with_the_sure_of_its_tweedie_denoiser():
    """Unbiased for the per-entry MSE of ``y + σ² s(y)`` (here the posterior mean of a Gaussian mixture: the score
    model is exact), whatever the annealing clock."""
    from test_losses_denoising import MU, PI, S, ScoreModel, mean_and_se

    sigma = 0.4
    physics = Denoising(GaussianNoise(sigma))
    loss = Noise2Score(noise="gaussian", sigma_max=0.1, sigma_min=0.01, anneal_steps=10)
    loss.step.fill_(3)
    model = ScoreModel(sigma**2)
    g = torch.Generator().manual_seed(5)
    d, mse = [], []
    for _ in range(20):
        comp = torch.multinomial(PI, 4096, replacement=True, generator=g)
        x = (MU[comp] + S[comp] * torch.randn(4096, generator=g, dtype=DT)).reshape(64, 1, 8, 8)
        y = physics(x, generator=g)
        err = float(((loss.estimator(model)(y, physics) - x) ** 2).mean())
        d.append(float(loss.validation_loss(y, physics, model, generator=g)) - err)
        mse.append(err)
    mean, se = mean_and_se(d)
    assert 4 * se < 0.1 * min(mse)  # power: an offset of a tenth of the MSE would be caught
    assert abs(mean) < 4 * se, (mean, se)
    assert int(loss.step) == 3  # validation does not advance the annealing


def test_the_engine_validates_with_the_validation_loss():
    class Marked(MeasurementConsistency):
        def validation_loss(self, y, physics, model, x=None, generator=None):
            return y.new_tensor(42.0)

    physics = Denoising(GaussianNoise(0.1))
    module = SelfSupervisedModule(Scale(0.5), physics, WeightedSum([Marked()], names=["m"]))
    batch = {"y": torch.rand(2, 1, 8, 8)}
    g = torch.Generator().manual_seed(0)
    assert float(module._loss(batch, g, validation=True)) == 42.0
    assert float(module._loss(batch, g)) != 42.0
