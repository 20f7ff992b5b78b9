"""Forward operators ``A`` and noise models: ``y = noise(A(x))``."""

from selfinv.physics.base import Denoising, LinearPhysics, Physics, conjugate_gradient
from selfinv.physics.noise import (
    ColoredGaussianNoise,
    GammaNoise,
    GaussianNoise,
    NoiseModel,
    NoNoise,
    PoissonGaussianNoise,
    PoissonNoise,
)

__all__ = [
    "Physics", "LinearPhysics", "Denoising", "conjugate_gradient",
    "NoiseModel", "NoNoise", "GaussianNoise", "ColoredGaussianNoise", "PoissonNoise",
    "PoissonGaussianNoise", "GammaNoise",
]
# Operators (one file each) are added below as they land.
