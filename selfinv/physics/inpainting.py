"""Inpainting: ``y = m ⊙ x`` with a 0/1 pixel mask ``m``.

The measurement keeps the image shape and is zero where a pixel is not
observed. With ``M = diag(m)`` a 0/1 diagonal matrix, ``Mᵀ = M`` and
``M M M = M``, so ``A_adjoint = A_dagger = A`` exactly (``M⁺ = M``).

Masks are drawn i.i.d. Bernoulli(``keep_ratio``) per pixel and shared by the
channels (shape ``(B, 1, H, W)``); a user mask may have shape
``(B or 1, C or 1, H, W)``. Used for self-supervised inpainting as in
Chen, Tachella & Davies, "Equivariant Imaging" (ICCV 2021) and
Tachella, Chen & Davies, "Sensing theorems for unsupervised learning" (JMLR 2023).
"""

from __future__ import annotations

import torch
from torch import Tensor

from selfinv.physics.base import binary_mask
from selfinv.physics.masked import MaskedPhysics
from selfinv.physics.noise import NoiseModel
from selfinv.utils import rng


def bernoulli_mask(
    batch_size: int,
    size: tuple[int, int],
    keep_ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    channels: int = 1,
) -> Tensor:
    """A 0/1 float mask of shape ``(batch_size, channels, H, W)`` with ``P(m = 1) = keep_ratio``."""
    _check_keep_ratio(keep_ratio)
    u = rng.rand((batch_size, channels) + tuple(size), generator=generator, device=device)
    return (u < keep_ratio).float()


def _check_keep_ratio(keep_ratio: float) -> None:
    if not (0.0 < float(keep_ratio) <= 1.0):
        raise ValueError(f"keep_ratio must be in (0, 1], got {keep_ratio}")


