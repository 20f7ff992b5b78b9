"""Measurement splitting: Noise2Void (Krull et al. 2019) / Noise2Self (Batson & Royer 2019).

At each step a random set ``b`` of pixels (Bernoulli(``p``) mask ``m_b``, shared
by the channels) is hidden: the network input ``y_a`` equals ``y`` except at
``b``, where the value is replaced by that of a random *unmasked* 8-neighbour
(``replace="neighbour"``, reflected at the border) or by a uniform random value
in the range of the unmasked pixels (``replace="random"``). So ``y_a`` never
depends on ``y`` at a hidden pixel, and

``L_N2V(y, f) = ||m_b ∘ (y - A f(y_a, A))||² / ||m_b||₀``

(mean over hidden entries) is, for pixel-wise independent zero-mean noise,
the risk on hidden pixels plus a constant (the cross-validation argument of
the tutorial, Part 2).

Test time (``mode``):

* ``"average"``: ``f_test(y) = M Σ_{i=1..N} m_{b,i} ∘ f(y_{a_i})`` with
  ``M = (Σ_i diag(m_{b,i}))⁻¹`` — each pixel is predicted only from splits
  that hid it (pixels never hidden fall back to the plain mean of the ``N``
  outputs); expensive but as trained;
* ``"split"``: ``f(y_a)`` for one random split;
* ``"full"``: ``f(y)`` (cheap; assumes the network generalises).

Measurements are images ``(B, C, H, W)`` with ``H, W >= 2``; noise must be
independent across entries. Any physics with image-shaped measurements.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from selfinv.losses.base import Estimator, Loss, LossConfigError, ModelEstimator, Reconstructor, default_test_generator
from selfinv.physics.base import Physics
from selfinv.utils import rng

_OFFSETS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


class SplittingLoss(Loss):
    """Noise2Void / Noise2Self masked-pixel loss.

    Args:
        mask_prob: probability ``p`` that a pixel is hidden.
        replace: ``"neighbour"`` or ``"random"`` (value put at hidden pixels of ``y_a``).
        mode: test-time estimator, ``"average"``, ``"split"`` or ``"full"``.
        n_test: number ``N`` of splits averaged in ``"average"`` mode.
    """

    evaluates_measurement = False  # never evaluates f(y, A) on the raw measurement

    def __init__(self, mask_prob: float = 0.05, replace: Literal["neighbour", "random"] = "neighbour",
                 mode: Literal["average", "split", "full"] = "full", n_test: int = 16):
        super().__init__()
        if not 0 < mask_prob < 1:
            raise LossConfigError(f"mask_prob must be in (0, 1), got {mask_prob}")
        if replace not in ("neighbour", "random"):
            raise LossConfigError(f"replace must be 'neighbour' or 'random', got {replace!r}")
        if mode not in ("average", "split", "full"):
            raise LossConfigError(f"mode must be 'average', 'split' or 'full', got {mode!r}")
        if n_test < 1:
            raise LossConfigError(f"n_test must be >= 1, got {n_test}")
        self.mask_prob, self.replace, self.mode, self.n_test = float(mask_prob), replace, mode, int(n_test)

    def check(self, physics: Physics) -> None:
        if physics.noise.kind == "colored_gaussian":
            raise LossConfigError("SplittingLoss needs noise independent across pixels; coloured noise "
                                  "leaks through the neighbours (use AutoencoderLoss or UNSURE(variant='colored'))")

    def split(self, y: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Return ``(y_a, m_b)``: the network input and the hidden-pixel mask (1 = hidden, shape ``(B,1,H,W)``)."""
        if y.ndim != 4 or min(y.shape[-2:]) < 2:
            raise ValueError(f"SplittingLoss expects image measurements (B, C, H, W) with H, W >= 2, "
                             f"got shape {tuple(y.shape)}")
        B, C, H, W = y.shape
        mask = (rng.rand((B, 1, H, W), generator=generator, device=y.device, dtype=y.dtype)
                < self.mask_prob).to(y.dtype)
        keep = 1 - mask
        if self.replace == "neighbour":
            ypad = F.pad(y, (1, 1, 1, 1), mode="reflect")
            kpad = F.pad(keep, (1, 1, 1, 1), mode="reflect")
            cand = torch.stack([ypad[..., 1 + dy:1 + dy + H, 1 + dx:1 + dx + W] for dy, dx in _OFFSETS])
            ok = torch.stack([kpad[..., 1 + dy:1 + dy + H, 1 + dx:1 + dx + W] for dy, dx in _OFFSETS])
            score = rng.rand(ok.shape, generator=generator, device=y.device, dtype=y.dtype)
            score = torch.where(ok > 0, score, torch.full_like(score, -1.0))
            best, idx = score.max(dim=0)  # (B,1,H,W)
            value = torch.gather(cand, 0, idx.unsqueeze(0).expand(1, B, C, H, W)).squeeze(0)
            fallback = best < 0  # every neighbour hidden: use a random value
        else:
            fallback = mask > 0
            value = y
        if self.replace == "random" or bool(fallback.any()):
            big = torch.finfo(y.dtype).max
            lo = torch.where(keep > 0, y, torch.full_like(y, big)).amin(dim=(-2, -1), keepdim=True)
            hi = torch.where(keep > 0, y, torch.full_like(y, -big)).amax(dim=(-2, -1), keepdim=True)
            lo, hi = torch.minimum(lo, hi), torch.maximum(lo, hi)  # all-hidden sample: lo, hi = big, -big
            rand_value = lo + (hi - lo) * rng.rand_like(y, generator)
            rand_value = torch.where(torch.isfinite(rand_value), rand_value, torch.zeros_like(y))
            value = torch.where(fallback, rand_value, value)
        y_a = torch.where(mask > 0, value, y)
        return y_a, mask

    def forward(self, y: Tensor, physics: Physics, model: Reconstructor, x: Tensor | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        self.check(physics)
        y_a, mask = self.split(y, generator)
        res = mask * (y - physics.A(model(y_a, physics))) ** 2
        count = (mask.sum() * y.shape[1]).clamp_min(1)
        return res.sum() / count

    @property
    def custom_estimator(self) -> bool:  # type: ignore[override]
        return self.mode != "full"

    def estimator(self, model: Reconstructor) -> Estimator:
        """Test-time reconstructor for ``self.mode`` (see module docstring); random splits come from
        ``generator`` (default: seeded with 0, so a reconstruction is reproducible)."""
        if self.mode == "full":
            return ModelEstimator(model)

        def f_test(y: Tensor, physics: Physics, generator: torch.Generator | None = None) -> Tensor:
            generator = generator if generator is not None else default_test_generator(y)
            if self.mode == "split":
                return model(self.split(y, generator)[0], physics)
            num: Tensor | float = 0.0
            den: Tensor | float = 0.0
            plain: Tensor | float = 0.0
            for _ in range(self.n_test):
                y_a, m = self.split(y, generator)
                out = model(y_a, physics)
                if out.shape[-2:] != m.shape[-2:]:
                    raise ValueError(f"'average' mode needs f(y) on the measurement grid, got {tuple(out.shape)}")
                num, den, plain = num + m * out, den + m, plain + out
            assert isinstance(den, Tensor)  # n_test >= 1
            return torch.where(den > 0, num / den.clamp_min(1), plain / self.n_test)

        return f_test

    def extra_repr(self) -> str:
        return f"mask_prob={self.mask_prob}, replace={self.replace!r}, mode={self.mode!r}, n_test={self.n_test}"
