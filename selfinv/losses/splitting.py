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

Correlated noise (``exclusion_radius = r > 0``, a structured mask in the spirit
of structN2V, Broaddus et al. 2020): when the noise at a pixel is correlated
with the noise of its neighbours up to a distance ``r`` (Chebyshev), the
neighbours leak the hidden pixel's noise to the network, which then learns to
reproduce it. The input ``y_a`` then replaces not only the hidden pixels but
their whole ``(2r+1) x (2r+1)`` neighbourhood ``E`` (the hidden mask dilated by
``r``): each pixel of ``E`` takes the value of a random pixel *outside* ``E`` at
Chebyshev distance ``r + 1`` (``replace="neighbour"``; a uniform random value
if there is none) or a uniform random value in the range of the pixels outside
``E`` (``replace="random"``). So ``y_a`` depends only on pixels at distance
``> r`` from every hidden pixel, hence (noise correlated over at most ``r``
pixels) is independent of the hidden pixels' noise, and the loss — still on
the hidden pixels only — is again the risk plus a constant. ``r = 0`` is the
plain method above (bit-identical). Cost: a fraction ``1 - (1 - p)^{(2r+1)²}``
of the input is replaced, so keep ``p`` small (e.g. ``p = 0.01`` at ``r = 2``
replaces 22 %). ``selfinv.physics.noise_estimation.estimate_noise_correlation``
measures the correlation length ``r`` needs to cover.

Test time (``mode``):

* ``"average"``: ``f_test(y) = M Σ_{i=1..N} m_{b,i} ∘ f(y_{a_i})`` with
  ``M = (Σ_i diag(m_{b,i}))⁻¹`` — each pixel is predicted only from splits
  that hid it (pixels never hidden fall back to the plain mean of the ``N``
  outputs); expensive but as trained;
* ``"split"``: ``f(y_a)`` for one random split;
* ``"full"``: ``f(y)`` (cheap; assumes the network generalises).

Measurements are images ``(B, C, H, W)`` with ``H, W >= r + 2``; noise must be
independent between pixels more than ``r`` apart. Any physics with image-shaped
measurements.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from selfinv.losses.base import Estimator, Loss, LossConfigError, ModelEstimator, Reconstructor, default_test_generator
from selfinv.physics.base import Physics
from selfinv.utils import rng


def _ring(s: int) -> list[tuple[int, int]]:
    """Offsets at Chebyshev distance exactly ``s``, row-major (``s = 1``: the 8 neighbours)."""
    return [(dy, dx) for dy in range(-s, s + 1) for dx in range(-s, s + 1) if max(abs(dy), abs(dx)) == s]


