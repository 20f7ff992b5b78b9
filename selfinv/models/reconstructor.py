"""Back-projection reconstructor: ``x_hat = backbone(A† y)``.

The usual architecture of the self-supervised imaging literature (e.g. Chen,
Tachella & Davies 2021, "Equivariant imaging"): the measurement is first
mapped back to image space by the pseudo-inverse ``A†`` (or the adjoint
``Aᵀ``) of the batch's own operator, then a backbone (``UNet``, ``DnCNN``...)
removes noise and artefacts. Complex MRI images are real 2-channel tensors,
so an MRI backbone simply has 2 input/output channels.
"""

from __future__ import annotations

from torch import Tensor, nn

from selfinv.physics.base import Physics

_INITS = ("dagger", "adjoint")


def back_project(y: Tensor, physics: Physics, init: str) -> Tensor:
    """``A† y`` (``init='dagger'``) or ``Aᵀ y`` (``init='adjoint'``) with the physics' own maps."""
    if init == "dagger":
        return physics.A_dagger(y)
    if init == "adjoint":
        if not hasattr(physics, "A_adjoint"):
            raise TypeError(f"init='adjoint' needs a physics with A_adjoint; {type(physics).__name__} has none "
                            f"(use init='dagger')")
        return physics.A_adjoint(y)
    raise ValueError(f"init must be one of {_INITS}, got {init!r}")


class BackProjection(nn.Module):
    """Reconstructor ``model(y, physics) = backbone(A† y)`` (or ``backbone(Aᵀ y)``).

    Works with any ``LinearPhysics`` and with non-linear physics that provide
    ``A_dagger``. When the backbone declares ``in_channels``, the channels of
    the back-projected image are checked against it with an error naming both.

    Args:
        backbone: an image-to-image network.
        init: ``"dagger"`` (pseudo-inverse) or ``"adjoint"``.
    """

    def __init__(self, backbone: nn.Module, init: str = "dagger"):
        super().__init__()
        if init not in _INITS:
            raise ValueError(f"init must be one of {_INITS}, got {init!r}")
        self.backbone = backbone
        self.init = init

    def forward(self, y: Tensor, physics: Physics) -> Tensor:
        if not isinstance(y, Tensor):
            raise TypeError(f"BackProjection expects the measurement as a torch.Tensor, got {type(y).__name__} "
                            f"(convert with torch.as_tensor)")
        x0 = back_project(y, physics, self.init)
        expected = getattr(self.backbone, "in_channels", None)
        if expected is not None and x0.ndim == 4 and x0.shape[1] != expected:
            raise ValueError(
                f"the back-projected image has {x0.shape[1]} channel(s) (shape {tuple(x0.shape)}) but the "
                f"backbone {type(self.backbone).__name__} expects in_channels={expected}")
        return physics.restrict_to_field_of_view(self.backbone(x0))

    def extra_repr(self) -> str:
        return f"init={self.init!r}"
