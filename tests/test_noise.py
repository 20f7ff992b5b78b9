"""Noise models and the hand-written samplers of ``selfinv.utils.rng``.

Moment tests: with ``N`` independent draws, the sample mean has standard error
``sqrt(var / N)`` and the sample variance ``s²`` has standard error
``sqrt((m4 - s⁴) / N)`` (``m4`` the sample fourth central moment; delta method,
Cramér 1946 §27.4). Every check allows 3 standard errors. All draws are seeded,
so a pass/fail is reproducible; a wrong gain, a missing square or a biased
sampler moves the statistic by tens of standard errors.
"""

from __future__ import annotations

import math

import pytest
import torch

from selfinv.physics import (
    ColoredGaussianNoise,
    GammaNoise,
    GaussianNoise,
    NoNoise,
    PoissonGaussianNoise,
    PoissonNoise,
)
from selfinv.utils import rng


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_moments(samples: torch.Tensor, mean: float, var: float, what: str = "") -> None:
    """Sample mean and variance of a 1-D sample within 3 standard errors of theory."""
    x = samples.double().flatten()
    n = x.numel()
    m = x.mean()
    s2 = x.var()
    m4 = ((x - m) ** 4).mean()
    se_mean = math.sqrt(var / n)
    se_var = math.sqrt(max(float(m4 - s2**2), 0.0) / n)
    assert abs(float(m) - mean) < 3 * se_mean, f"{what}: mean {float(m):.5g} vs {mean:.5g} (SE {se_mean:.3g})"
    assert abs(float(s2) - var) < 3 * se_var, f"{what}: variance {float(s2):.5g} vs {var:.5g} (SE {se_var:.3g})"


N = 20000  # draws per tested value: SE of a mean = 0.7 % of the std


