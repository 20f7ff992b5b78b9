"""Self-supervised losses, one file per family of the tutorial.

Every loss follows ``selfinv.losses.base.Loss``:
``loss(y, physics, model, x=None, generator=None) -> scalar``.
"""

from selfinv.losses.base import Loss, LossConfigError, SharedEvaluation, WeightedSum

__all__ = ["Loss", "LossConfigError", "SharedEvaluation", "WeightedSum"]
# Loss families are added below as they land (one import line each).