class Inpainting(MaskedPhysics):
    """Pixel-mask operator ``A x = m ⊙ x`` (``Aᵀ = A⁺ = A`` for a 0/1 mask).

    Args:
        img_size: ``(C, H, W)`` of the images.
        keep_ratio: probability that a pixel is observed (in ``(0, 1]``), used to
            draw the mask at construction and by ``sample_params``.
        mask: a fixed user mask of shape ``(B or 1, C or 1, H, W)`` (or ``(H, W)``);
            values must be 0 or 1. The operator is then deterministic
            (``sample_params`` returns ``{}``).
        per_sample: ``sample_params(B)`` draws ``B`` different masks if True, one
            mask shared by the batch (leading dimension 1) otherwise.
        noise: the noise model; ``physics(x)`` returns ``m ⊙ noise(m ⊙ x)`` so
            unobserved pixels stay exactly zero.
        generator: draws the construction-time mask (shape ``(1, 1, H, W)``).

    Example:
        >>> op = Inpainting((1, 8, 8), keep_ratio=0.5, generator=torch.Generator().manual_seed(0))
        >>> op.A(torch.ones(2, 1, 8, 8)).shape
        torch.Size([2, 1, 8, 8])
    """

    param_names = ("mask",)

    def __init__(
        self,
        img_size: tuple[int, int, int],
        keep_ratio: float = 0.5,
        mask: Tensor | None = None,
        per_sample: bool = True,
        noise: NoiseModel | None = None,
        generator: torch.Generator | None = None,
    ):
        super().__init__(noise)
        if len(img_size) != 3:
            raise ValueError(f"img_size must be (C, H, W), got {tuple(img_size)}")
        C, H, W = (int(s) for s in img_size)
        self.img_size = (C, H, W)
        _check_keep_ratio(keep_ratio)
        self.keep_ratio = float(keep_ratio)
        self.per_sample = bool(per_sample)
        self._fixed_user_mask = mask is not None
        if mask is None:
            device = generator.device if generator is not None else None
            mask = bernoulli_mask(1, self.img_size[1:], self.keep_ratio, generator, device)
        self._set_param("mask", mask)

    # -- parameters ----------------------------------------------------------------
    def _set_param(self, name: str, value: Tensor) -> None:
        if name == "mask":
            value = self._validate_mask(value)
        super()._set_param(name, value)

    def _validate_mask(self, mask: Tensor) -> Tensor:
        if not isinstance(mask, Tensor):
            raise TypeError(f"mask must be a tensor, got {type(mask).__name__}")
        C, H, W = self.img_size
        if mask.ndim == 2:
            mask = mask[None, None]
        if mask.ndim != 4 or mask.shape[1] not in (1, C) or tuple(mask.shape[-2:]) != (H, W):
            raise ValueError(
                f"Inpainting mask must have shape (B or 1, {C} or 1, {H}, {W}), got {tuple(mask.shape)}"
            )
        return binary_mask(mask, "Inpainting")

    def sample_params(self, batch_size: int, generator: torch.Generator | None = None,
                      device: torch.device | str | None = None) -> dict[str, Tensor]:
        """Fresh Bernoulli(keep_ratio) masks, ``(B, 1, H, W)`` (or ``(1, 1, H, W)`` if not per-sample)."""
        if self._fixed_user_mask:
            return {}
        device = self.mask.device if device is None else device
        n = batch_size if self.per_sample else 1
        return {"mask": bernoulli_mask(n, self.img_size[1:], self.keep_ratio, generator, device)}

    @property
    def is_random(self) -> bool:
        return not self._fixed_user_mask

    def for_measurement(self, shape: tuple[int, ...]) -> "Inpainting":
        """The same masking (keep ratio, per-sample draws, noise) for images of ``shape``; a fixed user
        mask only fits its own size."""
        if tuple(shape) == self.img_size:
            return self
        if len(shape) != 3:
            raise ValueError(f"Inpainting expects (C, H, W) measurements, got shape {tuple(shape)}")
        if self._fixed_user_mask:
            raise ValueError(f"this Inpainting operator has a fixed mask of size {self.img_size[1:]}; it cannot "
                             f"take measurements of size {tuple(shape[1:])}")
        C, H, W = shape
        return Inpainting((C, H, W), self.keep_ratio, per_sample=self.per_sample, noise=self.noise,
                          generator=torch.Generator(device=self.mask.device).manual_seed(0))

    # -- the maps ------------------------------------------------------------------
    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Simulate ``y = m ⊙ noise(m ⊙ x)``: unobserved pixels stay exactly zero."""
        y = self.noise(self.A(x), generator=generator)
        return y * self.mask.to(device=y.device, dtype=y.dtype)

    def mask_from_measurement(self, y: Tensor) -> Tensor:
        """``(B, 1, H, W)``: the pixels where any channel of ``y`` is non-zero."""
        return (y != 0).any(dim=1, keepdim=True).to(y.dtype)

    def measurement_mask(self, y: Tensor) -> Tensor:
        """The pixel mask ``m`` (``(B or 1, C or 1, H, W)``, on ``y``'s device and dtype):
        unobserved pixels of ``y`` are exactly 0 and noiseless."""
        return self._mask_for(y, "Inpainting.measurement_mask")

    def _mask_for(self, x: Tensor, who: str) -> Tensor:
        self._check_image(x, who, channels=self.img_size[0], size=self.img_size[1:])
        return self._param_for("mask", x, who)

    def A(self, x: Tensor) -> Tensor:
        return x * self._mask_for(x, "Inpainting.A")

    def A_adjoint(self, y: Tensor) -> Tensor:
        return y * self._mask_for(y, "Inpainting.A_adjoint")

    def A_dagger(self, y: Tensor) -> Tensor:
        return y * self._mask_for(y, "Inpainting.A_dagger")

    def A_adjoint_A(self, x: Tensor) -> Tensor:
        return x * self._mask_for(x, "Inpainting.A_adjoint_A")

    def extra_repr(self) -> str:
        kind = "user mask" if self._fixed_user_mask else f"keep_ratio={self.keep_ratio}"
        return f"img_size={self.img_size}, {kind}, mask={tuple(self.mask.shape)}, per_sample={self.per_sample}"
