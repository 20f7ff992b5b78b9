"""Compressed sensing with a Gaussian matrix: ``y = G vec(x)``, ``G_ij ~ N(0, 1/m)``.

``vec`` flattens ``(C, H, W)`` in C order (``n = C H W``). Measurements are
stored as 4-D tensors ``(B, 1, 1, m)`` — a one-row, one-channel "image" — so
that every tensor of the pipeline (data sets, noise, splitting masks) stays
``(B, C, H, W)``. With entries of variance ``1/m``, ``E[GᵀG] = I_n`` and
``E||G x||² = ||x||²``.

``A_dagger`` is ``G⁺ y`` with ``G⁺`` from ``torch.linalg.pinv`` computed once in
float64 and cached for the current matrix (per-sample matrices ``(B, m, n)``
get a batched ``pinv``). For ``m <= n`` and a full-rank ``G``,
``G⁺ = Gᵀ (G Gᵀ)⁻¹``. Candès & Tao, "Near-optimal signal recovery from random
projections" (IEEE TIT 2006); Tachella et al., "Sensing theorems for
unsupervised learning" (JMLR 2023) use it as a multi-operator example.
"""

from __future__ import annotations

import torch
from torch import Tensor

from selfinv.physics.base import LinearPhysics
from selfinv.physics.noise import NoiseModel
from selfinv.utils import rng


def gaussian_matrix(
    batch_size: int,
    m: int,
    n: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """``(batch_size, m, n)`` i.i.d. ``N(0, 1/m)`` entries."""
    return rng.randn((batch_size, m, n), generator=generator, device=device, dtype=dtype) / m**0.5


class CompressedSensing(LinearPhysics):
    """``A x = G vec(x)`` with a Gaussian ``G`` (``m × n``); measurements ``(B, 1, 1, m)``.

    Args:
        m: number of measurements (``1 <= m``; ``m < n`` for compressed sensing).
        img_size: ``(C, H, W)``.
        noise: the noise model.
        generator: draws the construction-time matrix ``(1, m, n)``.
        per_sample: ``sample_params(B)`` draws ``B`` matrices if True, one shared
            matrix otherwise.

    The matrix is the per-sample parameter ``matrix`` of shape ``(B or 1, m, n)``.
    """

    param_names = ("matrix",)
    matrix: Tensor

    def __init__(
        self,
        m: int,
        img_size: tuple[int, int, int],
        noise: NoiseModel | None = None,
        generator: torch.Generator | None = None,
        per_sample: bool = False,
    ):
        super().__init__(noise)
        if len(img_size) != 3:
            raise ValueError(f"img_size must be (C, H, W), got {tuple(img_size)}")
        C, H, W = (int(s) for s in img_size)
        self.img_size = (C, H, W)
        self.n = C * H * W
        if int(m) != m or m < 1:
            raise ValueError(f"m must be a positive integer, got {m}")
        self.m = int(m)
        self.per_sample = bool(per_sample)
        device = generator.device if generator is not None else None
        self._pinv_cache: tuple[Tensor, Tensor] | None = None
        self._set_param("matrix", gaussian_matrix(1, self.m, self.n, generator, device))

    def _set_param(self, name: str, value: Tensor) -> None:
        if name == "matrix":
            if not isinstance(value, Tensor):
                raise TypeError(f"matrix must be a tensor, got {type(value).__name__}")
            if value.ndim == 2:
                value = value[None]
            if value.ndim != 3 or tuple(value.shape[1:]) != (self.m, self.n):
                raise ValueError(
                    f"matrix must have shape (B or 1, {self.m}, {self.n}), got {tuple(value.shape)}"
                )
            if not value.is_floating_point():
                raise TypeError(f"matrix must be floating point, got dtype {value.dtype}")
            self._pinv_cache = None
        super()._set_param(name, value)

    def sample_params(self, batch_size: int, generator: torch.Generator | None = None,
                      device: torch.device | str | None = None) -> dict[str, Tensor]:
        """Fresh Gaussian matrices ``(B, m, n)`` (``(1, m, n)`` if not per-sample)."""
        device = self.matrix.device if device is None else device
        n_mat = batch_size if self.per_sample else 1
        return {"matrix": gaussian_matrix(n_mat, self.m, self.n, generator, device)}

    def measurement_shape(self, image_shape: tuple[int, ...] | None = None) -> tuple[int, ...]:
        """``(1, 1, m)`` whatever the image (the matrix fixes both sizes)."""
        return 1, 1, self.m

    def for_measurement(self, shape: tuple[int, ...]) -> "CompressedSensing":
        """Itself, for measurements of its own shape ``(1, 1, m)``: the matrix fixes the sizes."""
        if tuple(shape) != self.measurement_shape():
            raise ValueError(f"CompressedSensing with m={self.m} measurements of {self.img_size} images cannot "
                             f"take measurements of shape {tuple(shape)} (expected {self.measurement_shape()})")
        return self

    # -- the maps ------------------------------------------------------------------
    def _matrix_for(self, t: Tensor, who: str) -> Tensor:
        return self._param_for("matrix", t, who)

    def A(self, x: Tensor) -> Tensor:
        self._check_image(x, "CompressedSensing.A", channels=self.img_size[0], size=self.img_size[1:])
        G = self._matrix_for(x, "CompressedSensing.A")
        v = x.reshape(x.shape[0], self.n, 1)
        return (G @ v).reshape(x.shape[0], 1, 1, self.m)

    def _check_measurement(self, y: Tensor, who: str) -> None:
        self._check_image(y, who, channels=1, size=(1, self.m))

    def A_adjoint(self, y: Tensor) -> Tensor:
        self._check_measurement(y, "CompressedSensing.A_adjoint")
        G = self._matrix_for(y, "CompressedSensing.A_adjoint")
        v = y.reshape(y.shape[0], 1, self.m)
        return (v @ G).reshape((y.shape[0],) + self.img_size)

    def pinv(self) -> Tensor:
        """``G⁺`` of shape ``(B or 1, n, m)``, float64, cached until the matrix changes."""
        G = self.matrix
        if self._pinv_cache is None or self._pinv_cache[0] is not G:
            self._pinv_cache = (G, torch.linalg.pinv(G.double()))
        return self._pinv_cache[1]

    def A_dagger(self, y: Tensor) -> Tensor:
        """``G⁺ y`` (minimum-norm least squares)."""
        self._check_measurement(y, "CompressedSensing.A_dagger")
        self._matrix_for(y, "CompressedSensing.A_dagger")
        P = self.pinv().to(device=y.device, dtype=y.dtype)
        v = y.reshape(y.shape[0], self.m, 1)
        return (P @ v).reshape((y.shape[0],) + self.img_size)

    def extra_repr(self) -> str:
        return (f"m={self.m}, img_size={self.img_size}, n={self.n}, matrix={tuple(self.matrix.shape)}, "
                f"per_sample={self.per_sample}")
