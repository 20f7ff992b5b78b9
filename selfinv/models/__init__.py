"""selfinv.models"""

# backbones and reconstructors (unet, dncnn, reconstructor, unrolled)
from selfinv.models.dncnn import DnCNN
from selfinv.models.reconstructor import BackProjection, back_project
from selfinv.models.unet import UNet
from selfinv.models.unrolled import UnrolledProximalGradient

MODELS = {"unet": UNet, "dncnn": DnCNN, "backprojection": BackProjection, "unrolled": UnrolledProximalGradient}
# blind-spot network and bottleneck autoencoder
from selfinv.models.blindspot import BlindSpotNet  # noqa: E402
from selfinv.models.autoencoder import BottleneckAutoencoder  # noqa: E402
MODELS.update({"blindspot": BlindSpotNet, "autoencoder": BottleneckAutoencoder})