def test_gaussian_scalar_sigma_moments():
    sigma, z0 = 0.2, 0.5
    z = torch.full((1, 1, 100, N // 100), z0, dtype=torch.float64)
    y = GaussianNoise(sigma)(z, _g(1))
    assert_moments(y, z0, sigma**2, "Gaussian")
    assert torch.allclose(GaussianNoise(sigma).variance(z), torch.full_like(z, sigma**2))


def test_gaussian_per_sample_sigma_moments():
    sigmas = torch.tensor([0.1, 0.5, 1.0])
    z = torch.zeros(3, 1, 100, N // 100, dtype=torch.float64)
    z[1] = 1.0
    y = GaussianNoise(sigmas)(z, _g(2))
    for b, s in enumerate(sigmas.tolist()):
        assert_moments(y[b], float(z[b].mean()), s**2, f"Gaussian sample {b}")
    with pytest.raises(ValueError, match="sigma has 3 per-sample values but the batch has 2"):
        GaussianNoise(sigmas)(z[:2], _g())


def test_colored_noise_marginal_and_autocovariance():
    sigma, H = 0.5, 32
    kernel = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) + torch.tensor(
        [[0.0, 0.0, 0.0], [0.0, 0.0, 3.0], [0.0, 0.0, 0.0]])  # asymmetric on purpose
    noise = ColoredGaussianNoise(sigma, kernel)
    n_img = 200
    z = torch.full((n_img, 1, H, H), 0.25, dtype=torch.float64)
    e = noise(z, _g(3)) - 0.25  # (n_img, 1, H, H)
    k = kernel.double() / kernel.double().norm()
    # theory: Cov(e[i], e[i + d]) = sigma² Σ_j k[j] k[j + d]  (autocorrelation of the kernel)
    def kernel_autocorr(dy: int, dx: int) -> float:
        kh, kw = k.shape
        total = 0.0
        for a in range(kh):
            for b in range(kw):
                if 0 <= a + dy < kh and 0 <= b + dx < kw:
                    total += float(k[a, b] * k[a + dy, b + dx])
        return sigma**2 * total
    # per-image estimates are independent across images: their spread gives an honest SE
    for dy, dx in [(0, 0), (0, 1), (1, 0), (1, 1), (1, -1), (0, 2), (2, 2), (0, 3), (3, 0)]:
        prod = e * torch.roll(e, shifts=(-dy, -dx), dims=(-2, -1))
        per_image = prod.mean(dim=(1, 2, 3))
        est = float(per_image.mean())
        se = float(per_image.std() / math.sqrt(n_img))
        theory = kernel_autocorr(dy, dx)
        assert abs(est - theory) < 3 * se, f"lag {(dy, dx)}: {est:.5f} vs {theory:.5f} (SE {se:.2g})"
    # beyond the kernel support the noise is uncorrelated (lag 3 ≥ kernel size 3): tested above
    assert kernel_autocorr(0, 3) == 0.0


@pytest.mark.parametrize("gain", [0.05, 0.5])
def test_poisson_moments(gain):
    for i, z0 in enumerate([0.2, 1.0, 3.0]):
        z = torch.full((1, 1, 100, N // 100), z0, dtype=torch.float64)
        y = PoissonNoise(gain)(z, _g(10 + i))
        assert_moments(y, z0, gain * z0, f"Poisson gain {gain} z {z0}")
        # the values are multiples of the gain (photon counts times gain)
        assert torch.allclose(y / gain, (y / gain).round(), atol=1e-6)


def test_poisson_gaussian_moments_per_sample_gain():
    gain = torch.tensor([0.1, 0.4])
    sigma = 0.2
    z = torch.tensor([0.5, 2.0], dtype=torch.float64).reshape(2, 1, 1, 1).expand(2, 1, 100, N // 100).clone()
    noise = PoissonGaussianNoise(gain, sigma)
    y = noise(z, _g(20))
    for b in range(2):
        z0, g0 = float(z[b, 0, 0, 0]), float(gain[b])
        assert_moments(y[b], z0, g0 * z0 + sigma**2, f"Poisson-Gaussian sample {b}")
    assert torch.allclose(noise.variance(z)[:, 0, 0, 0], (gain.double() * torch.tensor([0.5, 2.0]) + sigma**2))


@pytest.mark.parametrize("shape", [0.5, 1.0, 4.0, 20.0])
def test_gamma_moments(shape):
    z0 = 2.0
    z = torch.full((1, 1, 100, N // 100), z0, dtype=torch.float64)
    y = GammaNoise(shape)(z, _g(30))
    assert_moments(y, z0, z0**2 / shape, f"Gamma shape {shape}")
    assert torch.all(y > 0)


def test_gamma_per_sample_shape():
    shapes = torch.tensor([2.0, 10.0])
    z = torch.full((2, 1, 100, N // 100), 1.5, dtype=torch.float64)
    y = GammaNoise(shapes)(z, _g(31))
    for b, ell in enumerate(shapes.tolist()):
        assert_moments(y[b], 1.5, 1.5**2 / ell, f"Gamma sample {b}")


def test_no_noise_is_identity():
    z = torch.randn(2, 1, 4, 4)
    assert torch.equal(NoNoise()(z, _g()), z)
    assert torch.equal(NoNoise().variance(z), torch.zeros_like(z))


# -- bad parameters -------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda: GaussianNoise(-0.1),
    lambda: GaussianNoise(torch.tensor([0.1, -0.2])),
    lambda: GaussianNoise(float("nan")),
    lambda: ColoredGaussianNoise(-1.0, torch.ones(3, 3)),
    lambda: ColoredGaussianNoise(1.0, torch.zeros(3, 3)),
    lambda: ColoredGaussianNoise(1.0, torch.ones(3)),
    lambda: PoissonNoise(0.0),
    lambda: PoissonNoise(-1.0),
    lambda: PoissonGaussianNoise(0.0, 0.1),
    lambda: PoissonGaussianNoise(1.0, -0.1),
    lambda: GammaNoise(0.0),
    lambda: GammaNoise(-2.0),
])
def test_bad_parameters_raise(make):
    with pytest.raises(ValueError):
        make()


def test_invalid_inputs_raise():
    neg = torch.tensor([[[[0.5, -0.1]]]])
    with pytest.raises(ValueError, match="non-negative"):
        PoissonNoise(1.0)(neg, _g())
    with pytest.raises(ValueError, match="non-negative"):
        PoissonGaussianNoise(1.0, 0.1)(neg, _g())
    with pytest.raises(ValueError, match="strictly positive"):
        GammaNoise(2.0)(torch.tensor([[[[1.0, 0.0]]]]), _g())
    with pytest.raises(ValueError, match="strictly positive"):
        GammaNoise(2.0)(neg, _g())


# -- determinism ----------------------------------------------------------------------

@pytest.mark.parametrize("noise", [
    GaussianNoise(0.3), GaussianNoise(torch.tensor([0.1, 0.2])),
    ColoredGaussianNoise(0.3, torch.ones(3, 3)), PoissonNoise(0.2), PoissonGaussianNoise(0.2, 0.1),
    GammaNoise(3.0), GammaNoise(0.7),
], ids=lambda n: type(n).__name__)
def test_same_seed_same_draw(noise):
    z = torch.rand(2, 1, 8, 8, generator=_g(40)) + 0.1
    a = noise(z, _g(41))
    b = noise(z, _g(41))
    c = noise(z, _g(42))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


# -- the hand-written samplers ---------------------------------------------------------

def _ks_statistic(samples: torch.Tensor, cdf) -> float:
    x = samples.double().flatten().sort().values
    n = x.numel()
    F = cdf(x)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return float(torch.maximum(i / n - F, F - (i - 1) / n).max())


@pytest.mark.parametrize("sampler", [rng.standard_gamma, rng.marsaglia_tsang_gamma])
@pytest.mark.parametrize("k", [0.3, 1.0, 2.5, 10.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_standard_gamma_moments_and_distribution(k, dtype, sampler):
    shape_param = torch.full((N,), k, dtype=dtype)
    x = sampler(shape_param, _g(50))
    assert x.dtype == dtype and x.shape == (N,) and torch.all(x > 0)
    assert_moments(x, k, k, f"Gamma({k}, 1)")
    # Kolmogorov–Smirnov against the exact CDF P(k, x): 1.63 / sqrt(N) is the 1 % critical value
    d = _ks_statistic(x, lambda t: torch.special.gammainc(torch.full_like(t, k), t))
    assert d < 1.63 / math.sqrt(N), f"KS distance {d:.4f}"


@pytest.mark.parametrize("sampler", [rng.standard_gamma, rng.marsaglia_tsang_gamma])
def test_standard_gamma_rejects_non_positive_shape_and_is_seeded(sampler):
    with pytest.raises(ValueError):
        sampler(torch.tensor([1.0, 0.0]), _g())
    k = torch.tensor([0.5, 2.0, 7.0])
    assert torch.equal(sampler(k, _g(3)), sampler(k, _g(3)))
    assert not torch.equal(sampler(k, _g(3)), sampler(k, _g(4)))


@pytest.mark.parametrize("a,b", [(0.5, 0.5), (2.0, 5.0), (1.0, 1.0)])
def test_beta_moments(a, b):
    x = rng.beta(torch.full((N,), a, dtype=torch.float64), torch.full((N,), b, dtype=torch.float64), _g(60))
    assert torch.all((x >= 0) & (x <= 1))
    mean = a / (a + b)
    var = a * b / ((a + b) ** 2 * (a + b + 1))
    assert_moments(x, mean, var, f"Beta({a}, {b})")
    if a == 1.0 and b == 1.0:  # Beta(1, 1) is uniform: KS against the identity CDF
        assert _ks_statistic(x, lambda t: t) < 1.63 / math.sqrt(N)


def test_every_noise_model_declares_its_family():
    from selfinv.physics.noise import NoiseModel

    assert NoiseModel.kind == "custom"
    kinds = {NoNoise: "none", GaussianNoise: "gaussian", ColoredGaussianNoise: "colored_gaussian",
             PoissonNoise: "poisson", PoissonGaussianNoise: "poisson_gaussian", GammaNoise: "gamma"}
    for cls, kind in kinds.items():
        assert cls.kind == kind


def test_noise_parameters_are_stored_in_float64_and_follow_the_data_dtype():
    noise = PoissonGaussianNoise(0.02, 0.1)
    assert noise.sigma.dtype == noise.gain.dtype == torch.float64 and float(noise.sigma) == 0.1
    noise.float()  # a dtype conversion of the module does not round the exact constants
    assert noise.sigma.dtype == torch.float64 and float(noise.sigma) == 0.1
    colored = ColoredGaussianNoise(0.1, torch.ones(2, 2)).half()
    assert colored.kernel.dtype == torch.float64
    z32 = torch.full((2, 1, 4, 4), 0.5)
    assert noise.variance(z32).dtype == torch.float32  # cast to the data where used
    assert noise.variance(z32.double()).dtype == torch.float64
    assert float(noise.variance(z32.double())[0, 0, 0, 0]) == 0.02 * 0.5 + 0.1**2
    assert GaussianNoise(0.1)(z32, torch.Generator().manual_seed(0)).dtype == torch.float32
