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
