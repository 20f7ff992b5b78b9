"""selfinv.transforms"""

from selfinv.transforms.base import Transform
from selfinv.transforms.compose import Compose
from selfinv.transforms.reflect import Reflect
from selfinv.transforms.rotate import Rotate
from selfinv.transforms.scale import Scale
from selfinv.transforms.shift import Shift

__all__ = ["Transform", "Shift", "Rotate", "Reflect", "Scale", "Compose"]
