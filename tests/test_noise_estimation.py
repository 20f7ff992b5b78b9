"""Noise-level estimators on real bundled images at known noise levels."""

import numpy as np
import pytest
import torch
from skimage import color, data, img_as_float

from selfinv.physics import PoissonGaussianNoise
from selfinv.physics.noise_estimation import estimate_gaussian_sigma, estimate_poisson_gaussian


@pytest.fixture(scope="module")
def images():
    imgs = [img_as_float(data.camera()), img_as_float(data.moon()), color.rgb2gray(data.astronaut())]
    return torch.tensor(np.stack(imgs), dtype=torch.float32)[:, None]


@pytest.mark.parametrize("sigma", [0.05, 0.1, 0.2])
def test_gaussian_mad_estimate(images, sigma):
    g = torch.Generator().manual_seed(0)
    y = images + sigma * torch.randn(images.shape, generator=g)
    est = estimate_gaussian_sigma(y)
    assert est.shape == (3,)
    # The sampling error of the MAD over 65k coefficients is ~0.5 %; the rest is
    # image texture leaking into the finest diagonal band, measured at <= 10 %
    # on camera at sigma = 0.05 and shrinking as sigma grows.
    assert torch.all((est - sigma).abs() / sigma < 0.12), est


def test_gaussian_estimate_pure_noise_is_unbiased():
    g = torch.Generator().manual_seed(1)
    y = 0.3 * torch.randn(8, 1, 128, 128, generator=g)
    est = estimate_gaussian_sigma(y)
    # SE of the MAD-based sigma is ~1.1 sigma / sqrt(n_coeffs) = 0.3*1.1/64 ~ 0.005.
    assert torch.allclose(est, torch.full_like(est, 0.3), atol=4 * 0.3 * 1.1 / 64)


@pytest.mark.parametrize("gain,sigma", [(0.01, 0.02), (0.05, 0.05)])
def test_poisson_gaussian_fit(images, gain, sigma):
    g = torch.Generator().manual_seed(2)
    y = PoissonGaussianNoise(gain, sigma)(images, g)
    est_gain, est_sigma = estimate_poisson_gaussian(y)
    # measured relative errors on these images: gain <= 8 %, sigma <= 5 %
    assert abs(float(est_gain) - gain) / gain < 0.15
    assert abs(float(est_sigma) - sigma) / sigma < 0.15


def test_estimators_reject_bad_shapes():
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        estimate_gaussian_sigma(torch.zeros(8, 8))
    with pytest.raises(ValueError, match="at least 4x4"):
        estimate_gaussian_sigma(torch.zeros(1, 1, 2, 2))
    with pytest.raises(ValueError, match="two"):
        estimate_poisson_gaussian(torch.zeros(1, 1, 8, 8))


def test_neighbour_detail_reads_the_interpolation_error_and_the_noise():
    """A smooth ramp plus vertical stripes of period 2 and amplitude a: the 4-neighbour mean misses each pixel by
    a (its left and right neighbours are of the other sign, its upper and lower ones of its own), and the
    Haar-MAD noise estimate does not see the stripes (their diagonal detail is 0). Under white noise σ the
    estimate recovers both (the noise adds 1.25 σ² to the residual's variance); the warning comes for stripes
    stronger than the noise, not for the ramp alone."""
    import torch

    from selfinv.training.auto_noise import neighbour_detail, neighbour_detail_warning

    g = torch.Generator().manual_seed(0)
    H = W = 128
    i, j = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    ramp, stripes = (i + j).double() / (H + W), (1 - 2 * (j % 2)).double()
    a, sigma = 0.06, 0.03

    def noisy(clean):
        return [(clean + sigma * torch.randn(H, W, generator=g, dtype=torch.float64))[None] for _ in range(8)]

    e, s = neighbour_detail(noisy(ramp + a * stripes))
    assert abs(s - sigma) < 0.05 * sigma and abs(e - a) < 0.05 * a, (e, s)  # 8 x 128² pixels: ~1 % scatter
    assert "trained to predict each pixel from its neighbours" in neighbour_detail_warning(noisy(ramp + a * stripes),
                                                                                  "the loss splitting")
    assert neighbour_detail_warning(noisy(ramp), "the loss splitting") is None


def test_periodic_stripes_read_as_a_pattern_with_the_haar_sigma():
    """Period-2 stripes pass the Laplacian as a pattern no finite noise autocovariance describes: widening the
    window makes the least-squares fit degenerate, and the estimate came back 'correlated' with every
    correlation 0 and sigma 0 (what ``sigma: auto`` would then use). Now: not white, no correlation length,
    sigma = the Haar-MAD estimate (blind to period-2 stripes: the noise's 0.05), advice naming the pattern;
    noise alone stays white."""
    import torch

    from selfinv.physics.noise_estimation import estimate_noise_correlation

    g = torch.Generator().manual_seed(0)
    H = W = 128
    i, j = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    ramp, stripes = (i + j).double() / (H + W), (1 - 2 * (j % 2)).double()

    def images(a):
        return [(ramp + a * stripes + 0.05 * torch.randn(H, W, generator=g, dtype=torch.float64))[None].float()
                for _ in range(4)]

    est = estimate_noise_correlation(images(0.06), warn=False)
    assert not est.white and est.correlation_length == 0
    assert est.sigma == est.sigma_white and abs(est.sigma - 0.05) < 0.0025, est.sigma  # 4 x 128² pixels: ~1 %
    assert "no noise correlation over lags up to" in est.advice and "periodic pattern" in est.advice
    est = estimate_noise_correlation(images(0.0), warn=False)
    assert est.white and "periodic pattern" not in est.advice
