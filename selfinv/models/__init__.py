"""Reconstruction networks: image-to-image backbones and the reconstructors ``model(y, physics)`` built on them.

Configs reach them through ``selfinv.registry`` (backbones: ``unet``, ``dncnn``, ``blindspot_net``,
``autoencoder``; reconstructors: ``back_projection``, ``unrolled``).
"""

from selfinv.models.autoencoder import BottleneckAutoencoder
from selfinv.models.blindspot import BlindSpotNet
from selfinv.models.dncnn import DnCNN
from selfinv.models.reconstructor import BackProjection, back_project
from selfinv.models.unet import UNet
from selfinv.models.unrolled import UnrolledProximalGradient

__all__ = ["BottleneckAutoencoder", "BlindSpotNet", "DnCNN", "BackProjection", "back_project", "UNet",
           "UnrolledProximalGradient"]