class SplittingLoss(Loss):
    """Noise2Void / Noise2Self masked-pixel loss.

    Args:
        mask_prob: probability ``p`` that a pixel is hidden.
        replace: ``"neighbour"`` or ``"random"`` (value put at hidden pixels of ``y_a``).
        mode: test-time estimator, ``"average"``, ``"split"`` or ``"full"``.
        n_test: number ``N`` of splits averaged in ``"average"`` mode.
        exclusion_radius: ``r``; the network input never depends on a pixel within Chebyshev distance
            ``r`` of a hidden pixel (structured mask for noise correlated over ``r`` pixels; ``0``: plain
            Noise2Void / Noise2Self).
    """

    evaluates_measurement = False  # never evaluates f(y, A) on the raw measurement

    def __init__(self, mask_prob: float = 0.05, replace: Literal["neighbour", "random"] = "neighbour",
                 mode: Literal["average", "split", "full"] = "full", n_test: int = 16,
                 exclusion_radius: int = 0):
        super().__init__()
        if not 0 < mask_prob < 1:
            raise LossConfigError(f"mask_prob must be in (0, 1), got {mask_prob}")
        if replace not in ("neighbour", "random"):
            raise LossConfigError(f"replace must be 'neighbour' or 'random', got {replace!r}")
        if mode not in ("average", "split", "full"):
            raise LossConfigError(f"mode must be 'average', 'split' or 'full', got {mode!r}")
        if n_test < 1:
            raise LossConfigError(f"n_test must be >= 1, got {n_test}")
        if isinstance(exclusion_radius, bool) or int(exclusion_radius) != exclusion_radius or exclusion_radius < 0:
            raise LossConfigError(f"exclusion_radius must be an integer >= 0, got {exclusion_radius!r}")
        self.mask_prob, self.replace, self.mode, self.n_test = float(mask_prob), replace, mode, int(n_test)
        self.exclusion_radius = int(exclusion_radius)

    #: a hidden pixel's estimate comes from its neighbours only (``Loss.predicts_from_neighbours``)
    predicts_from_neighbours = True

    @property
    def tolerated_noise_correlation(self) -> int | None:  # type: ignore[override]
        return self.exclusion_radius  # noise correlated within the excluded neighbourhood is allowed

    def check(self, physics: Physics) -> None:
        if physics.noise.kind != "colored_gaussian":
            return
        kernel = getattr(physics.noise, "kernel", None)
        need = None
        if isinstance(kernel, Tensor) and kernel.ndim == 2:
            rows = torch.nonzero(kernel.abs().sum(1)).flatten()
            cols = torch.nonzero(kernel.abs().sum(0)).flatten()
            need = int(max(rows.max() - rows.min(), cols.max() - cols.min()))  # support of k ⋆ k
        if need is None or self.exclusion_radius < need:
            wanted = f"exclusion_radius >= {need}" if need is not None else "a structured mask"
            raise LossConfigError(f"SplittingLoss with exclusion_radius={self.exclusion_radius} needs noise "
                                  f"independent across pixels more than {self.exclusion_radius} apart; this "
                                  f"coloured noise leaks through the neighbours (use {wanted}, AutoencoderLoss or "
                                  f"UNSURE(variant='colored'))")

    def split(self, y: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Return ``(y_a, m_b)``: the network input and the hidden-pixel mask (1 = hidden, shape ``(B,1,H,W)``).

        ``y_a`` equals ``y`` outside the excluded set ``E`` (the hidden pixels dilated by
        ``exclusion_radius``) and depends only on ``y`` outside ``E`` everywhere."""
        r = self.exclusion_radius
        s = r + 1  # distance of the replacement values
        if y.ndim != 4 or min(y.shape[-2:]) < s + 1:
            raise ValueError(f"SplittingLoss(exclusion_radius={r}) expects image measurements (B, C, H, W) with "
                             f"H, W >= {s + 1}, got shape {tuple(y.shape)}")
        B, C, H, W = y.shape
        mask = (rng.rand((B, 1, H, W), generator=generator, device=y.device, dtype=y.dtype)
                < self.mask_prob).to(y.dtype)
        excluded = mask if r == 0 else F.max_pool2d(mask, 2 * r + 1, stride=1, padding=r)
        keep = 1 - excluded
        # values only where they are needed: at the excluded pixels, a few per cent of the image (computing
        # them at every pixel cost Noise2Void 10-15 % of its training step). Indices into the images padded by
        # reflection (no edge repeat), so a ring neighbour is one offset away.
        Hp, Wp = H + 2 * s, W + 2 * s
        flat = excluded.view(-1).nonzero().squeeze(1)  # (M,) indices into (B, H, W)
        b, i, j = flat // (H * W), (flat // W) % H, flat % W
        at = (i + s) * Wp + (j + s)  # the pixel in its padded image
        if self.replace == "neighbour":
            offsets = torch.tensor([dy * Wp + dx for dy, dx in _ring(s)], device=y.device)
            kpad = F.pad(keep, (s, s, s, s), mode="reflect")
            ok = kpad.view(-1).take((b * (Hp * Wp) + at)[:, None] + offsets)  # (M, K) candidates kept?
            # the k-th kept candidate, k uniform in {0, …, n_ok - 1}: one uniform draw per excluded pixel
            n_ok = ok.sum(1)
            k = torch.floor(rng.rand(n_ok.shape, generator=generator, device=y.device, dtype=y.dtype) * n_ok)
            pick = (ok.cumsum(1) <= k[:, None]).sum(1).clamp_max(len(offsets) - 1)
            src = at + offsets[pick]
            fallback = n_ok == 0  # every candidate excluded: use a random value
        else:
            src = at
            fallback = torch.ones_like(flat, dtype=torch.bool)
        # (M, C) values of the chosen pixels in every channel of the padded images (B, C, Hp, Wp)
        ypad = F.pad(y, (s, s, s, s), mode="reflect")
        channel = torch.arange(C, device=y.device) * (Hp * Wp)
        value = ypad.reshape(-1).take((b * (C * Hp * Wp) + src)[:, None] + channel)
        if self.replace == "random" or bool(fallback.any()):
            big = torch.finfo(y.dtype).max
            lo = torch.where(keep > 0, y, torch.full_like(y, big)).amin(dim=(-2, -1))
            hi = torch.where(keep > 0, y, torch.full_like(y, -big)).amax(dim=(-2, -1))
            lo, hi = torch.minimum(lo, hi)[b], torch.maximum(lo, hi)[b]  # all-hidden sample: lo, hi = big, -big
            rand_value = lo + (hi - lo) * rng.rand(value.shape, generator=generator, device=y.device, dtype=y.dtype)
            rand_value = torch.where(torch.isfinite(rand_value), rand_value, torch.zeros_like(rand_value))
            value = torch.where(fallback[:, None], rand_value, value)
        y_a = y.clone()
        target = (b * (C * H * W) + i * W + j)[:, None] + torch.arange(C, device=y.device) * (H * W)
        y_a.view(-1)[target.reshape(-1)] = value.reshape(-1)
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
        return (f"mask_prob={self.mask_prob}, replace={self.replace!r}, mode={self.mode!r}, n_test={self.n_test}, "
                f"exclusion_radius={self.exclusion_radius}")
