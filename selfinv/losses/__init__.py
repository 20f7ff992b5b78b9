"""Self-supervised losses, one file per family of the tutorial.

Every loss follows ``selfinv.losses.base.Loss``:
``loss(y, physics, model, x=None, generator=None) -> scalar``.
"""

from selfinv.losses.base import Loss, LossConfigError, SharedEvaluation, WeightedSum

__all__ = ["Loss", "LossConfigError", "SharedEvaluation", "WeightedSum"]
# Loss families are added below as they land (one import line each).
# denoising losses (tutorial Part 2)
from selfinv.losses.autoencoder import AutoencoderLoss  # noqa: E402
from selfinv.losses.blindspot import BlindSpotLoss  # noqa: E402
from selfinv.losses.consistency import MeasurementConsistency  # noqa: E402
from selfinv.losses.neighbor2neighbor import Neighbor2Neighbor  # noqa: E402
from selfinv.losses.noise2noise import Noise2Noise  # noqa: E402
from selfinv.losses.noise2score import Noise2Score  # noqa: E402
from selfinv.losses.r2r import R2R  # noqa: E402
from selfinv.losses.splitting import SplittingLoss  # noqa: E402
from selfinv.losses.supervised import SupervisedLoss  # noqa: E402
from selfinv.losses.sure import SURE  # noqa: E402
from selfinv.losses.unsure import UNSURE  # noqa: E402

__all__ += ["SupervisedLoss", "MeasurementConsistency", "Noise2Noise", "R2R", "SURE", "UNSURE", "Noise2Score",
            "SplittingLoss", "Neighbor2Neighbor", "BlindSpotLoss", "AutoencoderLoss"]
# incomplete measurements (tutorial Parts 3-4, SEI)
from selfinv.losses.equivariant import EquivariantImaging  # noqa: E402
from selfinv.losses.moi import MultiOperatorImaging  # noqa: E402
from selfinv.losses.robust_ei import RobustEquivariantImaging  # noqa: E402
from selfinv.losses.scale_equivariant import ScaleEquivariantImaging  # noqa: E402
from selfinv.losses.ssdu import SSDUSplitting  # noqa: E402

__all__ += ["SSDUSplitting", "MultiOperatorImaging", "EquivariantImaging", "RobustEquivariantImaging",
            "ScaleEquivariantImaging"]
