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
    UnknownNoise,
)

__all__ = [
    "Physics", "LinearPhysics", "Denoising", "conjugate_gradient",
    "NoiseModel", "NoNoise", "GaussianNoise", "ColoredGaussianNoise", "PoissonNoise",
    "PoissonGaussianNoise", "GammaNoise", "UnknownNoise",
]
# Operators (one file each) are added below as they land.
from selfinv.physics.blur import Blur, box_kernel, gaussian_kernel  # noqa: E402
from selfinv.physics.compressed_sensing import CompressedSensing  # noqa: E402
from selfinv.physics.downsampling import Downsampling, bicubic_kernel  # noqa: E402
from selfinv.physics.inpainting import Inpainting, bernoulli_mask  # noqa: E402
from selfinv.physics.mri import MRI, mri_mask, to_channels, to_complex  # noqa: E402

__all__ += [
    "Inpainting", "bernoulli_mask", "MRI", "mri_mask", "to_channels", "to_complex",
    "Blur", "box_kernel", "gaussian_kernel", "Downsampling", "bicubic_kernel", "CompressedSensing",
]
from selfinv.physics.mri_multicoil import MultiCoilMRI, estimate_sensitivities  # noqa: E402
from selfinv.physics.tomography import BeerLambertCT, Tomography  # noqa: E402

__all__ += ["MultiCoilMRI", "estimate_sensitivities", "Tomography", "BeerLambertCT"]
