"""Image quality metrics on ``(B, C, H, W)`` tensors: PSNR and SSIM, per image.

Used for evaluation only (logged beside the self-supervised validation loss,
never for training or, unless asked, for model selection).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_pair(x_hat: Tensor, x: Tensor, who: str) -> None:
    if x_hat.shape != x.shape:
        raise ValueError(f"{who}: reconstruction shape {tuple(x_hat.shape)} != reference shape {tuple(x.shape)}")
    if x.ndim != 4:
        raise ValueError(f"{who} expects (B, C, H, W) images, got shape {tuple(x.shape)}")


def psnr(x_hat: Tensor, x: Tensor, data_range: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio per image, ``10 log10(R^2 / mean((x_hat - x)^2))`` in dB, shape ``(B,)``."""
    _check_pair(x_hat, x, "psnr")
    mse = (x_hat.double() - x.double()).pow(2).flatten(1).mean(1)
    out = 10.0 * torch.log10(data_range**2 / mse.clamp_min(1e-20))
    return out.to(x.dtype if x.is_floating_point() else torch.float32)


def _gaussian_window(sigma: float, radius: int, device, dtype) -> Tensor:
    t = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(x_hat: Tensor, x: Tensor, data_range: float = 1.0, sigma: float = 1.5, win_size: int = 11,
         k1: float = 0.01, k2: float = 0.03) -> Tensor:
    """Structural similarity per image (mean over channels and valid window positions), shape ``(B,)``.

    ``SSIM = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))``
    with Gaussian-weighted local statistics (window 11, sigma 1.5), ``C1 = (k1 R)^2``,
    ``C2 = (k2 R)^2``. Wang, Bovik, Sheikh & Simoncelli (2004), IEEE TIP 13(4).
    Only windows fully inside the image are averaged (as scikit-image does after
    cropping its borders).
    """
    _check_pair(x_hat, x, "ssim")
    if min(x.shape[-2:]) < win_size:
        raise ValueError(f"ssim needs images of at least {win_size}x{win_size}, got {tuple(x.shape[-2:])}")
    a, b = x_hat.double(), x.double()
    C = a.shape[1]
    g = _gaussian_window(sigma, win_size // 2, a.device, a.dtype)
    gh = g.reshape(1, 1, 1, -1).repeat(C, 1, 1, 1)
    gv = g.reshape(1, 1, -1, 1).repeat(C, 1, 1, 1)

    def blur(z: Tensor) -> Tensor:
        return F.conv2d(F.conv2d(z, gh, groups=C), gv, groups=C)

    mu_a, mu_b = blur(a), blur(b)
    saa = blur(a * a) - mu_a**2
    sbb = blur(b * b) - mu_b**2
    sab = blur(a * b) - mu_a * mu_b
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (saa + sbb + c2))
    return s.flatten(1).mean(1).to(x.dtype if x.is_floating_point() else torch.float32)


def psnr_from_mse(mse: float, data_range: float = 1.0) -> float:
    return 10.0 * math.log10(data_range**2 / max(mse, 1e-20))
