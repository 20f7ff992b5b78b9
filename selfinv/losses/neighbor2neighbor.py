"""Neighbor2Neighbor (Huang et al., CVPR 2021).

The image is cut into 2×2 cells; in every cell a random pair of *adjacent*
pixels (sharing an edge: 4 pairs × 2 orders) is drawn, giving two half-size
images ``g1(y)``, ``g2(y)`` whose noise is independent and whose signals are
nearly equal (neighbouring pixels). With ``f`` the network,

``L = ||f(g1(y)) - g2(y)||² / m + γ ||f(g1(y)) - g2(y) - (g1(f(y)) - g2(f(y)))||² / m``

where ``f(y)`` in the regulariser is computed without gradient (as in the
paper). ``γ`` (``gamma``) trades the bias of the neighbour approximation.
Denoising only, even ``H`` and ``W``.

Validation (``validation_loss``) scores the first term only: the regulariser is
zero for the identity network (``f(g1) = g1``, ``f(y) = y``) and grows as the
network learns, so with it an untrained network validates best; the first term
is a Noise2Noise risk between the two sub-images (plus a constant), comparable
across training.
"""

from __future__ import annotations

import torch
from torch import Tensor

from selfinv.losses.base import Loss, LossConfigError, Reconstructor
from selfinv.physics.base import Denoising, Physics
from selfinv.utils import rng

# positions in a 2x2 cell: 0=(0,0) 1=(0,1) 2=(1,0) 3=(1,1); ordered adjacent pairs
_PAIRS = torch.tensor([(0, 1), (1, 0), (0, 2), (2, 0), (1, 3), (3, 1), (2, 3), (3, 2)])


class Neighbor2Neighbor(Loss):
    """Random neighbour sub-sampler loss with regulariser weight ``gamma``."""

    evaluates_measurement = False  # never evaluates f(y, A) on the raw measurement

    evaluations_per_step = 1  # plus one evaluation without gradient

    #: assumes pixel-wise independent noise (``Loss.tolerated_noise_correlation``)
    tolerated_noise_correlation: int | None = 0
    #: a pixel's estimate comes from its neighbours only (``Loss.predicts_from_neighbours``)
    predicts_from_neighbours = True

    def __init__(self, gamma: float = 2.0):
        super().__init__()
        if gamma < 0:
            raise LossConfigError(f"gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)

    def check(self, physics: Physics) -> None:
        if not isinstance(physics, Denoising):
            raise LossConfigError(f"Neighbor2Neighbor sub-samples the measured image, so it needs A = I "
                                  f"(Denoising); got {type(physics).__name__}")
        if physics.noise.kind == "colored_gaussian":
            raise LossConfigError("Neighbor2Neighbor needs noise independent across pixels; got coloured noise")

    @staticmethod
    def _check_size(y: Tensor) -> None:
        if y.ndim != 4:
            raise ValueError(f"Neighbor2Neighbor expects images (B, C, H, W), got shape {tuple(y.shape)}")
        H, W = y.shape[-2:]
        if H % 2 or W % 2 or H < 2 or W < 2:
            raise LossConfigError(f"Neighbor2Neighbor needs even image height and width (2x2 cells), got "
                                  f"{H}x{W}; crop the patches to an even size (e.g. {H - H % 2}x{W - W % 2})")

    def sample_pairs(self, y: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Per-cell choice of ``(first, second)`` cell positions, shape ``(B, 2, H/2, W/2)`` (long)."""
        self._check_size(y)
        B, _, H, W = y.shape
        k = rng.randint(0, len(_PAIRS), (B, H // 2, W // 2), generator=generator, device=y.device)
        return _PAIRS.to(y.device)[k].permute(0, 3, 1, 2)

    @staticmethod
    def subsample(y: Tensor, positions: Tensor) -> Tensor:
        """Pick, in every 2x2 cell, the pixel at ``positions`` ``(B, H/2, W/2)`` (0..3, row-major)."""
        B, C, H, W = y.shape
        cells = y.reshape(B, C, H // 2, 2, W // 2, 2).permute(0, 1, 2, 4, 3, 5).reshape(B, C, H // 2, W // 2, 4)
        idx = positions[:, None, :, :, None].expand(B, C, H // 2, W // 2, 1)
        return torch.gather(cells, -1, idx).squeeze(-1)

    def forward(self, y: Tensor, physics: Physics, model: Reconstructor, x: Tensor | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        self.check(physics)
        pairs = self.sample_pairs(y, generator)
        g1, g2 = self.subsample(y, pairs[:, 0]), self.subsample(y, pairs[:, 1])
        out = model(g1, physics)
        loss = ((out - g2) ** 2).mean()
        if self.gamma > 0:
            with torch.no_grad():
                full = model(y, physics)
            target_gap = self.subsample(full, pairs[:, 0]) - self.subsample(full, pairs[:, 1])
            loss = loss + self.gamma * ((out - g2 - target_gap) ** 2).mean()
        return loss

    def validation_loss(self, y: Tensor, physics: Physics, model: Reconstructor, x: Tensor | None = None,
                        generator: torch.Generator | None = None, **batch: Tensor) -> Tensor:
        """``||f(g1(y)) - g2(y)||² / m`` (the term without the regulariser, see the module docstring)."""
        self.check(physics)
        pairs = self.sample_pairs(y, generator)
        g1, g2 = self.subsample(y, pairs[:, 0]), self.subsample(y, pairs[:, 1])
        return ((model(g1, physics) - g2) ** 2).mean()

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}"
