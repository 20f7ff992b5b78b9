"""Bottleneck autoencoder loss: ``||y - f_AE(y)||² / n``.

With a strong bottleneck (``selfinv.models.BottleneckAutoencoder``) the network
cannot represent the high-dimensional noise and keeps the low-dimensional
signal (tutorial, Part 2). No assumption on the noise (works for coloured noise)
but not MMSE-optimal. Any physics (measurement-domain fit ``||y - A f(y)||²``).
"""

from __future__ import annotations

from selfinv.losses.consistency import MeasurementConsistency
from selfinv.physics.base import Physics


class AutoencoderLoss(MeasurementConsistency):
    """``||y - A f_AE(y, A)||² / m`` meant for a bottleneck autoencoder ``f_AE``."""

    def check(self, physics: Physics) -> None:
        """Any physics; on denoising the bottleneck (not the loss) keeps the identity out of reach."""
