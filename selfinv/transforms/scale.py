"""Random (down-)scalings of the SEI loss.

Scanvic, Davies, Abry & Tachella (2024), "Scale-Equivariant Imaging:
self-supervised learning for image super-resolution and deblurring", Fig. 3:
the image is resampled by bicubic interpolation on a coarser grid, drawn at
random for each batch element. With normalised coordinates ``u ∈ [-1, 1]²``
(``grid_sample``, ``align_corners=False``), a factor ``s`` and a centre ``c``,

    (Σ_{s,c} x)(u) = x( c + (u − c) / s ),

so ``s < 1`` shrinks the image by ``s`` about ``c`` (the output keeps the input
size) and the part of the grid outside the image is filled by reflection
padding. ``Σ`` is linear in ``x`` but not invertible (information is lost when
downscaling), so ``inverse`` raises.

Accuracy: PyTorch's bicubic kernel is Keys' cubic convolution with ``a = -0.75``
(as OpenCV), which is only first-order accurate (it does not reproduce linear
functions exactly); on smooth images the resampling error is ``O(h)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from selfinv.transforms.base import Transform, _check_image, get_param, per_sample
from selfinv.utils import rng

_PADDINGS = {"reflect": "reflection", "reflection": "reflection", "zeros": "zeros", "border": "border"}


class Scale(Transform):
    """Random rescalings about a random centre, one per sample.

    Parameters: ``factor`` ``(B,)`` (drawn uniformly among ``factors``) and
    ``center`` ``(B, 2)`` (``(x, y)`` normalised coordinates, uniform in ``[-1, 1]²``).

    Args:
        factors: the possible scale factors ``s`` (> 0; < 1 downscales).
        padding: ``"reflect"`` (default), ``"zeros"`` or ``"border"``.
        interpolation: ``"bicubic"`` (default) or ``"bilinear"``.
    """

    is_invertible = False
    exact_inverse = False

    def __init__(self, factors: tuple[float, ...] = (0.75, 0.5), padding: str = "reflect",
                 interpolation: str = "bicubic"):
        super().__init__()
        factors = tuple(float(f) for f in factors)
        if not factors or any(not f > 0 for f in factors):
            raise ValueError(f"factors must be a non-empty list of positive numbers, got {factors}")
        if padding not in _PADDINGS:
            raise ValueError(f"padding must be one of {sorted(_PADDINGS)}, got {padding!r}")
        if interpolation not in ("bicubic", "bilinear", "nearest"):
            raise ValueError(f"interpolation must be 'bicubic', 'bilinear' or 'nearest', got {interpolation!r}")
        self.factors, self.padding, self.interpolation = factors, padding, interpolation

    def sample(self, batch_size: int, generator: torch.Generator | None = None,
               device: torch.device | str | None = None) -> dict[str, Tensor]:
        choice = rng.randint(0, len(self.factors), (batch_size,), generator=generator, device=device)
        factor = torch.tensor(self.factors, device=choice.device)[choice]
        center = 2 * rng.rand((batch_size, 2), generator=generator, device=device) - 1
        return {"factor": factor, "center": center}

    def transform(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        _check_image(x, "Scale")
        b, _, h, w = x.shape
        s = per_sample(get_param(params, "factor", "Scale"), x, "factor", "Scale").to(x.dtype).reshape(-1, 1, 1, 1)
        c = per_sample(get_param(params, "center", "Scale"), x, "center", "Scale").to(x.dtype).reshape(-1, 1, 1, 2)
        if torch.any(s <= 0):
            raise ValueError(f"Scale: factors must be > 0, got {s.flatten().tolist()}")
        # pixel centres in normalised coordinates (align_corners=False)
        gx = (2 * torch.arange(w, device=x.device, dtype=x.dtype) + 1) / w - 1
        gy = (2 * torch.arange(h, device=x.device, dtype=x.dtype) + 1) / h - 1
        base = torch.stack(torch.broadcast_tensors(gx.view(1, w), gy.view(h, 1)), dim=-1)  # (H, W, 2) as (x, y)
        grid = c + (base - c) / s
        if grid.shape[0] == 1 and b > 1:
            grid = grid.expand(b, h, w, 2)
        return F.grid_sample(x, grid, mode=self.interpolation, padding_mode=_PADDINGS[self.padding],
                             align_corners=False)

    def inverse(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        raise NotImplementedError("Scale is not invertible: downscaling loses the high frequencies and the "
                                  "content moved out of the field of view")

    def extra_repr(self) -> str:
        return f"factors={self.factors}, padding={self.padding!r}, interpolation={self.interpolation!r}"
