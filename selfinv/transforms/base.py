"""The transform contract: random group actions on images.

A ``Transform`` draws per-sample parameters with ``sample(B, generator,
device)`` (a dict of tensors with leading dimension ``B``), applies them with
``transform(x, params)`` and undoes them with ``inverse(x, params)`` when the
action is invertible. A parameter tensor with leading dimension 1 is shared by
the whole batch, which is how the identifiability tools apply one group
element ``T_g`` (from ``elements()``) to a batch of basis images.

Equivariant imaging (Chen, Tachella & Davies 2021) and its relatives use
``x -> T_g x`` with ``g`` drawn per sample; calling ``t(x, generator)`` does
both steps.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Transform(nn.Module):
    """Base class of random image transforms ``x -> T_g x``, ``x`` of shape ``(B, C, H, W)``."""

    #: ``T_g`` is a linear map of the image (all transforms here are).
    is_linear: bool = True
    #: ``inverse`` exists (exactly or approximately, see ``exact_inverse``).
    is_invertible: bool = True
    #: ``inverse(transform(x)) == x`` up to rounding.
    exact_inverse: bool = True

    def sample(self, batch_size: int, generator: torch.Generator | None = None,
               device: torch.device | str | None = None) -> dict[str, Tensor]:
        """Draw the parameters ``g`` of ``batch_size`` independent transforms."""
        raise NotImplementedError

    def transform(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        """``T_g x`` with the given parameters (leading dimension ``B`` or 1)."""
        raise NotImplementedError

    def inverse(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        """``T_g^{-1} x``."""
        raise NotImplementedError(f"{type(self).__name__} is not invertible")

    def elements(self, img_size: tuple[int, int] | None = None) -> list[dict[str, Tensor]]:
        """All group elements (parameters of batch 1) of a finite group acting on ``img_size`` images."""
        raise NotImplementedError(f"{type(self).__name__} is not a finite group; it has no elements()")

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``T_g x`` with ``g`` drawn independently for every sample."""
        _check_image(x, type(self).__name__)
        return self.transform(x, self.sample(x.shape[0], generator=generator, device=x.device))


def _check_image(x: Tensor, who: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{who} expects a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{who} expects a batch of images (B, C, H, W), got shape {tuple(x.shape)}")


def per_sample(param: Tensor, x: Tensor, name: str, who: str) -> Tensor:
    """Check that ``param`` has leading dimension ``B`` or 1 and move it to ``x``'s device."""
    if param.ndim == 0 or param.shape[0] not in (1, x.shape[0]):
        raise ValueError(f"{who}: parameter '{name}' must have leading dimension {x.shape[0]} (batch) or 1, "
                         f"got shape {tuple(param.shape)}")
    return param.to(x.device)


def get_param(params: dict[str, Tensor], name: str, who: str) -> Tensor:
    try:
        return params[name]
    except KeyError:
        raise KeyError(f"{who} needs parameter '{name}', got {sorted(params)}") from None
